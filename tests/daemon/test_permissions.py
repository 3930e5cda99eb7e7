"""A sticky shared inbox and a daemon that is not root: said once, with the fix; the rest works.

Issue 12 case 3: in an inbox with mode 1777 a non-root daemon cannot move other users' files;
it logged a permission error on every poll, forever, and nothing appeared in STATUS.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.daemon.conftest import NOBODY, as_nobody, base_config, coco_bytes, files


def _owned(path: Path, uid: int) -> Path:
    os.chown(path, uid, uid)
    return path


def test_sticky_inbox_permission_problem_is_reported_once_and_the_rest_works(
        tmp_path: Path, daemon_factory) -> None:
    prefix = as_nobody()
    shared = tmp_path / "shared"  # root's, 1777: anyone drops files, only owners move them
    shared.mkdir()
    shared.chmod(0o1777)
    for name in ("own", "state", "outbox"):  # an ordinary inbox of the daemon's user, ...
        (tmp_path / name).mkdir()
        _owned(tmp_path / name, NOBODY)
    own = tmp_path / "own"
    (shared / "theirs.json").write_bytes(coco_bytes())  # root's file: nobody cannot move it
    (shared / "mine.json").write_bytes(coco_bytes())
    _owned(shared / "mine.json", NOBODY)
    config = base_config(tmp_path, inboxes=[
        {"name": "shared", "path": str(shared), "settle": "0.2s", "rescan": "1s"},
        {"name": "own", "path": str(own), "settle": "0.2s", "rescan": "1s"}])
    d = daemon_factory(config, prefix=prefix).start()
    d.wait_ready()
    (own / "b.json").write_bytes(coco_bytes())  # root's file in a non-sticky inbox: movable
    d.wait_for(lambda: len(d.events("job.done")) >= 2, 60, "mine.json and b.json done")
    denied = d.wait_for(lambda: d.events("inbox.permission"), 30, "inbox.permission")
    time.sleep(3.5)  # three more rescans of the shared inbox: still one report
    assert len(d.events("inbox.permission")) == 1
    assert not d.events("admit.error")
    reason = denied[0]["reason"]
    assert "sticky" in reason and "'nobody', not root" in reason
    assert f"chmod 2770 {shared}" in reason and "theirs.json" in reason
    out = run_cli("status", "-c", d.config_path)
    assert out.returncode == 0, out.stderr
    assert f"problem: inbox shared {shared} cannot claim files" in out.stdout
    assert "(1 file(s) left in place)" in out.stdout
    status = [m for m in d.notify.lines() if m.startswith("STATUS=") and "sticky" in m]
    assert status, "STATUS= says it too"
    assert d.stop() == 0
    assert files(shared) == ["theirs.json"]  # left where it was, untouched
    assert files(shared / "done") == ["mine.json"]
    assert files(own / "done") == ["b.json"]
    assert sorted(files(tmp_path / "outbox")) == ["b.log.jsonl", "b.zip", "mine.log.jsonl",
                                                  "mine.zip"]


def test_an_inbox_the_daemon_cannot_set_up_is_reported_once_and_the_rest_works(
        tmp_path: Path, daemon_factory) -> None:
    """An inbox the daemon's user cannot write (no .smaskd/, done/, failed/ possible) used to
    stop the daemon at start; now it is said once, retried, and the other inbox works."""
    prefix = as_nobody()
    locked = tmp_path / "locked"  # root's, 0755: nobody can read it but not write it
    locked.mkdir(mode=0o755)
    (locked / "a.json").write_bytes(coco_bytes())
    for name in ("own", "state", "outbox"):
        (tmp_path / name).mkdir()
        _owned(tmp_path / name, NOBODY)
    config = base_config(tmp_path, inboxes=[
        {"name": "locked", "path": str(locked), "settle": "0.2s"},
        {"name": "own", "path": str(tmp_path / "own"), "settle": "0.2s"}])
    d = daemon_factory(config, prefix=prefix).start()
    d.wait_ready()
    (tmp_path / "own" / "b.json").write_bytes(coco_bytes())
    d.wait_for(lambda: d.events("job.done"), 60, "b.json done")
    time.sleep(2.5)  # retried every second: still one report
    denied = d.events("inbox.permission")
    assert len(denied) == 1 and denied[0]["inbox"] == "locked"
    assert "needs read, write and search permission" in denied[0]["reason"]
    assert "'nobody'" in denied[0]["reason"] and "owner root" in denied[0]["reason"]
    out = run_cli("status", "-c", d.config_path)
    assert f"problem: inbox locked {locked} cannot claim files" in out.stdout
    assert "is missing" not in out.stdout
    locked.chmod(0o777)  # fixed: the inbox is set up and its file converted
    d.wait_for(lambda: len(d.events("job.done")) >= 2, 60, "a.json done once fixed")
    assert d.events("inbox.permission_ok")
    assert d.stop() == 0
    assert files(locked / "done") == ["a.json"]
