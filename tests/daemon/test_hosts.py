"""Several daemons on one inbox: each file exactly once; a dead host's claims are taken over
after its lease, never while it is alive (its heartbeat fresh, or its lock held)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from smaskd.config import parse_config
from smaskd.daemon.claims import new_job_id, split_claim_name
from smaskd.errors import ConfigError
from tests.daemon.conftest import Daemon, base_config, coco_bytes, journal_rows
from tests.daemon.test_crash import assert_settled, drop, names, wait_gone

LEASE = 1.5


def host_config(tmp: Path, host: str, **overrides: Any) -> dict[str, Any]:
    config = base_config(tmp, state_dir=str(tmp / f"state_{host}"), host_id=host,
                         heartbeat_interval="0.2s", lease=f"{LEASE}s", **overrides)
    config["inboxes"][0]["settle"] = "0.1s"
    return config


def start_host(tmp: Path, daemon_factory, host: str, env: dict[str, str] | None = None,
               *args: str, **overrides: Any) -> Daemon:
    """A daemon with its own config file, state dir and host id on the shared inbox."""
    folder = tmp / f"host_{host}"
    folder.mkdir(exist_ok=True)
    (folder / "smaskd.yaml").write_text(yaml.safe_dump(host_config(tmp, host, **overrides)))
    return daemon_factory(None, "-c", str(folder / "smaskd.yaml"), *args, env=env).start()


def claims_of(tmp: Path, host: str) -> list[str]:
    folder = tmp / "inbox" / ".smaskd" / "processing" / host
    return [n for n in names(folder) if split_claim_name(n)]


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_lease_must_cover_several_heartbeats() -> None:
    base = {"inboxes": [{"name": "in", "path": "/srv/in"}], "state_dir": "/var/lib/x"}
    config = parse_config({**base, "heartbeat_interval": "5s", "lease": "2m"})
    assert (config.heartbeat_interval, config.lease) == (5.0, 120.0)
    assert (parse_config(base).heartbeat_interval, parse_config(base).lease) == (10.0, 60.0)
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "heartbeat_interval": "10s", "lease": "20s"})
    assert e.value.where == "lease" and "3 x heartbeat_interval" in e.value.message
    with pytest.raises(ConfigError) as e:
        parse_config({**base, "heartbeat_interval": "0s"})
    assert e.value.where == "heartbeat_interval"


@pytest.mark.slow
def test_two_daemons_200_files_each_exactly_once(tmp_path: Path, daemon_factory) -> None:
    env = {"SMASKD_FAULT": "fake_convert"}  # 200 real conversions would only measure numpy
    a = start_host(tmp_path, daemon_factory, "hosta", env)
    b = start_host(tmp_path, daemon_factory, "hostb", env)
    a.wait_ready()
    b.wait_ready()
    inbox = tmp_path / "inbox"
    wanted = {f"f{i:03d}.json" for i in range(200)}
    for name in sorted(wanted):
        drop(inbox, name, coco_bytes(name), old=False)
    a.wait_for(lambda: len(a.events("job.done")) + len(b.events("job.done")) >= 200, 180,
               "200 jobs")
    assert a.stop() == 0 and b.stop() == 0
    by_a = {e["input"] for e in a.events("job.done")}
    by_b = {e["input"] for e in b.events("job.done")}
    assert len(a.events("job.done")) + len(b.events("job.done")) == 200
    assert by_a | by_b == wanted and not by_a & by_b
    assert not a.events("host.taken_over") and not b.events("host.taken_over")
    assert_settled(tmp_path, wanted, set(), [tmp_path / "state_hosta", tmp_path / "state_hostb"])


def test_dead_host_claims_taken_over_after_lease_never_while_alive(tmp_path, daemon_factory):
    """A holds 3 claims. Stopped (SIGSTOP: heartbeat stale, lock held) B keeps its hands off;
    killed -9, B takes them over and converts each once; A's restart knows they are gone."""
    a = start_host(tmp_path, daemon_factory, "hosta", {"SMASKD_FAULT": "worker_sleep:slow:120"},
                   workers=2)
    a.wait_ready()
    inbox = tmp_path / "inbox"
    wanted = {"slow1.json", "slow2.json", "slow3.json"}
    for name in sorted(wanted):
        drop(inbox, name, coco_bytes(name), old=False)
    a.wait_for(lambda: len(a.events("job.started")) == 2 and len(claims_of(tmp_path, "hosta")) == 3,
               60, "A holding 3 claims, 2 running")
    workers = [e["pid"] for e in a.events("job.started")]
    b = start_host(tmp_path, daemon_factory, "hostb")
    b.wait_ready()

    a.signal(signal.SIGSTOP)  # alive but silent: on one machine its flock still says "alive"
    try:
        b.wait_for(lambda: b.events("host.stalled"), 30, "B noticing A's stale heartbeat")
        assert not b.events("host.taken_over")
        assert len(claims_of(tmp_path, "hosta")) == 3 and claims_of(tmp_path, "hostb") == []
    finally:
        a.signal(signal.SIGKILL)
    a.proc.wait(10)
    killed = time.time()
    wait_gone(workers)

    taken = b.wait_for(lambda: b.events("host.taken_over"), 60, "B taking over A's claims")
    assert taken[0]["host"] == "hosta" and taken[0]["claims"] == 3
    assert taken[0]["heartbeat_age_s"] >= LEASE
    b.wait_for(lambda: len(b.events("job.done")) == 3, 60, "B converting the 3 files")
    assert b.stop() == 0
    assert claims_of(tmp_path, "hosta") == [] and len(b.events("job.recovered")) == 3
    assert min(stamp(e) for e in b.events("job.recovered")) >= killed - 0.5

    again = start_host(tmp_path, daemon_factory, "hosta", None, "--once")  # A comes back
    assert again.wait(60) == 0
    assert not again.events("job.done")
    assert {r["state"] for r in journal_rows(tmp_path / "state_hosta")} == {"lost"}
    assert_settled(tmp_path, wanted, set(), [tmp_path / "state_hosta", tmp_path / "state_hostb"],
                   lost_allowed=True)


