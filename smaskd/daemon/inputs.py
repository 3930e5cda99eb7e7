"""Inputs the daemon cannot read: say which permission, and where the file went.

Why apart from the worker: an unreadable file (mode 000, another user's file) says nothing
about its format, and opening it in a worker only yields a bare EACCES that used to strand
the claim. The parent checks it right after the claim, fails it once with a reason naming
the mode, owner and the daemon's uid, and moves it to failed/ (``rename_unreadable``:
``fs.protected_hardlinks`` refuses a hard link to such a file, a rename still works). When
failed/ cannot take it at all (another filesystem, where the unreadable file cannot be
copied), it goes back into the inbox and is reported instead of being written beside: a
report file in the inbox would be a new drop.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from smaskd.config import Config, Inbox
from smaskd.daemon import claims as claims_mod
from smaskd.daemon import dirs, outbox
from smaskd.daemon.journal import Journal
from smaskd.daemon.renames import rename_noreplace

__all__ = ["Unmovable", "UnmovableJob", "UnmovableJobs", "leave_unmovable", "rename_unreadable",
           "unreadable"]


class UnmovableJob(Protocol):
    """What failing an unmovable input reads of its job (:class:`smaskd.daemon.jobs.Job`)."""

    job_id: str
    inbox: Inbox
    name: str
    rel: str
    claim_path: Path
    log: Any


class UnmovableJobs(Protocol):
    """The job queue's part in it (:class:`smaskd.daemon.jobs.Jobs` implements it).

    Why a protocol and not an import: ``jobs`` calls this module, so importing ``jobs`` back,
    even for type hints, would make the two a cycle; this names only what is used.
    """

    config: Config
    journal: Journal
    log: Any
    failed: int
    on_left: Callable[[Inbox, Path, str], None] | None
    on_failed: Callable[[dict[str, Any]], None] | None  # notifications.py

    def ended(self, job: Any, outcome: str) -> None: ...  # metrics.py counts it

    def reason(self, error: dict[str, Any]) -> str: ...

    def summary(self, job: Any, event: str, **fields: Any) -> dict[str, Any]: ...


class Unmovable(OSError):
    """An input that can be neither linked, copied nor renamed into a folder."""


def unreadable(path: Path, st: os.stat_result) -> str | None:
    """Why the daemon cannot read ``path`` (a permission, named), or None if it can."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError as e:
        return (f"cannot read the input: {e.strerror} (mode {stat.S_IMODE(st.st_mode):04o}, "
                f"owner uid {st.st_uid} gid {st.st_gid}; smaskd runs as uid {os.geteuid()})")
    except OSError:
        return None  # not a permission: the worker reports it with its context
    os.close(fd)
    return None


def rename_unreadable(src_dir: int, src: str, folder: Path, name: str,
                      why: PermissionError) -> Path:
    """Move ``src`` (in ``src_dir``) into ``folder`` by a no-replace rename (keep both on a
    clash), for an input that could be neither hard-linked nor read to copy (``why``).
    Unmovable when the rename cannot do it either (another filesystem)."""
    base, suffix = outbox.split_name(name)
    place = dirs.place(folder)
    while True:
        target = f"{outbox.pick_names(folder, base, [suffix], 'rename')}{suffix}"
        try:
            rename_noreplace(src, target, src_dir_fd=src_dir, dst_dir_fd=place.fd())
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno == errno.EXDEV:
                raise Unmovable(why.errno, why.strerror, str(folder)) from e
            raise
        return folder / target


def leave_unmovable(jobs: UnmovableJobs, job: UnmovableJob, error: dict[str, Any],
                    why: OSError) -> None:
    """Fail an input that failed/ cannot take: back into the inbox under its name, never
    over another file, and reported (``jobs.on_left``: STATUS, ``smaskd status``); the
    intake leaves it alone until it changes."""
    where = job.inbox.path / (job.rel or job.name)
    try:
        rename_noreplace(job.claim_path, where)
    except OSError as e:  # its name is taken again: it stays claimed, reported the same
        job.log.warning("input.not_returned", error=str(e))
        where = job.claim_path
    reason = f"{jobs.reason(error)}; failed/ cannot take it ({why.strerror}), left at {where}"
    jobs.journal.update(job.job_id, state="failed", error=f"{error.get('type')}: {reason}")
    claims_mod.remove_marker(job.inbox, jobs.config.host_id, job.job_id)
    jobs.failed += 1
    jobs.ended(job, "failed")
    if jobs.on_left is not None and where != job.claim_path:
        jobs.on_left(job.inbox, where, reason)
    summary = jobs.summary(job, "job.failed", error_type=error.get("type"), error=reason,
                            where=error.get("where"), error_class=error.get("class"),
                            left_in_inbox=where != job.claim_path)
    jobs.log.warning("job.failed", **{k: v for k, v in summary.items() if k != "event"})
    if jobs.on_failed is not None:
        jobs.on_failed({**summary, "moved_to": str(where)})
