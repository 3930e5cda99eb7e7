"""The journal refuses writes (issue 11 case 5): another process holds an exclusive SQLite
lock, or ``state_dir`` is full. Nothing is claimed that the journal cannot record (the claim
is undone, the file back in the inbox untouched), a finished job keeps its result and
completes once the journal is back, and STATUS says the journal is failing and why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows, tmpfs

LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


class Locker:
    """Another process holding ``BEGIN EXCLUSIVE`` on the journal until ``release``."""

    def __init__(self, journal: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LOCKER, str(journal)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout and self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin
            self.proc.stdin.write("\n")
            self.proc.stdin.close()
            self.proc.wait(10)


def _claims(inbox: Path) -> list[str]:
    folder = inbox / ".smaskd" / "processing" / "testhost"
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.exists() else []


def _status(d, *needles: str):
    return d.wait_for(lambda: next((x for x in d.notify.lines() if x.startswith("STATUS=")
                                    and all(n in x for n in needles)), None),
                      30, f"a STATUS= line with {needles}")


def test_locked_journal_undoes_claims_and_keeps_finished_results(tmp_path: Path,
                                                                daemon_factory) -> None:
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    d = daemon_factory(base_config(tmp_path, fault_backoff="2s"),
                       env={"SMASKD_FAULT": "fake_convert,worker_sleep:slow:3"}).start()
    d.wait_ready()
    (inbox / "slow.json").write_bytes(coco_bytes("slow"))
    d.wait_for(lambda: d.events("job.started"), 30, "slow.json running (sleeps 3 s)")
    locker = Locker(tmp_path / "state" / "journal.sqlite")
    try:
        (inbox / "a.json").write_bytes(coco_bytes("a"))
        before = os.stat(inbox / "a.json")
        d.wait_for(lambda: d.events("claim.undone"), 30, "a.json's claim undone")
        line = _status(d, "journal", "cannot be written: database is locked")
        assert "journal.sqlite" in line
        # the finished job waits with its result staged; nothing published, nothing failed
        d.wait_for(lambda: [e for e in d.events("job.waiting") if e.get("input") == "slow.json"
                            and e.get("what") == "journal"], 30, "slow.json waiting")
        after = os.stat(inbox / "a.json")
        assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
            (before.st_ino, before.st_size, before.st_mtime_ns)
        assert (inbox / "a.json").read_bytes() == coco_bytes("a")
        assert _claims(inbox) == ["slow.json"] or _claims(inbox)[0].endswith("__slow.json")
        assert not d.events("job.failed") and not d.events("loop.error")
        assert [n for n in files(box) if not n.startswith(".")] == []
    finally:
        locker.release()
    d.wait_for(lambda: len(d.events("job.done")) >= 2, 60, "both done once the lock is gone")
    assert d.stop() == 0
    assert files(box) == ["a.log.jsonl", "a.zip", "slow.log.jsonl", "slow.zip"]
    assert files(inbox / "done") == ["a.json", "slow.json"] and files(inbox) == []
    assert _claims(inbox) == [] and files(inbox / "failed") == []
    assert {r["state"] for r in journal_rows(tmp_path / "state")} == {"done"}
    assert '"job.waiting"' in (box / "slow.log.jsonl").read_text()  # its log says it waited


def test_full_state_dir_claims_nothing_until_there_is_room(tmp_path: Path,
                                                          daemon_factory) -> None:
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    with tmpfs(tmp_path / "state", "1m") as state:
        d = daemon_factory(base_config(tmp_path, fault_backoff="2s"),
                           env={"SMASKD_FAULT": "fake_convert"}).start()
        d.wait_ready()
        fd = os.open(state / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        names = ["f1.json", "f2.json", "f3.json"]
        for name in names:
            (inbox / name).write_bytes(coco_bytes(name))
        _status(d, "journal", "cannot be written", "full")
        d.wait_for(lambda: sorted(files(inbox)) == names and not _claims(inbox), 30,
                   "every claim undone")
        assert not d.events("job.failed") and not d.events("loop.error")
        (state / "filler").unlink()
        d.wait_for(lambda: len(d.events("job.done")) >= 3, 60, "all done once there is room")
        assert d.stop() == 0
        assert files(inbox / "done") == names and files(inbox) == [] and _claims(inbox) == []
        assert files(box) == sorted([n.replace(".json", e) for n in names
                                     for e in (".zip", ".log.jsonl")])
        rows = journal_rows(state)
        assert sorted(r["name"] for r in rows if r["state"] == "done") == names
        assert {r["state"] for r in rows} == {"done"}
