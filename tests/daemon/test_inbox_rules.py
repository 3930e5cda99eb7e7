"""Issue 17: ready markers (per inbox), tree-preserving outboxes, per-rule ``max_jobs`` and
``priority``; each against the real daemon, and each key refused by ``check-config`` when bad."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows


def _rule(tmp_path: Path, name: str, glob: str, **extra) -> dict:
    return {"name": name, "match": {"glob": glob}, "action": "export",
            "outbox": str(tmp_path / "outbox"), **extra}


def test_ready_marker_gates_the_data_file_and_is_never_a_job(tmp_path: Path,
                                                             daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    config = base_config(tmp_path)
    config["inboxes"][0].update(ready_marker=".done", recursive=True)
    (inbox / "early.json").write_bytes(coco_bytes())  # marked before start: start-up scan
    (inbox / "early.json.done").write_bytes(b"")
    (inbox / "lonely.json.done").write_bytes(b"")  # a marker without data: left alone
    d = daemon_factory(config).start()
    d.wait_ready()
    d.wait_for(lambda: "early.zip" in files(tmp_path / "outbox"), what="early.zip")
    (inbox / "sub" / "data.json").write_bytes(coco_bytes())
    time.sleep(1.5)  # well past settle (0.3 s): still not taken without its marker
    assert (inbox / "sub" / "data.json").exists()
    assert "data.zip" not in files(tmp_path / "outbox")
    (inbox / "sub" / "data.json.done").write_bytes(b"")
    d.wait_for(lambda: "data.zip" in files(tmp_path / "outbox"), what="data.zip")
    d.wait_for(lambda: not (inbox / "sub" / "data.json").exists(), what="data.json moved")
    assert not (inbox / "sub" / "data.json.done").exists()
    assert not (inbox / "early.json.done").exists()
    assert (inbox / "lonely.json.done").exists()
    assert d.stop() == 0
    assert files(inbox / "failed") == []
    assert sorted(r["name"] for r in journal_rows(tmp_path / "state")) == ["data.json",
                                                                           "early.json"]


def test_a_marker_left_by_a_crash_releases_no_later_drop(tmp_path: Path,
                                                         daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = base_config(tmp_path)
    config["inboxes"][0]["ready_marker"] = ".done"
    (inbox / "data.json").write_bytes(coco_bytes())
    (inbox / "data.json.done").write_bytes(b"")
    first = daemon_factory(config, "--once", env={"SMASKD_FAULT": "after_claim:data"}).start()
    assert first.wait(90) == 137  # killed between the claim and the marker's removal
    assert (inbox / "data.json.done").exists()
    d = daemon_factory(config).start()
    d.wait_ready()
    d.wait_for(lambda: "data.zip" in files(tmp_path / "outbox"), what="recovered data.zip")
    (inbox / "data.json").write_bytes(coco_bytes("second"))  # a new drop of the same name
    time.sleep(1.5)  # past settle: the old marker does not vouch for it
    assert (inbox / "data.json").exists() and "data-1.zip" not in files(tmp_path / "outbox")
    (inbox / "data.json.done").write_bytes(b"")  # its writer marks it done
    d.wait_for(lambda: "data-1.zip" in files(tmp_path / "outbox"), what="data-1.zip")
    assert d.stop() == 0


def test_status_counts_files_waiting_for_their_ready_marker(tmp_path: Path,
                                                            daemon_factory) -> None:
    """"Why is my file still there?": STATUS=, status.json and ``smaskd status`` (text and
    ``--json``) say how many files of each inbox wait for their marker; not a problem."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = base_config(tmp_path)
    config["inboxes"][0]["ready_marker"] = ".done"
    d = daemon_factory(config).start()
    d.wait_ready()
    for name in ("a.json", "b.json"):
        (inbox / name).write_bytes(coco_bytes())
    d.wait_for(lambda: any("in: 2 waiting for a ready marker" in line
                           for line in d.notify.lines()), what="STATUS= with 2 waiting")
    report = json.loads(run_cli("status", "-c", d.config_path, "--json").stdout)
    assert report["waiting_for_marker"] == {"in": 2}
    assert report["problems"] == [] and report["exit_code"] == 0
    (inbox / "a.json.done").write_bytes(b"")
    d.wait_for(lambda: "a.zip" in files(tmp_path / "outbox"), what="a.zip")

    def one_left() -> bool:
        text = run_cli("status", "-c", d.config_path).stdout
        return "inbox in: 1 waiting for a ready marker" in text
    d.wait_for(one_left, what="smaskd status with 1 waiting")
    assert d.stop() == 0


