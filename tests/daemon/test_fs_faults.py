"""Filesystem faults: an inbox that disappears and comes back, an outbox that refuses writes.

Issue point 5. The faults are real: folders renamed away and deleted, a read-only bind mount
(or chmod when not root: root ignores permission bits), a tiny tmpfs filled to ENOSPC. In
every case the inputs stay claimed in processing/, nothing lands in failed/, the daemon says
why in STATUS= and in ``smaskd status``, and everything completes once the fault is gone.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows

HOST = "testhost"


def _claims(inbox: Path) -> list[str]:
    folder = inbox / ".smaskd" / "processing" / HOST
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.exists() else []


def _status_lines(d) -> list[str]:
    return [x for x in d.notify.lines() if x.startswith("STATUS=")]


def _wait_status(d, *needles: str, timeout: float = 60) -> str:
    def found() -> str | None:
        return next((x for x in _status_lines(d) if all(n in x for n in needles)), None)

    return d.wait_for(found, timeout, f"a STATUS= line with {needles}")


# ------------------------------------------------------------------ the inbox goes away


def test_share_unmounted_and_back(tmp_path: Path, daemon_factory) -> None:
    """The inbox's parent (the "share") is renamed away while a job runs, files are added
    to it meanwhile, then it comes back: no crash, no action on the vanished files, no local
    copy of the inbox created, the running job waits, everything completes afterwards."""
    share = tmp_path / "share"
    inbox = share / "inbox"
    inbox.mkdir(parents=True)
    away = tmp_path / "share.away"
    config = base_config(tmp_path, fault_backoff="2s",
                         inboxes=[{"name": "in", "path": str(inbox), "settle": "0.3s",
                                   "rescan": "2s"}])
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert,worker_sleep:slow:3"}).start()
    d.wait_ready()
    (inbox / "a.json").write_bytes(coco_bytes("a"))
    d.wait_for(lambda: d.events("job.done"), 30, "a.json done")
    (inbox / "slow.json").write_bytes(coco_bytes("slow"))
    d.wait_for(lambda: [e for e in d.events("job.started") if e.get("input") == "slow.json"],
               30, "slow.json running (its worker sleeps 3 s)")

    os.rename(share, away)  # the share is gone, with the running job's claim on it
    d.wait_for(lambda: d.events("inbox.missing"), 30, "inbox.missing")
    _wait_status(d, "inbox in", "is missing")
    (away / "inbox" / "b.json").write_bytes(coco_bytes("b"))  # written on the share meanwhile
    # The old code recreated the inbox within one presence check (1 s); give it several.
    d.wait_for(lambda: d.events("job.waiting"), 30, "the running job parked, not failed")
    time.sleep(2.5)
    assert not share.exists(), "the daemon created a local copy of the missing inbox"
    assert d.proc.poll() is None
    status = run_cli("status", "-c", d.config_path)
    assert status.returncode == 0 and "is missing" in status.stdout, status.stdout
    assert not d.events("job.failed")

    os.rename(away, share)
    d.wait_for(lambda: d.events("inbox.back"), 30, "inbox.back")
    d.wait_for(lambda: len(d.events("job.done")) >= 3, 60, "slow.json and b.json done")
    assert d.stop() == 0
    assert files(tmp_path / "outbox") == ["a.log.jsonl", "a.zip", "b.log.jsonl", "b.zip",
                                          "slow.log.jsonl", "slow.zip"]
    assert files(inbox / "done") == ["a.json", "b.json", "slow.json"]
    assert files(inbox / "failed") == [] and _claims(inbox) == []
    assert {r["state"] for r in journal_rows(tmp_path / "state")} == {"done"}
    # the job's own log says it waited and why
    log = (tmp_path / "outbox" / "slow.log.jsonl").read_text()
    assert '"job.waiting"' in log and "is missing" in log


def test_outbox_share_missing_is_waited_for_never_created(tmp_path: Path, daemon_factory) -> None:
    """An outbox on an unmounted share (its parent missing) is not created locally under the
    mount point: the job waits with its input claimed, STATUS says why, and it completes
    once the share is back."""
    share = tmp_path / "outshare"
    config = base_config(tmp_path, fault_backoff="2s",
                         rules=[{"name": "auto", "action": "auto",
                                 "outbox": str(share / "outbox")}])
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}).start()
    d.wait_ready()
    (tmp_path / "inbox" / "a.json").write_bytes(coco_bytes("a"))
    _wait_status(d, "outbox", "is missing")
    time.sleep(2.5)  # a retry or two of the backoff
    assert not share.exists(), "the daemon created the missing share's outbox locally"
    assert _claims(tmp_path / "inbox") and not d.events("job.failed")
    share.mkdir()  # the share is mounted again
    d.wait_for(lambda: d.events("job.done"), 60, "a.json done once the share is back")
    assert d.stop() == 0
    assert files(share / "outbox") == ["a.log.jsonl", "a.zip"]
    assert files(tmp_path / "inbox" / "failed") == [] and _claims(tmp_path / "inbox") == []


def _immutable(folder: Path, on: bool) -> bool:
    """chattr +i/-i: the one way to make a folder unwritable for root (EPERM)."""
    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", flag, str(folder)], capture_output=True).returncode == 0


def test_done_folder_unusable_after_publish_waits_and_survives_a_restart(
        tmp_path: Path, daemon_factory) -> None:
    """done/ refuses the input after its result is published: the job is not failed (that
    would report a published file as failed and write a second log); it waits, a restart
    in that state does not crash, and the move completes once done/ is usable again."""
    done = tmp_path / "inbox" / "done"
    done.mkdir(parents=True)
    if shutil.which("chattr") is None or not _immutable(done, True):
        pytest.skip("needs chattr +i (root on a filesystem with immutable flags)")
    try:
        config = base_config(tmp_path, fault_backoff="1s")
        env = {"SMASKD_FAULT": "fake_convert"}
        d = daemon_factory(config, env=env).start()
        d.wait_ready()
        for name in ("p0", "p1"):
            (tmp_path / "inbox" / f"{name}.json").write_bytes(coco_bytes(name))
        _wait_status(d, "done folder")
        d.wait_for(lambda: len(_claims(tmp_path / "inbox")) == 2 and
                   len([n for n in files(tmp_path / "outbox") if n.endswith(".zip")]) == 2,
                   60, "both published, both inputs still claimed")
        assert not d.events("job.failed") and files(tmp_path / "inbox" / "failed") == []
        assert d.stop() == 0

        d = daemon_factory(config, env=env).start()  # restart with done/ still unusable
        d.wait_ready()
        _wait_status(d, "done folder")
        assert d.proc.poll() is None, d.stderr()
        assert _immutable(done, False)
        d.wait_for(lambda: _claims(tmp_path / "inbox") == [], 60, "inputs moved to done/")
        assert d.stop() == 0
    finally:
        _immutable(done, False)
    assert files(done) == ["p0.json", "p1.json"]
    assert files(tmp_path / "inbox" / "failed") == []
    assert files(tmp_path / "outbox") == ["p0.log.jsonl", "p0.zip", "p1.log.jsonl", "p1.zip"]
    for name in ("p0", "p1"):
        last = (tmp_path / "outbox" / f"{name}.log.jsonl").read_text().splitlines()[-1]
        assert '"job.done"' in last
    assert {r["state"] for r in journal_rows(tmp_path / "state")} == {"done"}


def test_inbox_deleted_and_recreated_is_watched_again(tmp_path: Path, daemon_factory) -> None:
    """A deleted inbox is not recreated by the daemon; once someone recreates it (a new
    inode, which no old inotify watch follows) a file dropped there is seen at once, not
    at the timer rescan an hour later."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = base_config(tmp_path, inboxes=[{"name": "in", "path": str(inbox), "settle": "0.3s",
                                             "rescan": "1h", "observer": "inotify"}])
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}).start()
    d.wait_ready()
    os.rename(inbox, tmp_path / "trash")  # vanish at once (the daemon writes heartbeats there)
    shutil.rmtree(tmp_path / "trash")
    d.wait_for(lambda: d.events("inbox.missing"), 30, "inbox.missing")
    time.sleep(2.5)  # several presence checks: the old code recreated it in the first
    assert not inbox.exists(), "the daemon recreated the deleted inbox"
    inbox.mkdir()
    d.wait_for(lambda: d.events("inbox.back"), 30, "inbox.back")
    (inbox / "later.json").write_bytes(coco_bytes())
    d.wait_for(lambda: d.events("job.done"), 30, "later.json processed through the new watch")
    assert d.stop() == 0
    assert files(inbox / "done") == ["later.json"]