def test_host_that_died_while_publishing_is_finished_not_redone(tmp_path, daemon_factory) -> None:
    """A dies with its result staged and its plan marked: B publishes A's result as planned
    (no second conversion, no second result) and moves the input to done/."""
    inbox = tmp_path / "inbox"
    drop(inbox, "victim.json", coco_bytes("victim"))
    a = start_host(tmp_path, daemon_factory, "hosta", {"SMASKD_FAULT": "before_publish:victim"},
                   "--once")
    assert a.wait(60) == 137
    staged = [n for n in names(tmp_path / "outbox") if n.startswith(".smaskd-")]
    assert len(staged) == 2  # the result and its log, under their staging names
    zip_bytes = (tmp_path / "outbox" / next(n for n in staged if n.endswith(".zip"))).read_bytes()

    b = start_host(tmp_path, daemon_factory, "hostb")
    taken = b.wait_for(lambda: b.events("host.taken_over"), 60, "B taking over")
    assert taken[0]["claims"] == 1
    b.wait_for(lambda: b.events("job.done"), 60, "B finishing A's plan")
    assert b.stop() == 0
    assert not b.events("job.started"), "B converted the file again"
    assert (tmp_path / "outbox" / "victim.zip").read_bytes() == zip_bytes
    again = start_host(tmp_path, daemon_factory, "hosta", None, "--once")  # A comes back
    assert again.wait(60) == 0 and not again.events("job.done")
    assert [r["state"] for r in journal_rows(tmp_path / "state_hosta")] == ["lost"]
    assert_settled(tmp_path, {"victim.json"}, set(),
                   [tmp_path / "state_hosta", tmp_path / "state_hostb"], lost_allowed=True)


def test_remote_host_keeps_claims_while_its_heartbeat_changes(tmp_path, daemon_factory) -> None:
    """A host on another machine (no shared lock, as over NFS): only its heartbeat speaks for
    it. While it beats, its claim stays put; a lease after its last beat, B takes it."""
    inbox = tmp_path / "inbox"
    processing = inbox / ".smaskd" / "processing" / "remote"
    processing.mkdir(parents=True)
    (processing / f"{new_job_id()}__r1.json").write_bytes(coco_bytes("r1"))
    beat_file = inbox / ".smaskd" / "hosts" / "remote.heartbeat"
    beat_file.parent.mkdir(parents=True)
    stop = threading.Event()
    last_beat = [0.0]

    def beat() -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            tmp = beat_file.with_name(".remote.tmp")
            tmp.write_text(json.dumps({"host_id": "remote", "seq": seq}))
            os.replace(tmp, beat_file)
            last_beat[0] = time.time()
            stop.wait(0.2)

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    b = start_host(tmp_path, daemon_factory, "hostb")
    try:
        b.wait_ready()
        deadline = time.monotonic() + 2.5 * LEASE  # a fresh heartbeat must hold for any length
        while time.monotonic() < deadline:
            assert not b.events("host.taken_over"), "took a live host's claim"
            time.sleep(0.1)
        assert len(claims_of(tmp_path, "remote")) == 1
    finally:
        stop.set()
        beating.join(5)
    silent_since = last_beat[0]
    taken = b.wait_for(lambda: b.events("host.taken_over"), 60, "B taking over the silent host")
    assert stamp(taken[0]) - silent_since >= LEASE - 0.05
    b.wait_for(lambda: b.events("job.done"), 60, "r1 converted")
    assert b.stop() == 0
    assert (tmp_path / "outbox" / "r1.zip").exists()
    assert_settled(tmp_path, {"r1.json"}, set(), [tmp_path / "state_hostb"])