def test_keep_tree_publishes_into_the_inputs_sub_folders(tmp_path: Path,
                                                         daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    for folder in ("projA", "projB", "con"):
        (inbox / folder).mkdir(parents=True)
        (inbox / folder / "x.json").write_bytes(coco_bytes())
    (inbox / "evil").mkdir()
    (inbox / "evil" / "y.json").write_bytes(coco_bytes())
    out, elsewhere = tmp_path / "outbox", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "evil").symlink_to(elsewhere)  # planted where a sub-folder will be
    config = base_config(tmp_path, rules=[_rule(tmp_path, "tree", "*.json", keep_tree=True)])
    config["inboxes"][0]["recursive"] = True
    d = daemon_factory(config, "--once").start()
    assert d.wait(120) == 65, d.lines[-5:]  # the job behind the symlink failed
    for folder in ("projA", "projB", "con_"):  # folder names mapped as result names are
        assert files(out / folder) == ["x.log.jsonl", "x.zip"], folder
    assert files(out) == ["evil"]  # nothing flattened, no staging file left at the top
    assert list(elsewhere.iterdir()) == []  # never written through the symlink
    assert "y.json" in files(inbox / "failed")
    # the job's own error, said plainly: no fault to wait on, no "internal" traceback
    error = json.loads((inbox / "failed" / "y.json.error.json").read_text())["error"]
    assert error["message"].startswith(f"outbox sub-folder {out / 'evil'} is a symlink; "
                                       "refusing to follow it"), error
    assert error["class"] == "unsafe" and "traceback" not in error


def _times(d, event: str) -> dict[str, float]:
    return {e["input"]: datetime.fromisoformat(e["timestamp"]).timestamp()
            for e in d.events(event)}


def test_max_jobs_caps_a_rule_while_other_rules_go_on(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("slow1.json", "slow2.json", "slow3.json", "fast1.json", "fast2.json"):
        (inbox / name).write_bytes(coco_bytes())
    config = base_config(tmp_path, workers=3, rules=[
        _rule(tmp_path, "slow", "slow*", max_jobs=1), _rule(tmp_path, "fast", "fast*")])
    d = daemon_factory(config, "--once", env={"SMASKD_FAULT": "worker_sleep:slow:1"}).start()
    assert d.wait(120) == 0, d.lines[-5:]
    started, done = _times(d, "job.started"), _times(d, "job.done")
    assert len(done) == 5
    slow = sorted((started[n], done[n]) for n in started if n.startswith("slow"))
    for (_, end), (begin, _) in zip(slow, slow[1:]):
        assert begin >= end, slow  # never two of the rule at once
    # the other rule was not held behind the capped one
    assert max(done["fast1.json"], done["fast2.json"]) < slow[-1][0]


def test_priority_orders_a_backlog(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    old = time.time() - 3600
    for i, name in enumerate(("low1.json", "low2.json", "low3.json", "high1.json",
                              "high2.json")):
        (inbox / name).write_bytes(coco_bytes())
        os.utime(inbox / name, (old + i, old + i))  # the low ones were dropped first
    config = base_config(tmp_path, workers=1, rules=[
        _rule(tmp_path, "low", "low*"), _rule(tmp_path, "high", "high*", priority=10)])
    d = daemon_factory(config, "--once").start()
    assert d.wait(120) == 0, d.lines[-5:]
    order = [e["input"] for e in d.events("job.done")]
    assert order == ["high1.json", "high2.json", "low1.json", "low2.json", "low3.json"]


@pytest.mark.parametrize("where,value,key,message", [
    ("inbox", {"ready_marker": ""}, "inboxes[0].ready_marker", "non-empty suffix"),
    ("inbox", {"ready_marker": "a/b"}, "inboxes[0].ready_marker", "file name suffix"),
    ("rule", {"keep_tree": "yes"}, "rules[0].keep_tree", "true or false"),
    ("rule", {"max_jobs": 0}, "rules[0].max_jobs", "integer from 1"),
    ("rule", {"priority": "high"}, "rules[0].priority", "integer from -1000"),
])
def test_check_config_names_the_bad_key(tmp_path: Path, where: str, value: dict, key: str,
                                        message: str) -> None:
    config = base_config(tmp_path)
    (config["inboxes"][0] if where == "inbox" else config["rules"][0]).update(value)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_cli("check-config", path)
    assert out.returncode == 78
    assert key in out.stderr and message in out.stderr, out.stderr


def test_a_decision_markers_names_stay_inside_the_outbox() -> None:
    """Markers live in the inbox's claim area, where inbox writers can write: a result path
    read from one is never allowed out of the outbox (a host taking a claim over uses it)."""
    from smaskd.daemon.trees import plan_pairs, plan_target

    assert plan_pairs([["/o/.smaskd-1.zip", "/o/projA/x.zip"], ["/o/.smaskd-1.log", "/o/x.log"]]) \
        == [[".smaskd-1.zip", "projA/x.zip"], [".smaskd-1.log", "x.log"]]
    assert plan_target(Path("/o"), "projA/x.zip") == Path("/o/projA/x.zip")
    for hostile in ("../../etc/x.zip", "/etc/x.zip", "projA/../../x.zip"):
        assert plan_target(Path("/o"), hostile) == Path("/o/x.zip"), hostile
    assert plan_target(Path("/o"), "..") == Path("/o/_")