# ------------------------------------------------------------------ the outbox refuses writes


class ReadOnly:
    """A real "cannot write here": a read-only bind mount as root (root ignores mode bits),
    ``chmod 0555`` otherwise."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.active, self.mounted = folder, False, False
        self.reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"

    def apply(self) -> None:
        if os.geteuid() == 0:
            for cmd in (["mount", "--bind", str(self.folder), str(self.folder)],
                        ["mount", "-o", "remount,bind,ro", str(self.folder)]):
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    self.clear()
                    pytest.skip(f"cannot make a read-only bind mount ({' '.join(cmd)}: "
                                f"{done.stderr.strip()})")
                self.mounted = True
        else:
            self.folder.chmod(0o555)
        self.active = True
        try:
            (self.folder / ".probe").write_bytes(b"x")
        except OSError as e:
            assert e.errno in (errno.EROFS, errno.EACCES)
        else:
            raise AssertionError("the outbox is still writable")

    def clear(self) -> None:
        if self.mounted:
            _unmount(self.folder)
            self.mounted = False
        elif self.active:
            self.folder.chmod(0o755)
        self.active = False


def _unmount(folder: Path) -> None:
    """Unmount, lazily if a descriptor still holds it (EBUSY): a mount must never outlive its test."""
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class Full:
    """A real ENOSPC: a 256 KiB tmpfs on the outbox, filled up (root only)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.mounted = folder, False
        self.filler = folder / ".filler"
        self.reason = "No space left on device"

    def apply(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("a real ENOSPC needs a tmpfs mount, which needs root")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs",
                               str(self.folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
        self.mounted = True
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def clear(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            _unmount(self.folder)
            self.mounted = False


@pytest.mark.parametrize("kind", ["not_writable", "full"])
def test_outbox_fault_jobs_wait_with_backoff_then_complete(tmp_path: Path, daemon_factory,
                                                          kind: str) -> None:
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    box.mkdir()
    fault = ReadOnly(box) if kind == "not_writable" else Full(box)
    try:
        fault.apply()
        config = base_config(tmp_path, fault_backoff="2s")
        d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}).start()
        d.wait_ready()
        names = ["x1.json", "x2.json", "x3.json"]
        for name in names:
            (inbox / name).write_bytes(coco_bytes(name))
        line = _wait_status(d, f"outbox {box} is not writable: {fault.reason}",
                            "3 job(s) waiting")
        assert "waiting=3" in line
        status = run_cli("status", "-c", d.config_path)
        assert status.returncode == 0, status.stderr
        assert f"problem: outbox {box} is not writable: {fault.reason}; 3 job(s) waiting" \
            in status.stdout, status.stdout
        # inputs are safe: claimed, not failed; no result was published
        assert len(_claims(inbox)) == 3 and files(inbox / "failed") == []
        assert [n for n in files(box) if not n.startswith(".")] == []
        # the retries back off: 1 s, then doubling up to fault_backoff (2 s)
        d.wait_for(lambda: len(d.events("fault.persists")) >= 2, 30, "two failed probes")
        assert d.events("fault.blocked")[0]["retry_in_s"] == 1.0
        assert [e["retry_in_s"] for e in d.events("fault.persists")][:2] == [2.0, 2.0]
        assert not d.events("job.failed")

        fault.clear()
        d.wait_for(lambda: len(d.events("job.done")) >= 3, 60, "all three done after the fault")
        assert d.events("fault.cleared")
        assert d.stop() == 0
        assert sorted(n for n in files(box) if not n.startswith(".")) == sorted(
            [f"x{i}.zip" for i in (1, 2, 3)] + [f"x{i}.log.jsonl" for i in (1, 2, 3)])
        assert files(inbox / "done") == names and files(inbox / "failed") == []
        assert _claims(inbox) == []
        rows = journal_rows(tmp_path / "state")
        assert {r["state"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
        after = run_cli("status", "-c", d.config_path).stdout
        assert "problem:" not in after, after
    finally:
        fault.clear()
        if isinstance(fault, Full):
            fault.unmount()


# ------------------------------------------------------------------ which errors are faults


def test_classify_tells_faults_from_bad_inputs(tmp_path: Path) -> None:
    from smaskd.config import Inbox
    from smaskd.daemon.backoff import classify

    inbox, box = Inbox("in", tmp_path / "inbox"), tmp_path / "outbox"
    inbox.path.mkdir()
    claim = str(inbox.path / ".smaskd" / "processing" / "h" / "j__a.json")
    staging = str(box / ".smaskd-j.zip")

    def oserror(code: int, filename: str | None = None) -> OSError:
        return OSError(code, os.strerror(code), filename)

    full = classify(inbox, box, oserror(errno.ENOSPC))  # a write() carries no file name
    assert full and full.label == "outbox" and full.path == box and "No space" in full.reason
    assert classify(inbox, box, {"errno": errno.EROFS, "filename": staging}).probe == "write"
    assert classify(inbox, box, oserror(errno.EACCES, staging)).label == "outbox"
    assert classify(inbox, box, oserror(errno.EACCES, claim)) is None  # the input's problem
    assert classify(inbox, box, oserror(errno.EACCES)) is None
    assert classify(inbox, box, oserror(errno.ENOENT, staging)) is None
    assert classify(inbox, box, {"type": "InputError", "message": "bad"}) is None
    loop = classify(inbox, box, oserror(errno.ELOOP, str(inbox.done_dir)))
    assert loop and loop.label == "done folder" and loop.probe == "nolink"
    inbox.path.rmdir()
    gone = classify(inbox, box, None)  # whatever the error: the inbox is gone
    assert gone and gone.label == "inbox in" and gone.probe == "dir"
