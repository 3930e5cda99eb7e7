"""What a finished job leaves to be read: its summary, its log file, its failure report.

Why apart from ``jobs.py``: these are pure functions of a job's fields, built the same way on
the publish path, the fail path and in recovery; the state machine in ``jobs.py`` only decides
when they are written. ``LOG_SUFFIX`` lives here so retention can find job logs without
importing the job queue.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

from smaskd import __version__
from smaskd.config import Inbox, Rule
from smaskd.log import JOB_LOGS, jsonable, timestamper

__all__ = ["LOG_SUFFIX", "LoggedJob", "failure_report", "log_bytes", "summary"]

LOG_SUFFIX = ".log.jsonl"


class LoggedJob(Protocol):
    """What a job's log and reports read of it (:class:`smaskd.daemon.jobs.Job` is one).

    Why a protocol and not an import: ``jobs`` calls this module, so importing ``jobs`` back,
    even for type hints, would make the two a cycle; this names only what is read.
    """

    job_id: str
    inbox: Inbox
    name: str
    claim_path: Path
    rule: Rule | None
    action: str | None
    size: int
    attempts: int
    sha256: str | None
    claimed_at: float
    started_at: float | None
    events: list[dict[str, Any]] | None


def summary(job: LoggedJob, event: str, **fields: Any) -> dict[str, Any]:
    """The job's ``job.done`` / ``job.failed`` event: who, what, how long, plus ``fields``."""
    now = time.monotonic()
    summary = {"event": event, "job_id": job.job_id, "rule": job.rule.name if job.rule else None,
               "inbox": job.inbox.name, "input": job.name, "sha256": job.sha256,
               "size": job.size, "action": job.action, "attempts": job.attempts,
               "duration_ms": round((now - job.claimed_at) * 1000, 1),
               "queue_ms": round(((job.started_at or now) - job.claimed_at) * 1000, 1)}
    summary.update(fields)
    return summary


def log_bytes(job: LoggedJob, summary: dict[str, Any], level: str) -> bytes:
    """The job's log file: the events it logged, then ``summary`` at ``level``, as JSON lines."""
    # kept on the job: a write refused by the journal makes us build this log again
    events = job.events = (job.events or []) + JOB_LOGS.close(job.job_id)
    last = timestamper(None, level, {**summary, "level": level, "logger": "smaskd.daemon"})
    return "".join(json.dumps(e, default=str) + "\n" for e in [*events, jsonable(last)]).encode()


def failure_report(job: LoggedJob, error: dict[str, Any], host_id: str,
                   log_path: str | None) -> dict[str, Any]:
    """The ``<name>.error.json`` written beside an input moved to failed/."""
    return {"job_id": job.job_id, "input": job.name, "inbox": job.inbox.name,
            "rule": job.rule.name if job.rule else None, "action": job.action,
            "attempts": job.attempts, "error": error, "sha256": job.sha256,
            "size": job.size, "host_id": host_id,
            "smaskd_version": __version__, "log": log_path,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
