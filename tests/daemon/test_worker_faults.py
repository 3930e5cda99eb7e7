"""A worker killed -9, one that segfaults, one over its memory limit: retried, then failed with
the reason in ``error.json``; the other jobs and the daemon carry on."""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

from tests.daemon.conftest import base_config, coco_bytes, files
from tests.daemon.test_crash import assert_settled, drop


def test_killed_segfaulting_and_memory_hogging_workers(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    for name in ("killme", "segv", "hog", "ok1", "ok2"):
        drop(inbox, f"{name}.json", coco_bytes(name))
    config = base_config(tmp_path, workers=2, worker_memory="1GiB")
    faults = "worker_sleep:killme:120,worker_segv:segv,worker_hog:hog"
    d = daemon_factory(config, env={"SMASKD_FAULT": faults}).start()
    d.wait_ready()
    daemon_pid = d.proc.pid

    for attempt in (1, 2, 3):  # kill -9 every attempt of killme's worker from outside
        started = d.wait_for(
            lambda: [e for e in d.events("job.started")
                     if e["input"] == "killme.json" and e["attempt"] == attempt], 90,
            f"killme attempt {attempt}")
        os.kill(started[0]["pid"], signal.SIGKILL)

    d.wait_for(lambda: len(d.events("job.failed")) == 3 and len(d.events("job.done")) == 2, 120,
               "3 failed + 2 done")
    drop(inbox, "late.json", coco_bytes("late"), old=False)  # the daemon still takes new work
    d.wait_for(lambda: len(d.events("job.done")) == 3, 60, "late.json done")
    assert d.proc.poll() is None and d.proc.pid == daemon_pid
    assert d.stop() == 0

    assert_settled(tmp_path, {"ok1.json", "ok2.json", "late.json"},
                   {"killme.json", "segv.json", "hog.json"})
    report = {n: json.loads((inbox / "failed" / f"{n}.json.error.json").read_text())
              for n in ("killme", "segv", "hog")}
    assert report["killme"]["error"]["message"] == "worker crashed (signal 9)"
    assert report["killme"]["error"]["signal"] == "SIGKILL"
    assert report["segv"]["error"]["message"] == "worker crashed (signal 11)"
    assert report["segv"]["error"]["signal"] == "SIGSEGV"
    assert report["hog"]["error"]["type"] == "MemoryLimitExceeded"
    assert report["hog"]["error"]["message"] == "memory limit exceeded (worker_memory=1GiB)"
    assert "traceback" not in report["hog"]["error"]
    for name, rep in report.items():
        assert rep["attempts"] == 3, name
        assert len([e for e in d.events("job.retry") if e["input"] == f"{name}.json"]) == 2, name
    # RLIMIT_AS really is in force in every worker (the job log carries the worker's events)
    ok_log = [json.loads(x)
              for x in (tmp_path / "outbox" / "ok1.log.jsonl").read_text().splitlines()]
    start = next(e for e in ok_log if e["event"] == "worker.start")
    assert start["rlimit_as"] == 1024**3
    assert not [f for f in files(tmp_path) if f.startswith("core")]  # no core dump left behind


def test_worker_memory_zero_means_unlimited(tmp_path: Path, daemon_factory) -> None:
    drop(tmp_path / "inbox", "a.json", coco_bytes("a"))
    d = daemon_factory(base_config(tmp_path, worker_memory=0), "--once").start()
    assert d.wait(60) == 0
    log = [json.loads(x) for x in (tmp_path / "outbox" / "a.log.jsonl").read_text().splitlines()]
    limit = next(e for e in log if e["event"] == "worker.start")["rlimit_as"]
    inherited = resource.getrlimit(resource.RLIMIT_AS)[0]
    assert limit == (None if inherited == resource.RLIM_INFINITY else inherited)


def test_a_worker_killed_mid_write_leaves_no_temp_file(tmp_path: Path, daemon_factory) -> None:
    """Its temp output has a random name: the daemon lists the outbox for it, and only then."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    drop(inbox, "slow.json", coco_bytes("slow"))
    d = daemon_factory(base_config(tmp_path, workers=1),
                       env={"SMASKD_FAULT": "slow_write:slow:60"}).start()
    for attempt in (1, 2, 3):
        started = d.wait_for(
            lambda: [e for e in d.events("job.started") if e["attempt"] == attempt], 60,
            f"attempt {attempt}")

        def partial() -> list[str]:
            return [n for n in os.listdir(outbox) if n.startswith("..smaskd-")
                    and n.endswith(".tmp") and (outbox / n).stat().st_size > 0]

        temps = d.wait_for(partial, 60, f"attempt {attempt} writing its output")
        os.kill(started[0]["pid"], signal.SIGKILL)
        d.wait_for(lambda: not any((outbox / n).exists() for n in temps), 60,
                   f"attempt {attempt}'s temp file removed")
    d.wait_for(lambda: d.events("job.failed"), 60, "slow.json failed")
    assert d.stop() == 0
    assert_settled(tmp_path, set(), {"slow.json"})
    assert sorted(os.listdir(outbox)) == ["slow.log.jsonl"]
