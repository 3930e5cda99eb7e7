"""structlog set-up for the daemon: one JSON stream on stdout, plus per-job event capture.

Why one stream: journald and log shippers want one JSON object per line, and watchdog's own
stdlib ``logging`` records (the inotify overflow warning, observer errors) must come out in the
same shape, so stdlib records go through structlog's ``ProcessorFormatter``. On a TTY a human
reads it, so the console renderer is used instead.

Why ``<N>`` prefixes: journald stores a stdout line at the unit's default priority (info)
unless the line starts with ``<N>`` (sd-daemon(3)); without them ``journalctl -p err`` shows
nothing. They are added only when stdout *is* journald (``$JOURNAL_STREAM`` names its
device:inode), so a pipe, a file or a test reading JSON lines never sees them.

Why a collector: each job publishes ``<stem>.log.jsonl`` holding *every* event of that job,
including DEBUG ones the service log filters out. The ``JobLogs`` processor copies any event
that carries a registered ``job_id`` before level filtering happens in the stdlib handler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, TextIO

import structlog

__all__ = ["JOB_LOGS", "JobLogs", "configure", "get_logger", "is_journald", "jsonable",
           "timestamper"]

timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of an event value (paths, exceptions and sets become strings/lists)."""
    return json.loads(json.dumps(value, default=str))


class JobLogs:
    """Per-job lists of event dicts, filled by a structlog processor and by worker messages."""

    def __init__(self) -> None:
        self._jobs: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def open(self, job_id: str) -> None:
        with self._lock:
            self._jobs.setdefault(job_id, [])

    def add(self, job_id: str, event: dict[str, Any]) -> None:
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id].append(jsonable(event))

    def close(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return self._jobs.pop(job_id, [])

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        job_id = event_dict.get("job_id")
        if job_id is not None and job_id in self._jobs:
            event = {k: v for k, v in event_dict.items() if not k.startswith("_")}
            event.setdefault("level", method)
            self.add(job_id, event)
        return event_dict


JOB_LOGS = JobLogs()

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


#: syslog priorities (sd-daemon's ``<N>``) of the stdlib levels.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


def is_journald(stream: Any) -> bool:
    """True if ``stream`` is the journald connection systemd gave us (``JOURNAL_STREAM=dev:ino``
    matches its descriptor); a redirected or piped stdout inherits the variable but not the
    device:inode."""
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class _JournalPriority(logging.Formatter):
    """Prefix each line of a record with its ``<N>`` priority (a traceback's lines too)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def configure(level: str = "info", stream: TextIO | None = None, json_lines: bool | None = None,
              libraries: str = "info") -> None:
    """Route structlog and stdlib logging into one handler on ``stream`` (default stdout).

    ``json_lines=None`` picks JSON unless the stream is a TTY. Safe to call again (SIGHUP may
    change the level): the previous smaskd handler is replaced. ``level`` is what prints;
    other libraries' loggers (the root's level) stop at ``libraries``: with ``level="debug"``
    an operator wants smaskd's decisions, not watchdog's line per inotify event.
    """
    stream = stream or sys.stdout
    if json_lines is None:
        json_lines = not (hasattr(stream, "isatty") and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Any = (structlog.processors.JSONRenderer(default=str) if json_lines
                     else structlog.dev.ConsoleRenderer(colors=False))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.dict_tracebacks if json_lines else structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_JournalPriority(formatter) if is_journald(stream) else formatter)
    handler.setLevel(_LEVELS.get(level, logging.INFO))
    handler.set_name("smaskd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "smaskd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(libraries, logging.INFO))
    # smaskd's own DEBUG events must reach the collector and the handler decides what prints.
    logging.getLogger("smaskd").setLevel(logging.DEBUG)
    structlog.configure(
        processors=[*shared, JOB_LOGS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "smaskd") -> Any:
    return structlog.get_logger(name)