def _routed_config(tmp: Path, host: str) -> dict[str, Any]:
    """A recursive inbox whose ``urgent/**`` files go to their own outbox."""
    config = host_config(tmp, host, rules=[
        {"name": "urgent", "match": {"glob": "urgent/**"}, "action": "export",
         "outbox": str(tmp / "out_urgent")},
        {"name": "rest", "action": "export", "outbox": str(tmp / "out_rest")}])
    config["inboxes"][0]["recursive"] = True
    return config


def _start_routed(tmp: Path, daemon_factory, host: str, env: dict[str, str] | None,
                  *args: str) -> Daemon:
    folder = tmp / f"host_{host}"
    folder.mkdir(exist_ok=True)
    (folder / "smaskd.yaml").write_text(yaml.safe_dump(_routed_config(tmp, host)))
    return daemon_factory(None, "-c", str(folder / "smaskd.yaml"), *args, env=env).start()


def test_routing_by_path_survives_a_restart_and_a_takeover(tmp_path: Path, daemon_factory):
    """``urgent/x.json`` of a recursive inbox keeps the ``urgent/**`` rule when its claim is
    recovered after a crash (its own host) or taken over (another host, which cannot read
    the dead host's journal): the claim itself carries the path."""
    inbox = tmp_path / "inbox"
    (inbox / "urgent").mkdir(parents=True)
    drop(inbox / "urgent", "x.json", coco_bytes("x"))
    drop(inbox / "urgent", "y.json", coco_bytes("y"))
    a = _start_routed(tmp_path, daemon_factory, "hosta", {"SMASKD_FAULT": "after_claim:x.json"},
                      "--once")
    assert a.wait(60) == 137  # died with x claimed, no journal row
    [claimed] = claims_of(tmp_path, "hosta")
    again = _start_routed(tmp_path, daemon_factory, "hosta", None, "--once")
    assert again.wait(60) == 0
    assert [e["rule"] for e in again.events("job.done")] == ["urgent", "urgent"]
    assert "urgent%2Fx.json" in claimed  # the claim's name carries the path

    drop(inbox / "urgent", "z.json", coco_bytes("z"))
    c = _start_routed(tmp_path, daemon_factory, "hostc", {"SMASKD_FAULT": "after_claim:z.json"},
                      "--once")
    assert c.wait(60) == 137
    assert len(claims_of(tmp_path, "hostc")) == 1
    b = _start_routed(tmp_path, daemon_factory, "hostb", None)
    b.wait_for(lambda: b.events("job.done"), 60, "B taking z.json over and converting it")
    assert b.stop() == 0
    assert b.events("host.taken_over")[0]["host"] == "hostc"
    assert [e["rule"] for e in b.events("job.done")] == ["urgent"]
    assert names(tmp_path / "out_urgent") == ["x.log.jsonl", "x.zip", "y.log.jsonl", "y.zip",
                                              "z.log.jsonl", "z.zip"]
    assert names(tmp_path / "out_rest") == []


