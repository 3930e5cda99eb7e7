"""Claiming a file: one atomic rename into ``<inbox>/.smaskd/processing/<host-id>/``.

Why a rename: it is atomic on one filesystem (NFS included, Maildir's argument), so when
several daemons on one or many hosts watch the same inbox exactly one of them gets each file;
the loser sees ENOENT. The claimed name ``<job-id>__<name>`` carries the job id, so after a
crash the daemon can find its own claims and their journal rows. A ``flock`` on the host's
processing folder stops two daemons with the same host id from adopting each other's claims.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import time
from pathlib import Path

from smaskd.config import Inbox
from smaskd.errors import BusyError

__all__ = ["Claim", "claim", "lock_processing", "new_job_id", "own_claims", "processing_dir",
           "split_claim_name"]

SEP = "__"


def new_job_id() -> str:
    """Sortable by time, unique across hosts: ``20260101T120000-1a2b3c4d``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


def processing_dir(inbox: Inbox, host_id: str) -> Path:
    return inbox.path / ".smaskd" / "processing" / host_id


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


def claim(src: Path, inbox: Inbox, host_id: str, job_id: str | None = None) -> Claim | None:
    """Rename ``src`` into this host's processing folder; None if another process won."""
    job_id = job_id or new_job_id()
    folder = processing_dir(inbox, host_id)
    folder.mkdir(parents=True, exist_ok=True)
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


def lock_processing(inbox: Inbox, host_id: str) -> int:
    """Hold an exclusive lock for this host id on this inbox for the life of the process."""
    folder = processing_dir(inbox, host_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".{host_id}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BusyError(f"another smaskd with host_id {host_id!r} is running on this inbox; "
                              "give each daemon its own --host-id", f"inbox {inbox.name}") from None
        raise
    return fd
