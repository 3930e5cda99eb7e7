"""When the journal cannot be written: undo the claim, or hold the job where it stands.

Why the journal comes first: every step of a job is safe after a crash only because the
journal said so before the next one ran. A write it refuses (``state_dir`` full, SQLite
locked by another process for longer than ``journal.BUSY_TIMEOUT``) therefore stops the job
right there, never skips ahead, and never fails it: nothing is wrong with the input.

- A claim whose journal row cannot be added is undone: the file is renamed back to its
  name in the inbox (``RENAME_NOREPLACE``: never over a file that took the name since), and
  no other file is claimed until the journal takes a write again. If the name was taken,
  the claim is kept and waits like a job, its row added when the journal works.
- A job whose write fails waits behind one ``journal`` fault (backoff.py probes it with a
  real write) at the step it reached: a finished worker's result stays staged and is
  published when the journal is back; a job whose journal row already says
  ``publishing``/``published``/``failing`` resumes from that row, as after a restart.

STATUS= and ``smaskd status`` name the fault (``journal …/journal.sqlite cannot be written:
database is locked``) for as long as it lasts.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

from smaskd.daemon import claims as claims_mod
from smaskd.daemon.backoff import Fault, Waiter, Waiting
from smaskd.daemon.intake import Candidate
from smaskd.daemon.journal import Journal
from smaskd.daemon.renames import rename_noreplace
from smaskd.errors import JournalError
from smaskd.log import JOB_LOGS

__all__ = ["HeldJob", "JournalledJobs", "fault_of", "undo_claim", "wait"]


class HeldJob(Protocol):
    """What holding a job reads of it (:class:`smaskd.daemon.jobs.Job` is one)."""

    job_id: str
    journaled: str | None


class JournalledJobs(Protocol):
    """The job queue's part (:class:`smaskd.daemon.jobs.Jobs` implements it).

    Why a protocol and not an import: ``jobs`` calls this module, so importing ``jobs`` back,
    even for type hints, would make the two a cycle; this names only what is used.
    """

    journal: Journal
    waiting: Waiting
    log: Any

#: Journal states past which a job resumes from its row (``recovery.resume``).
_RECORDED = ("publishing", "published", "failing", "failed", "done")


def fault_of(jobs: JournalledJobs, error: JournalError) -> Fault:
    return Fault("journal", jobs.journal.path, error.message, "journal")


def wait(jobs: JournalledJobs, job: HeldJob, error: JournalError, step: str,
         out: Any = None) -> None:
    """Hold ``job`` until the journal takes a write; redo ``step`` then (or resume from
    its row, if the row already records a later state)."""
    JOB_LOGS.open(job.job_id)  # keep collecting: the log is written when it finishes
    try:
        row = jobs.journal.get(job.job_id)
        state = row.state if row is not None else None
    except (sqlite3.Error, JournalError):  # not even readable: what we last wrote
        state = job.journaled
    if state in _RECORDED:
        step, out = "resume", None
    jobs.waiting.park(fault_of(jobs, error), Waiter(job, step, out))


def undo_claim(jobs: JournalledJobs, claim: claims_mod.Claim, cand: Candidate,
               error: JournalError) -> bool:
    """Rename a claim the journal could not record back to its place in the inbox; False
    if it cannot go back (its name was taken meanwhile): the caller holds it as a job."""
    try:
        rename_noreplace(claim.path, cand.path)
    except OSError as e:
        jobs.log.warning("claim.undo_failed", path=str(cand.path), error=str(e),
                         action="kept claimed until the journal works")
        return False
    jobs.waiting.note(fault_of(jobs, error))
    jobs.log.warning("claim.undone", path=str(cand.path), reason=str(error),
                     action="left in the inbox until the journal works")
    return True
