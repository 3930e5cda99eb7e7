"""Inputs the daemon cannot read (issue 11 case 6): mode 000, owned by another user.

Tests run as root, and root reads everything. The daemon here runs as root *without*
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER (``setpriv --bounding-set``): file modes
and ``fs.protected_hardlinks`` then apply to it as to any unprivileged user (a plain
``nobody`` cannot run this venv's interpreter, which lives under /root). The input belongs to
uid 65534 with mode 000: the daemon can neither read it nor hard-link it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows, tmpfs

UNPRIVILEGED = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--")


def _unprivileged() -> tuple[str, ...]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the daemon without DAC capabilities")
    done = subprocess.run([*UNPRIVILEGED, "true"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot drop capabilities here: {done.stderr.strip()}")
    return UNPRIVILEGED


def _drop_unreadable(path: Path) -> None:
    path.write_bytes(coco_bytes("secret"))
    os.chown(path, 65534, 65534)
    path.chmod(0)


def _claims(inbox: Path) -> list[str]:
    folder = inbox / ".smaskd" / "processing" / "testhost"
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.exists() else []


def _config(tmp_path: Path, **inbox):
    return base_config(tmp_path, inboxes=[{"name": "in", "path": str(tmp_path / "inbox"),
                                           "settle": "0.3s", "rescan": "1s", "grace": "1s",
                                           **inbox}])


def test_unreadable_input_fails_once_into_failed(tmp_path: Path, daemon_factory) -> None:
    prefix = _unprivileged()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = _config(tmp_path)
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}, prefix=prefix).start()
    d.wait_ready()
    _drop_unreadable(inbox / "secret.json")
    (inbox / "ok.json").write_bytes(coco_bytes())
    d.wait_for(lambda: d.events("job.done"), 30, "ok.json done")
    failed = d.wait_for(lambda: d.events("job.failed"), 30, "secret.json failed")
    time.sleep(2.5)  # rescans: nothing is tried again
    assert d.stop() == 0
    assert len(d.events("job.failed")) == 1 and failed[0]["input"] == "secret.json"
    assert failed[0]["error_type"] == "PermissionDenied"
    assert "cannot read the input: Permission denied (mode 0000, owner uid 65534" in \
        failed[0]["error"], failed[0]
    assert files(inbox / "failed") == ["secret.json", "secret.json.error.json"]
    assert (inbox / "failed" / "secret.json").stat().st_uid == 65534  # moved, not copied
    assert files(inbox / "done") == ["ok.json"] and _claims(inbox) == [] and files(inbox) == []
    assert {r["state"] for r in journal_rows(tmp_path / "state")} == {"done", "failed"}
    # a restart finds nothing left to do
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}, prefix=prefix).start()
    d.wait_ready()
    time.sleep(1.5)
    assert d.stop() == 0 and not d.events("job.failed") and not d.events("job.recovered")
    status = run_cli("status", "-c", d.config_path).stdout
    assert "secret.json" in status and "PermissionDenied" in status, status


def test_unreadable_input_failed_cannot_take_is_left_and_reported(tmp_path: Path,
                                                                 daemon_factory) -> None:
    """failed/ on another filesystem: the input can be neither renamed nor copied there.
    It goes back into the inbox (no report file beside it), STATUS and ``smaskd status``
    name it, it is not tried again until it changes, and nothing stays in processing/."""
    prefix = _unprivileged()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with tmpfs(tmp_path / "failedfs", "1m") as failed_dir:
        config = _config(tmp_path, failed=str(failed_dir))
        d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}, prefix=prefix).start()
        d.wait_ready()
        _drop_unreadable(inbox / "secret.json")
        d.wait_for(lambda: d.events("job.failed"), 30, "secret.json failed")
        line = d.wait_for(lambda: next((x for x in d.notify.lines() if x.startswith("STATUS=")
                                        and "secret.json" in x), None), 30, "STATUS names it")
        assert "cannot read the input: Permission denied" in line and "left at" in line, line
        status = run_cli("status", "-c", d.config_path).stdout
        assert "problem: input in/secret.json cannot read the input" in status, status
        time.sleep(3)  # three rescans
        assert len(d.events("job.failed")) == 1 and d.events("job.failed")[0]["left_in_inbox"]
        assert files(inbox) == ["secret.json"] and _claims(inbox) == []
        assert files(failed_dir) == []
        # the owner fixes it and touches it: it is a new drop, converted
        (inbox / "secret.json").chmod(0o644)
        os.utime(inbox / "secret.json")
        d.wait_for(lambda: d.events("job.done"), 30, "secret.json done once readable")
        assert d.stop() == 0
        assert files(inbox / "done") == ["secret.json"] and files(inbox) == []
