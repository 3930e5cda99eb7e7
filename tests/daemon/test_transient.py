"""Transient errors are waits (issue 11 case 2): a share that fails a read with EIO, ESTALE,
EBUSY or ETIMEDOUT does not fail the input; a crashed worker is retried after a pause.

The read error is injected at the worker's read point (``SMASKD_FAULT=read_error:...``,
test-only, see ``smaskd/daemon/faults.py``): a real EIO needs FUSE or a failing block device.
It lasts while a flag file exists, so the test decides when the share "comes back".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files


def _drop(inbox: Path, name: str, data: bytes) -> None:
    tmp = inbox.parent / f".{name}"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def _status_with(d, *needles: str) -> str:
    def found() -> str | None:
        return next((x for x in d.notify.lines()
                     if x.startswith("STATUS=") and all(n in x for n in needles)), None)

    return d.wait_for(found, 60, f"a STATUS= line with {needles}")


@pytest.mark.parametrize("code", ["EIO", "ESTALE", "EBUSY", "ETIMEDOUT"])
def test_transient_read_error_waits_with_backoff_then_converts(tmp_path: Path, daemon_factory,
                                                               code: str) -> None:
    flag = tmp_path / "share-is-flaky"
    flag.touch()
    d = daemon_factory(base_config(tmp_path), env={"SMASKD_FAULT": f"read_error:flaky:{code}:{flag}"})
    d.start()
    d.wait_ready()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    _drop(inbox, "flaky.json", coco_bytes())
    _status_with(d, "input flaky.json of inbox in", code, "transient", "1 job(s) waiting")
    if code == "EIO":  # the read is retried, and fails again: the pause grows
        d.wait_for(lambda: [e for e in d.events("fault.blocked") if e.get("retry_in_s", 0) >= 2]
                   or [e for e in d.events("fault.persists") if e.get("retry_in_s", 0) >= 2],
                   60, "a longer pause after the retry failed again")
        status = run_cli("status", "-c", d.config_path)
        assert "flaky.json" in status.stdout and "EIO" in status.stdout, status.stdout
    assert files(inbox / "failed") == []
    flag.unlink()  # the share is back
    d.wait_for(lambda: "flaky.zip" in files(outbox), 60, "the result")
    d.wait_for(lambda: d.events("job.done"), 30, "job.done")
    assert files(inbox / "failed") == []
    [done] = d.events("job.done")
    assert done["attempts"] == 1  # waits for the share are not the input's attempts


def test_crashed_worker_is_retried_after_a_growing_pause(tmp_path: Path, daemon_factory) -> None:
    d = daemon_factory(base_config(tmp_path), env={"SMASKD_FAULT": "worker_crash:crashy"})
    d.start()
    d.wait_ready()
    inbox = tmp_path / "inbox"
    _drop(inbox, "crashy.json", coco_bytes())
    report = inbox / "failed" / "crashy.json.error.json"
    d.wait_for(report.exists, 60, "the failure report")
    assert json.loads(report.read_text())["error"]["type"] == "WorkerCrashed"
    pauses = [e["retry_in_s"] for e in d.events("fault.blocked") if e.get("what") == "worker for"]
    assert pauses == [1.0, 2.0], d.events("fault.blocked")
    starts = [e for e in d.events() if e.get("event") in ("job.retry", "fault.cleared")]
    assert [e["event"] for e in starts] == ["job.retry", "fault.cleared"] * 2


# ------------------------------------------------------------------ recursive inbox, bad folder


def _too_long_chain(root: Path, depth: int = 20) -> str:
    """Folders nested deeper than PATH_MAX (made with ``dir_fd``, as no path could name
    them), a JSON at the bottom; returns the bottom file's name."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(depth):
            name = f"{i:02d}" + "d" * 253
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open("deep.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, coco_bytes())
        os.close(out)
    finally:
        os.close(fd)
    return "deep.json"


@pytest.mark.parametrize("observer", ["inotify", "polling"])
def test_recursive_inbox_skips_a_folder_it_cannot_list_and_converts_the_rest(
        tmp_path: Path, daemon_factory, observer: str) -> None:
    config = base_config(tmp_path)
    config["inboxes"][0].update({"recursive": True, "rescan": "0.5s", "observer": observer})
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "ok").mkdir(parents=True)
    _too_long_chain(inbox)
    locked = inbox / "locked"
    locked.mkdir()
    (locked / "inside.json").write_bytes(coco_bytes("x"))
    locked.chmod(0)  # unlistable, except for root (which ignores permission bits)
    try:
        (inbox / "top.json").write_bytes(coco_bytes("a"))
        (inbox / "ok" / "nested.json").write_bytes(coco_bytes("b"))
        d = daemon_factory(config).start()
        d.wait_ready()
        d.wait_for(lambda: {"top.zip", "nested.zip"} <= set(files(outbox)), 60, "the results")
        _drop(inbox / "ok", "later.json", coco_bytes("c"))  # after start-up: events still flow
        d.wait_for(lambda: "later.zip" in files(outbox), 60, "the later result")
        line = _status_with(d, "cannot be listed or followed", "ENAMETOOLONG", "skipped")
        assert "bytes)" in line  # the 5 KiB path is shortened in STATUS
        scans = len(d.events("inbox.scan"))
        d.wait_for(lambda: len(d.events("inbox.scan")) >= scans + 3, 30, "three more rescans")
        skipped = [e for e in d.events("inbox.folder_skipped") if "ENAMETOOLONG" in e["reason"]]
        assert len(skipped) == 1, skipped  # reported once, not on every scan
        if os.geteuid() != 0:
            assert [e for e in d.events("inbox.folder_skipped") if e["folder"] == "locked"]
        status = run_cli("status", "-c", d.config_path)
        assert "cannot be listed or followed" in status.stdout, status.stdout
        assert files(inbox / "failed") == []
    finally:
        locked.chmod(0o755)
