"""Group commit: a job's journal transitions share barriers, and no output or input move
outruns its record (journal.py, "Group commit").

The daemon runs under ``strace`` (the real syscalls, nothing mocked): every write of the
journal's WAL, every fsync of it, every publish into the outbox and every unlink of a claim
is in the trace of its main thread, in order. Durability cannot be tested by pulling the
plug, but its precondition can: at each publish and each claim unlink, every WAL write made
so far has been fsynced.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.daemon.conftest import base_config, coco_bytes, files

COUNT = 12
# a whole call, or its first half when another process's call interleaved (the result then
# comes on a "<... resumed>" line: such a call is taken as made, errors are rare there)
_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*?)(?:\)\s+=\s+(-?\d+).*| <unfinished \.\.\.>)$")
_FD = re.compile(r"\d+<([^>]*)>")


def _trace_events(trace: Path, pid: int) -> list[tuple[str, list[str]]]:
    """(syscall, the paths/names among its arguments) of ``pid``'s successful calls."""
    out = []
    for line in trace.read_text(errors="replace").splitlines():
        m = _CALL.match(line)
        if not m or int(m.group(1)) != pid or int(m.group(4) or 0) < 0:
            continue
        args = m.group(3)
        out.append((m.group(2), _FD.findall(args) + re.findall(r'"([^"]*)"', args)))
    return out


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace(1) to see the syscalls")
def test_publish_and_claim_unlink_wait_for_a_synced_journal_and_syncs_are_shared(
        tmp_path: Path, daemon_factory) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    trace = tmp_path / "strace.txt"
    config = base_config(tmp_path, workers=2, inboxes=[
        {"name": "in", "path": str(inbox), "settle": "0s", "rescan": "1h"}])
    prefix = ["strace", "-f", "-y", "-qq", "-o", str(trace), "-e",
              "trace=pwrite64,write,fsync,fdatasync,link,linkat,rename,renameat,renameat2,"
              "unlink,unlinkat"]
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}, prefix=prefix).start()
    d.wait_ready()
    names = [f"g{i:02d}.json" for i in range(COUNT)]
    for i, name in enumerate(names):  # renamed in at once: a burst, several per loop pass
        tmp = tmp_path / f".{name}"
        tmp.write_bytes(coco_bytes(f"label{i}"))
        os.rename(tmp, inbox / name)
    d.wait_for(lambda: len(files(inbox / "done")) == COUNT, 120, "every input in done/")
    daemon_pid = int(Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text().split()[0])
    os.kill(daemon_pid, signal.SIGTERM)  # the daemon itself: strace would only detach
    assert d.proc.wait(60) == 0
    time.sleep(0.2)  # the last lines through the pipe
    stopped = d.events("daemon.stopped")[-1]

    # Per job (by id): the WAL fsyncs seen since its plan marker was made, and the folder and
    # WAL fsyncs since its input was linked into done/. Other jobs' later commits may be
    # unsynced at its publish or unlink (they share the next barrier); its own may not.
    since_plan: dict[str, int] = {}
    since_link: dict[str, set[str]] = {}
    published = unlinked = wal_syncs = 0
    for call, paths in _trace_events(trace, daemon_pid):
        if call in ("fsync", "fdatasync"):
            wal = any(p.endswith("journal.sqlite-wal") for p in paths)
            wal_syncs += wal
            for job_id in since_plan:
                since_plan[job_id] += wal
            for synced in since_link.values():
                synced.update(["wal"] if wal else paths)
            continue
        bare = [p for p in paths if "/" not in p]
        folders = [p for p in paths if "/" in p]
        if call == "linkat" and len(bare) == 2:
            plan = re.fullmatch(r"\.([0-9T]+-[0-9a-f]+)\.plan", bare[1])
            staged = re.fullmatch(r"\.smaskd-([0-9T]+-[0-9a-f]+)\.zip", bare[0])
            claim = re.fullmatch(r"([0-9T]+-[0-9a-f]+)__.*\.json", bare[0])
            if plan:
                since_plan[plan.group(1)] = 0
            elif staged and folders[-1] == str(outbox):
                assert since_plan.get(staged.group(1)), \
                    f"{bare[1]} published before the journal's fsync after its plan"
                published += 1
            elif claim and folders[-1] == str(inbox / "done"):
                since_link[claim.group(1)] = set()
        elif call == "unlinkat" and folders and folders[0].endswith("/processing/testhost"):
            claim = re.fullmatch(r"([0-9T]+-[0-9a-f]+)__.*\.json", bare[0]) if bare else None
            if claim:
                synced = since_link.get(claim.group(1), set())
                assert {"wal", str(inbox / "done")} <= synced, \
                    f"{bare[0]} left processing/ before done/ and the journal were synced"
                unlinked += 1
    assert published == COUNT and unlinked == COUNT, (published, unlinked)
    assert sorted(files(outbox)) == sorted([n[:-5] + ".zip" for n in names] +
                                           [n[:-5] + ".log.jsonl" for n in names])
    # eight transitions per job, at most two barriers per job (fewer when jobs share a pass);
    # SQLite's own syncs (start-up, the checkpoint on close) are in the trace's count too
    assert wal_syncs <= 2 * COUNT + 4, f"{wal_syncs} fsyncs of the WAL for {COUNT} jobs"
    assert stopped["journal_writes"] >= 8 * COUNT
    assert stopped["journal_syncs"] <= 2 * COUNT + 2, stopped
