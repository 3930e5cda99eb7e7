"""Room in the outbox: results that did not fit are spooled, and written only once they fit.

Why: a worker writes its result straight into the outbox, under a staging name, because that
costs no copy in the common case. But when the outbox filled up under it (ENOSPC, EDQUOT), a
retry the same way would fill the disk again, once per retry, and starve every other writer
of that filesystem. So the job's next run converts into ``<state_dir>/spool/`` (local disk),
where its size becomes known, and the result enters the outbox only when the outbox has room
for it: the wait is a :class:`~smaskd.daemon.backoff.Fault` with probe ``space``, released
when the filesystem's free space (for an unprivileged writer, ``f_bavail``) reaches the size.
A result larger than the whole outbox filesystem can never fit and fails at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from smaskd.config import Rule
from smaskd.daemon import outbox
from smaskd.daemon.backoff import Fault

__all__ = ["NO_ROOM", "SpooledJob", "SpoolingJobs", "TooLarge", "copy_in", "no_room", "room_for",
           "spool_dir"]


class SpooledJob(Protocol):
    """What bringing a spooled result in reads of its job (:class:`smaskd.daemon.jobs.Job`)."""

    rule: Rule | None


class SpoolingJobs(Protocol):
    """The job queue's part (:class:`smaskd.daemon.jobs.Jobs` implements it).

    Why a protocol and not an import: ``jobs`` calls this module, so importing ``jobs`` back,
    even for type hints, would make the two a cycle; this names only what is called.
    """

    def result_path(self, job: Any) -> Path: ...

    def fail(self, job: Any, error: dict[str, Any]) -> None: ...

    def park(self, job: Any, error: Any, step: str, out: Any = None,
              fault: Fault | None = None) -> bool: ...

#: Errnos that say "the outbox has no room": the job's next run is spooled.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})
#: Room kept free beyond the result itself (its log, the directory entry, metadata blocks).
SLACK = 64 * 1024


class TooLarge(Exception):
    """The result is larger than the outbox's filesystem: no wait can make it fit."""


def spool_dir(state_dir: Path) -> Path:
    folder = state_dir / "spool"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def no_room(box: Path, size: int) -> Fault | None:
    """The wait for ``size`` bytes in ``box`` (None if they fit now); TooLarge if they never can.

    The total is that of the filesystem as an unprivileged writer sees it; the wait's
    ``need`` includes :data:`SLACK`, so a release is not followed by an ENOSPC on the log.
    """
    usage = shutil.disk_usage(box)
    if size > usage.total:
        raise TooLarge(f"the result ({size} bytes) is larger than the outbox {box}'s whole "
                       f"filesystem ({usage.total} bytes); it can never be published there")
    need = size + SLACK
    if usage.free >= need:
        return None
    return Fault("outbox", box, f"has {usage.free} bytes free; {need} needed", "space", need)


def copy_in(spooled: Path, staging: Path) -> None:
    """Copy a spooled result to its staging name in the outbox (fsynced), then drop the spool.

    A failure (the outbox filled up since the check) removes the partial copy: a result is
    never left half-written in the outbox, and the spooled one stays for the next try.
    """
    dfd = os.open(staging.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    sfd = os.open(spooled.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging.name, dir_fd=dfd)  # a leftover of an earlier try of this job
        if not outbox.copy_into(sfd, spooled.name, staging.name, dfd):
            raise FileExistsError(errno.EEXIST, "appeared during the copy", str(staging))
        os.fsync(dfd)
        os.unlink(spooled.name, dir_fd=sfd)
    finally:
        os.close(sfd)
        os.close(dfd)


def room_for(jobs: SpoolingJobs, job: SpooledJob, out: Any, staging: Path) -> bool:
    """Bring ``job``'s spooled result to ``staging`` in the outbox if it has room; else
    park the job (a ``space`` wait) or fail it (it can never fit). True: go on publishing."""
    spooled = jobs.result_path(job)
    if not os.path.lexists(spooled):
        return True  # copied in by an earlier try
    size = os.lstat(spooled).st_size
    assert job.rule is not None
    try:
        fault = no_room(job.rule.outbox, size)
    except TooLarge as e:
        jobs.fail(job, {"type": "OutputTooLarge", "class": "limit", "where": None,
                        "message": str(e)})
        return False
    if fault is None:
        try:
            copy_in(spooled, staging)
            return True
        except OSError as e:
            if e.errno not in NO_ROOM:
                raise
            fault = Fault("outbox", job.rule.outbox, "filled up while the result was copied in",
                          "space", size + SLACK)
    jobs.park(job, None, "publish", out, fault)
    return False
