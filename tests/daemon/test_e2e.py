"""End to end: the real daemon on tmp folders, files dropped the ways real writers drop them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows


def test_every_writer_style_is_processed_exactly_once(tmp_path: Path, daemon_factory) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    pre = inbox / "pre.json"
    pre.write_bytes(coco_bytes("pre"))
    old = time.time() - 60
    os.utime(pre, (old, old))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    d = daemon_factory(base_config(tmp_path)).start()
    d.wait_ready()
    # READY=1 comes after the start-up scan: the file present before start is claimed already.
    assert not pre.exists()

    # 1. a slow writer in place, pausing less than `settle` between chunks
    data = coco_bytes("slow")
    with open(inbox / "slow.json", "wb") as fh:
        for i in range(0, len(data), 40):
            fh.write(data[i:i + 40])
            fh.flush()
            time.sleep(0.05)
    # 2. temp name, then rename (rsync / most atomic writers)
    (inbox / ".renamed.json.tmp").write_bytes(coco_bytes("renamed"))
    os.rename(inbox / ".renamed.json.tmp", inbox / "renamed.json")
    # 3. rclone-style partial suffix
    (inbox / "partial.json.AbCd.partial").write_bytes(coco_bytes("partial"))
    os.rename(inbox / "partial.json.AbCd.partial", inbox / "partial.json")
    # 4. cp(1) and 5. mv(1) from elsewhere
    (elsewhere / "copied.json").write_bytes(coco_bytes("copied"))
    subprocess.run(["cp", str(elsewhere / "copied.json"), str(inbox / "copied.json")], check=True)
    (elsewhere / "moved.json").write_bytes(coco_bytes("moved"))
    subprocess.run(["mv", str(elsewhere / "moved.json"), str(inbox / "moved.json")], check=True)

    names = {"pre", "slow", "renamed", "partial", "copied", "moved"}
    d.wait_for(lambda: len(d.events("job.done")) >= len(names), 60, "six job.done")
    time.sleep(1.0)  # anything processed twice would show up now
    assert d.stop() == 0

    assert files(outbox) == sorted([f"{n}.zip" for n in names] + [f"{n}.log.jsonl" for n in names])
    assert files(inbox / "done") == sorted(f"{n}.json" for n in names)
    assert files(inbox) == []
    assert not (inbox / "failed").exists() or files(inbox / "failed") == []
    rows = journal_rows(tmp_path / "state")
    assert sorted(r["name"] for r in rows) == sorted(f"{n}.json" for n in names)
    assert {r["state"] for r in rows} == {"done"}
    assert all(len(r["sha256"]) == 64 for r in rows)
    done = d.events("job.done")
    assert len(done) == len(names)  # one INFO summary per job
    assert all(e["level"] == "info" and e["items"] == 1 and e["instances"] == 1 for e in done)
    # every stdout line is a JSON object with the standard keys
    assert all({"timestamp", "level", "event", "logger"} <= set(e) for e in d.events())
    # the per-job log: every event of the job, the last one job.done
    lines = [json.loads(x) for x in (outbox / "slow.log.jsonl").read_text().splitlines()]
    assert {e["job_id"] for e in lines} == {done[0]["job_id"]} or len({e["job_id"] for e in lines}) == 1
    assert lines[-1]["event"] == "job.done" and lines[-1]["input"] == "slow.json"
    assert any(e["event"] == "worker.start" for e in lines)
    assert (outbox / "slow.zip").stat().st_mode & 0o777 == 0o640
    assert "STOPPING=1" in d.notify.lines()


def test_once_in_an_empty_folder_uses_the_embedded_default(tmp_path: Path, daemon_factory) -> None:
    d = daemon_factory(None, "--once").start()
    assert d.wait(60) == 0
    assert (tmp_path / "inbox").is_dir() and (tmp_path / "outbox").is_dir()

    (tmp_path / "inbox" / "good.json").write_bytes(coco_bytes())
    (tmp_path / "inbox" / "bad.json").write_text('{"images": [}')
    d = daemon_factory(None, "--once").start()
    assert d.wait(60) == 65
    assert files(tmp_path / "outbox") == ["bad.log.jsonl", "good.log.jsonl", "good.zip"]
    assert files(tmp_path / "inbox" / "done") == ["good.json"]
    assert files(tmp_path / "inbox" / "failed") == ["bad.json", "bad.json.error.json"]
    report = json.loads((tmp_path / "inbox" / "failed" / "bad.json.error.json").read_text())
    assert report["rule"] == "auto" and report["attempts"] == 1
    assert report["error"]["type"] == "InputError" and report["error"]["message"]
    assert report["error"]["where"].startswith("bad.json"), report["error"]  # not the claim name
    assert report["smaskd_version"]
    last = json.loads((tmp_path / "outbox" / "bad.log.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "job.failed"


def test_unmatched_symlinks_and_fifos(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = base_config(tmp_path, rules=[{"name": "json", "match": {"glob": "*.json"},
                                           "action": "export", "outbox": str(tmp_path / "outbox")}])
    secret = tmp_path / "secret.json"
    secret.write_bytes(coco_bytes())
    (inbox / "notes.txt").write_text("hello")
    os.symlink(secret, inbox / "link.json")
    os.mkfifo(inbox / "pipe.json")
    d = daemon_factory(config, "--once").start()
    assert d.wait(60) == 65  # two failures: unmatched, symlink
    failed = inbox / "failed"
    # the unmatched file has no rule, so no outbox: its log stays beside its report
    assert files(failed) == ["link.json", "link.json.error.json", "notes.log.jsonl", "notes.txt",
                             "notes.txt.error.json"]
    assert (failed / "link.json").is_symlink()  # moved as a link, never followed
    assert "no rule matched" in json.loads((failed / "notes.txt.error.json").read_text())["error"]["message"]
    assert "symlink" in json.loads((failed / "link.json.error.json").read_text())["error"]["message"]
    assert files(tmp_path / "outbox") == ["link.log.jsonl"]  # the target was never converted
    assert (inbox / "pipe.json").exists()  # a FIFO is skipped, never opened
    assert len(d.events("file.special")) == 1


def test_unmatched_leave_keeps_the_file(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "notes.txt").write_text("hello")
    config = base_config(tmp_path, unmatched="leave", rules=[
        {"name": "json", "match": {"glob": "*.json"}, "outbox": str(tmp_path / "outbox")}])
    d = daemon_factory(config, "--once").start()
    assert d.wait(60) == 0
    assert (inbox / "notes.txt").read_text() == "hello"
    assert len(d.events("file.unmatched")) == 1


def test_a_name_too_long_to_claim_is_reported_once_and_left(tmp_path: Path, daemon_factory) -> None:
    """``<job id>__`` + a 250-byte name is over NAME_MAX: no retry can claim it, so it is
    said once (not at every rescan) and the file stays untouched; others go on."""
    long_name = "n" * 245 + ".json"
    config = base_config(tmp_path)
    config["inboxes"][0]["rescan"] = "0.5s"
    d = daemon_factory(config).start()
    d.wait_ready()
    inbox = tmp_path / "inbox"
    (inbox / long_name).write_bytes(coco_bytes())
    (inbox / "ok.json").write_bytes(coco_bytes())
    d.wait_for(lambda: d.events("job.done"), 30, "ok.json done")
    time.sleep(2.0)  # several rescans
    assert d.stop() == 0
    said = d.events("file.name_too_long")
    assert len(said) == 1 and said[0]["path"] == long_name, said
    assert not d.events("admit.error")
    assert (inbox / long_name).read_bytes() == coco_bytes()


def test_incomplete_file_waits_for_its_grace_period(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "cut.json").write_text('{"images": [1, 2')  # no closing bracket: not ready
    config = base_config(tmp_path)
    config["inboxes"][0]["grace"] = "1.5s"
    d = daemon_factory(config, "--once").start()
    started = time.monotonic()
    assert d.wait(60) == 65
    assert time.monotonic() - started >= 1.5
    assert files(inbox / "failed") == ["cut.json", "cut.json.error.json"]


def test_worker_crash_is_retried_then_failed_and_others_complete(tmp_path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("boom", "ok1", "ok2"):
        (inbox / f"{name}.json").write_bytes(coco_bytes(name))
    d = daemon_factory(base_config(tmp_path), "--once", env={"SMASKD_FAULT": "worker_crash:boom"})
    assert d.start().wait(120) == 65
    assert files(tmp_path / "outbox") == ["boom.log.jsonl", "ok1.log.jsonl", "ok1.zip",
                                          "ok2.log.jsonl", "ok2.zip"]
    report = json.loads((inbox / "failed" / "boom.json.error.json").read_text())
    assert report["error"]["message"] == "worker crashed (signal 9)"
    assert report["attempts"] == 3
    assert len([e for e in d.events("job.retry") if e["input"] == "boom.json"]) == 2
    rows = {r["name"]: r for r in journal_rows(tmp_path / "state")}
    assert rows["boom.json"]["state"] == "failed" and rows["boom.json"]["attempts"] == 3
    assert rows["ok1.json"]["state"] == rows["ok2.json"]["state"] == "done"


def test_timeout_kills_the_worker(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "slow.json").write_bytes(coco_bytes())
    (inbox / "fast.json").write_bytes(coco_bytes())
    # a per-rule timeout; the other rule keeps the default, so a loaded machine cannot time it out
    config = base_config(tmp_path, rules=[
        {"name": "slow", "match": {"glob": "slow*"}, "timeout": "1s", "outbox": str(tmp_path / "outbox")},
        {"name": "auto", "outbox": str(tmp_path / "outbox")}])
    d = daemon_factory(config, "--once", env={"SMASKD_FAULT": "worker_sleep:slow:60"}).start()
    assert d.wait(120) == 65
    report = json.loads((inbox / "failed" / "slow.json.error.json").read_text())
    assert report["error"]["message"] == "timeout" and report["attempts"] == 3
    assert "fast.zip" in files(tmp_path / "outbox")


def test_sigterm_drains_running_jobs(tmp_path: Path, daemon_factory) -> None:
    config = base_config(tmp_path)
    d = daemon_factory(config, env={"SMASKD_FAULT": "worker_sleep:slow:1.5"}).start()
    d.wait_ready()
    (tmp_path / "inbox" / "slow.json").write_bytes(coco_bytes())
    d.wait_for(lambda: d.events("job.started"), 30, "job.started")
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    assert "slow.zip" in files(tmp_path / "outbox")
    assert "STOPPING=1" in d.notify.lines()


def test_drain_timeout_leaves_the_claim_for_the_next_start(tmp_path: Path, daemon_factory) -> None:
    config = base_config(tmp_path, drain_timeout="0.3s")
    d = daemon_factory(config, env={"SMASKD_FAULT": "worker_sleep:slow:30"}).start()
    d.wait_ready()
    (tmp_path / "inbox" / "slow.json").write_bytes(coco_bytes())
    d.wait_for(lambda: d.events("job.started"), 30, "job.started")
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    processing = tmp_path / "inbox" / ".smaskd" / "processing" / "testhost"
    assert len(files(processing)) == 1 and files(tmp_path / "outbox") == []
    d2 = daemon_factory(config, "--once").start()
    assert d2.wait(60) == 0
    assert files(tmp_path / "outbox") == ["slow.log.jsonl", "slow.zip"]
    assert files(processing) == []


@pytest.mark.parametrize("point", ["exit_before_publish", "exit_after_publish"])
def test_kill9_during_publish_never_publishes_twice(tmp_path: Path, daemon_factory, point) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "crash.json").write_bytes(coco_bytes())
    config = base_config(tmp_path)
    d = daemon_factory(config, "--once", env={"SMASKD_FAULT": f"{point}:crash"}).start()
    assert d.wait(60) == 137
    state = {r["name"]: r["state"] for r in journal_rows(tmp_path / "state")}
    assert state["crash.json"] == ("publishing" if point == "exit_before_publish" else "published")
    d2 = daemon_factory(config, "--once").start()
    assert d2.wait(60) == 0
    assert files(tmp_path / "outbox") == ["crash.log.jsonl", "crash.zip"]
    assert not [p for p in (tmp_path / "outbox").iterdir() if p.name.startswith(".")]
    assert files(inbox / "done") == ["crash.json"]
    assert {r["state"] for r in journal_rows(tmp_path / "state")} == {"done"}


def test_sighup_reloads_and_keeps_the_old_config_when_invalid(tmp_path, daemon_factory) -> None:
    config = base_config(tmp_path)
    d = daemon_factory(config).start()
    d.wait_ready()
    import yaml

    config["rules"][0]["outbox"] = str(tmp_path / "outbox2")
    d.config_path.write_text(yaml.safe_dump(config))
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.events("config.reloaded"), 30, "config.reloaded")
    (tmp_path / "inbox" / "a.json").write_bytes(coco_bytes())
    d.wait_for(lambda: "a.zip" in files(tmp_path / "outbox2"), 30, "a.zip in outbox2")

    d.config_path.write_text("rules: [\n")
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.events("config.reload_failed"), 30, "config.reload_failed")
    (tmp_path / "inbox" / "b.json").write_bytes(coco_bytes())
    d.wait_for(lambda: "b.zip" in files(tmp_path / "outbox2"), 30, "b.zip in outbox2")
    assert d.stop() == 0
    lines = d.notify.lines()
    assert lines.count("RELOADING=1") == 2 and lines.count("READY=1") == 3
    assert any(x.startswith("STATUS=reload failed") for x in lines)


def test_notify_ready_status_and_watchdog(tmp_path: Path, daemon_factory) -> None:
    d = daemon_factory(base_config(tmp_path), env={"WATCHDOG_USEC": "200000"}).start()
    d.wait_ready()
    d.wait_for(lambda: d.notify.lines().count("WATCHDOG=1") >= 3, 10, "watchdog pings")
    assert d.stop() == 0
    lines = d.notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert any(x.startswith("STATUS=queued=") for x in lines)


def test_status_command(tmp_path: Path, daemon_factory) -> None:
    from tests.conftest import run_cli

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "ok.json").write_bytes(coco_bytes())
    (inbox / "bad.json").write_text('{"bogus": 1}')
    config = base_config(tmp_path)
    d = daemon_factory(config, "--once").start()
    assert d.wait(60) == 65
    out = run_cli("status", "-c", d.config_path)
    assert out.returncode == 3, out.stderr  # LSB: not running (it stopped after --once)
    assert "daemon: not running: stopped" in out.stdout
    assert "done=1" in out.stdout and "failed=1" in out.stdout and "bad.json" in out.stdout


@pytest.mark.skipif(not (Path(__file__).parents[2] / "smaskd/smask/export.py").exists(),
                    reason="export core not in the tree yet")
def test_corpus_scene_with_labelmap(tmp_path: Path, daemon_factory) -> None:
    from tests.daemon.conftest import CORPUS_INPUT

    if not (CORPUS_INPUT / "annotations.json").exists():
        pytest.skip(f"corpus not found at {CORPUS_INPUT}")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(CORPUS_INPUT / "labelmap.txt", tmp_path / "labelmap.txt")
    shutil.copy(CORPUS_INPUT / "annotations.json", inbox / "scene.json")
    config = base_config(tmp_path, rules=[{"name": "export", "action": "export",
                                           "options": {"labelmap": str(tmp_path / "labelmap.txt")},
                                           "outbox": str(tmp_path / "outbox")}])
    d = daemon_factory(config, "--once").start()
    assert d.wait(120) == 0, d.lines[-5:]
    done = d.events("job.done")[0]
    assert done["items"] > 0 and done["instances"] > 0
    assert files(tmp_path / "outbox") == ["scene.log.jsonl", "scene.zip"]


@pytest.mark.skipif(not (Path(__file__).parents[2] / "smaskd/annotations/writers.py").exists(),
                    reason="import core not in the tree yet")
def test_mask_zip_is_imported_to_json(tmp_path: Path, daemon_factory) -> None:
    from tests.conftest import run_cli

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "a.json").write_bytes(coco_bytes())
    assert run_cli("export", tmp_path / "a.json", "-o", inbox / "masks.zip").returncode == 0
    d = daemon_factory(base_config(tmp_path), "--once").start()
    assert d.wait(120) == 0, d.lines[-5:]
    assert files(tmp_path / "outbox") == ["masks.json", "masks.log.jsonl"]
    assert json.loads((tmp_path / "outbox" / "masks.json").read_text())


def test_workers_die_with_the_daemon(tmp_path: Path, daemon_factory) -> None:
    d = daemon_factory(base_config(tmp_path), env={"SMASKD_FAULT": "worker_sleep:slow:60"}).start()
    d.wait_ready()
    (tmp_path / "inbox" / "slow.json").write_bytes(coco_bytes())
    started = d.wait_for(lambda: d.events("job.started"), 30, "job.started")
    pid = started[0]["pid"]
    d.proc.kill()  # kill -9 the daemon: no chance to clean up
    d.proc.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"worker {pid} outlived its parent")


@pytest.mark.parametrize("on_conflict,expected", [
    ("rename", ["a-1.log.jsonl", "a-1.zip", "a.log.jsonl", "a.zip"]),
    ("replace", ["a.log.jsonl", "a.zip"]),
    ("skip", ["a-1.log.jsonl", "a.log.jsonl", "a.zip"]),
])
def test_on_conflict_and_on_success(tmp_path: Path, daemon_factory, on_conflict, expected) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    (outbox / "a.zip").write_bytes(b"earlier result")
    (outbox / "a.log.jsonl").write_text("{}\n")
    (inbox / "a.json").write_bytes(coco_bytes())
    config = base_config(tmp_path, rules=[{"name": "r", "outbox": str(outbox),
                                           "on_conflict": on_conflict, "on_success": "delete"}])
    assert daemon_factory(config, "--once").start().wait(60) == 0
    assert files(outbox) == expected
    assert ((outbox / "a.zip").read_bytes() == b"earlier result") is (on_conflict != "replace")
    # on_success: delete, except an input skipped for an output of other content (kept)
    assert files(inbox / "done") == (["a.json"] if on_conflict == "skip" else [])
    assert files(inbox) == []