@pytest.mark.parametrize("point", ["stall_publish", "stall_decided"])
def test_stalled_host_never_publishes_twice_when_locks_are_blind(tmp_path, daemon_factory,
                                                                 point: str):
    """On a share whose locks other hosts cannot see, host A stops inside publish for longer
    than the lease; B takes the claim over; A resumes. Exactly one result either way:
    stopped before deciding (``stall_publish``), A finds B's decision marker (or its claim
    gone) and drops its work; stopped after deciding (``stall_decided``), B finds A's plan
    and finishes that plan (no second conversion), and A's resumed publish adds nothing."""
    env_a = {"SMASKD_FAULT": f"blind_locks,{point}:victim:12,fake_convert"}
    env_b = {"SMASKD_FAULT": "blind_locks,fake_convert"}
    a = start_host(tmp_path, daemon_factory, "hosta", env_a)
    a.wait_ready()
    drop(tmp_path / "inbox", "victim.json", coco_bytes("victim"), old=False)
    a.wait_for(lambda: a.events("job.started"), 30, "A converting victim.json")
    b = start_host(tmp_path, daemon_factory, "hostb", env_b)
    b.wait_ready()
    taken = b.wait_for(lambda: b.events("host.taken_over"), 60, "B taking over from stalled A")
    assert taken[0]["host"] == "hosta" and taken[0]["claims"] == 1
    b.wait_for(lambda: b.events("job.done"), 60, "B publishing victim")
    a.wait_for(lambda: a.events("claim.lost") or a.events("job.done") or a.events("job.failed"),
               60, "A resuming")
    time.sleep(1)
    assert a.stop() == 0 and b.stop() == 0
    assert names(tmp_path / "outbox") == ["victim.log.jsonl", "victim.zip"]
    assert not a.events("job.done")
    lost = a.events("claim.lost")
    assert "taken over" in lost[0]["reason"], lost
    assert bool(b.events("job.started")) == (point == "stall_publish")  # a plan is finished
    assert [r["state"] for r in journal_rows(tmp_path / "state_hosta")] == ["lost"]
    assert_settled(tmp_path, {"victim.json"}, set(),
                   [tmp_path / "state_hosta", tmp_path / "state_hostb"], lost_allowed=True)


def test_a_taken_over_failure_plan_keeps_its_error(tmp_path, daemon_factory) -> None:
    """A dies having decided to fail a file (its plan holds the error); B adopts the plan and
    dies after publishing the log. B's journal must say why the job is failing (c6bd48d: an
    adopted failure plan lost its error text there), and B's restart finishes the plan with
    A's error in the report, never converting the file again."""
    inbox = tmp_path / "inbox"
    drop(inbox, "victim.json", b'{"not": "annotations"}')  # complete JSON of no format
    a = start_host(tmp_path, daemon_factory, "hosta", {"SMASKD_FAULT": "failing:victim"},
                   "--once")
    assert a.wait(60) == 137
    [planned] = journal_rows(tmp_path / "state_hosta")
    assert planned["state"] == "failing" and planned["error"], planned
    b = start_host(tmp_path, daemon_factory, "hostb", {"SMASKD_FAULT": "after_fail_log:victim"})
    assert b.wait(60) == 137, "B did not adopt A's failure plan"
    [adopted] = journal_rows(tmp_path / "state_hostb")
    assert adopted["state"] == "failing" and adopted["error"] == planned["error"], adopted
    again = start_host(tmp_path, daemon_factory, "hostb", None, "--once")
    assert again.wait(60) == 65  # --once: a job failed
    assert not again.events("job.started") and not b.events("job.started")
    report = json.loads((inbox / "failed" / "victim.json.error.json").read_text())
    assert f"{report['error']['type']}: {report['error']['message']}" == planned["error"]
    assert_settled(tmp_path, set(), {"victim.json"}, [tmp_path / "state_hostb"])


def test_a_taken_over_skip_plan_keeps_the_input(tmp_path, daemon_factory) -> None:
    """on_conflict: skip + on_success: delete, with an unrelated victim.zip in the outbox: A
    decides to skip and to keep the input (the zip did not come from it), then dies. B adopts
    that plan (before c6bd48d it read the plan's missing error and raised): the old zip stays,
    the log is published and the input goes to done/, not deleted."""
    inbox, out = tmp_path / "inbox", tmp_path / "outbox"
    out.mkdir()
    (out / "victim.zip").write_bytes(b"somebody else's result")
    drop(inbox, "victim.json", coco_bytes("victim"))
    rules = [{"name": "auto", "action": "auto", "outbox": str(out), "on_conflict": "skip",
              "on_success": "delete"}]
    a = start_host(tmp_path, daemon_factory, "hosta", {"SMASKD_FAULT": "before_publish:victim"},
                   "--once", rules=rules)
    assert a.wait(60) == 137
    b = start_host(tmp_path, daemon_factory, "hostb", None, rules=rules)
    b.wait_for(lambda: b.events("job.done"), 60, "B finishing A's skip plan")
    assert b.stop() == 0
    assert not b.events("job.started"), "B converted the file again"
    assert (out / "victim.zip").read_bytes() == b"somebody else's result"
    assert names(out) == ["victim.log.jsonl", "victim.zip"]
    assert names(inbox / "done") == ["victim.json"]
    assert [r["state"] for r in journal_rows(tmp_path / "state_hostb")] == ["done"]
