"""Claiming a file: one atomic rename into ``<inbox>/.smaskd/processing/<host-id>/``.

Why a rename: it is atomic on one filesystem (NFS included, Maildir's argument), so when
several daemons on one or many hosts watch the same inbox exactly one of them gets each file;
the loser sees ENOENT. The claimed name ``<job-id>__<name>`` carries the job id, so after a
crash the daemon can find its own claims and their journal rows. A ``flock`` on the host's
processing folder stops two daemons with the same host id from adopting each other's claims.

Taking over a dead host's claims (``hosts.py`` decides when) is the same rename again, from
``processing/<other>/`` into ``processing/<me>/``: if two hosts try, one wins and the other
sees ENOENT. A job that was publishing or failing when its host died has a *plan marker*
``processing/<host>/.<job-id>.plan`` beside its claim (written before the first rename into
the outbox), so whoever ends up with the claim finishes that plan instead of converting the
file again and publishing a second result. Names in the marker are relative to the rule's
outbox, because another host may mount the share somewhere else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from smaskd.atomicio import fsync_dir
from smaskd.config import Inbox
from smaskd.errors import BusyError

__all__ = ["CLAIM_PREFIX_LEN", "Claim", "claim", "find_marker", "foreign_hosts", "lock_processing", "make_processing_dir", "markers",
           "new_job_id", "own_claims", "processing_dir", "processing_root", "read_marker",
           "remove_marker", "split_claim_name", "take_over", "try_lock", "unlock", "write_marker"]

SEP = "__"


def new_job_id() -> str:
    """Sortable by time, unique across hosts: ``20260101T120000-1a2b3c4d``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


#: Bytes a claim adds in front of the dropped name (``<job id>__``): a name longer than
#: 255 minus this cannot be claimed.
CLAIM_PREFIX_LEN = len(new_job_id() + SEP)


def processing_root(inbox: Inbox) -> Path:
    return inbox.path / ".smaskd" / "processing"


def processing_dir(inbox: Inbox, host_id: str) -> Path:
    return processing_root(inbox) / host_id


def split_claim_name(name: str) -> tuple[str, str] | None:
    """``<job-id>__<name>`` → (job id, original name); None for foreign names."""
    job_id, sep, original = name.partition(SEP)
    if not sep or not original or len(job_id) != 24:
        return None
    return job_id, original


class Claim:
    """A claimed file: where it is now and what it was called."""

    __slots__ = ("job_id", "name", "path")

    def __init__(self, job_id: str, name: str, path: Path) -> None:
        self.job_id, self.name, self.path = job_id, name, path

    def __repr__(self) -> str:
        return f"Claim({self.job_id!r}, {self.name!r})"


def make_processing_dir(inbox: Inbox, host_id: str) -> Path:
    """This host's processing folder, creating the levels below the inbox but never the inbox.

    An inbox that vanished (an unmounted share) raises FileNotFoundError instead of being
    rebuilt as an empty local folder under the mount point.
    """
    folder = processing_dir(inbox, host_id)
    current = inbox.path
    for part in folder.relative_to(inbox.path).parts:
        current = current / part
        current.mkdir(exist_ok=True)
    return folder


def claim(src: Path, inbox: Inbox, host_id: str, job_id: str | None = None) -> Claim | None:
    """Rename ``src`` into this host's processing folder; None if another process won
    (or the inbox vanished with it)."""
    job_id = job_id or new_job_id()
    try:
        folder = make_processing_dir(inbox, host_id)
    except FileNotFoundError:
        return None
    dst = folder / f"{job_id}{SEP}{src.name}"
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        # NFS may report ENOENT for a rename it did perform (lost reply after a retransmit).
        if not os.path.lexists(dst):
            return None
    return Claim(job_id, src.name, dst)


def own_claims(inbox: Inbox, host_id: str) -> list[Claim]:
    """Claims this host left in processing/ (after a crash or a drain), oldest first."""
    folder = processing_dir(inbox, host_id)
    found = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    for name in names:
        parts = split_claim_name(name)
        if parts:
            found.append(Claim(parts[0], parts[1], folder / name))
    return found


def _lock_file(inbox: Inbox, host_id: str) -> Path:
    return processing_root(inbox) / f".{host_id}.lock"


def try_lock(inbox: Inbox, host_id: str) -> int | None:
    """The host's lock fd if nobody holds it (that host is not running here), else None."""
    fd = os.open(_lock_file(inbox, host_id), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the only fd drops the flock


def lock_processing(inbox: Inbox, host_id: str, wait: float = 3.0) -> int:
    """Hold an exclusive lock for this host id on this inbox for the life of the process.

    Another host probing this lock (to see whether we are alive) holds it for a moment, so
    a busy lock is retried for ``wait`` seconds before it means "a second daemon".
    """
    make_processing_dir(inbox, host_id)
    deadline = time.monotonic() + wait
    while (fd := try_lock(inbox, host_id)) is None:
        if time.monotonic() >= deadline:
            raise BusyError(f"another smaskd with host_id {host_id!r} is running on this inbox; "
                              "give each daemon its own --host-id", f"inbox {inbox.name}")
        time.sleep(0.1)
    return fd


def foreign_hosts(inbox: Inbox, host_id: str) -> list[str]:
    """Other host ids that have a processing folder in this inbox."""
    try:
        entries = list(os.scandir(processing_root(inbox)))
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.name != host_id and not e.name.startswith(".")
                  and e.is_dir(follow_symlinks=False))


def take_over(found: Claim, inbox: Inbox, host_id: str, job_id: str) -> Claim | None:
    """Rename another host's claim into ours under a new job id; None if someone else won.

    A new id, because the old owner may only be stalled: its staging files and journal row
    carry the old id, and nothing it cleans up later may touch the new owner's files.
    """
    try:
        folder = make_processing_dir(inbox, host_id)
    except FileNotFoundError:
        return None
    dst = folder / f"{job_id}{SEP}{found.name}"
    try:
        os.rename(found.path, dst)
    except FileNotFoundError:
        if not os.path.lexists(dst) or os.path.lexists(found.path):
            return None
    return Claim(job_id, found.name, dst)


# ------------------------------------------------------------ plan markers

def _marker(inbox: Inbox, host_id: str, job_id: str) -> Path:
    return processing_dir(inbox, host_id) / f".{job_id}.plan"


def write_marker(inbox: Inbox, host_id: str, job_id: str, data: dict[str, Any]) -> None:
    """Record a publish/fail plan beside the claim (temp, fsync, rename: never half-written).

    Synced, because a taker that finds an empty plan after a power loss would convert the
    file again and publish it twice.
    """
    path = _marker(inbox, host_id, job_id)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, default=str))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def find_marker(inbox: Inbox, job_id: str) -> Path | None:
    """The plan marker of ``job_id`` in any host's folder (the claim may have changed hands)."""
    for host in foreign_hosts(inbox, ""):  # "" is nobody's id: every host's folder
        path = _marker(inbox, host, job_id)
        if path.exists():
            return path
    return None


def read_marker(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_marker(inbox: Inbox, host_id: str, job_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_marker(inbox, host_id, job_id))


def markers(inbox: Inbox, host_id: str) -> list[tuple[str, Path]]:
    """(job id, path) of every marker or marker temp file in the host's folder."""
    try:
        names = os.listdir(processing_dir(inbox, host_id))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.startswith(".") and (name.endswith(".plan") or name.endswith(".plan.tmp")):
            found.append((name[1:].split(".", 1)[0], processing_dir(inbox, host_id) / name))
    return found
