"""Tell someone: run the configured command when a job fails or a fault starts or ends.

Why a command and not a mail or webhook client: every site already has its way of being told
(a mail relay, a chat webhook via curl, a pager tool), and a program is the one interface they
all take. The facts go in ``SMASKD_*`` environment variables and, the same as one JSON object,
on stdin; the command is an argv list, so no file name ever passes through a shell.

Why it can never hold the daemon up: the command is started with ``Popen`` (its own session,
stdin an unlinked temporary file holding the JSON, stderr another, so no pipe can fill and
block either side) and reaped from the main loop's tick, which passes at least once a second.
At ``timeout`` its whole process group is killed (SIGKILL) and that is logged. At most
``max_running`` run at once; more events wait in a queue of :data:`QUEUE_LIMIT`, and beyond
that they are dropped with a log line (``notify.dropped``): a flood of failures must not
become a flood of processes, and a stuck notifier must not grow memory without bound.
A command that cannot be started or exits non-zero is logged (``notify.failed``, with the
tail of its stderr), never raised: being told is secondary to converting.

Events: ``job_failed`` (a job ended in failed/, or was left in the inbox because failed/
could not take it), ``fault_started`` and ``fault_ended`` (a filesystem fault that holds jobs
back: an outbox full or not writable, an inbox gone, a transient read error, the journal
refusing writes; ``backoff.py``; and an inbox that vanishes while no job waits for it, from the
service's check), each told once however many sources see it. A worker's retry pause is
not a fault: if the job fails in the end, ``job_failed`` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smaskd import __version__
from smaskd.config import Notify
from smaskd.daemon.backoff import Fault

__all__ = ["QUEUE_LIMIT", "Notifications", "fault_facts", "job_facts"]

#: Events waiting for a free slot at most; the rest are dropped (and logged).
QUEUE_LIMIT = 100
#: Longest text of one fact put in the environment (a long error message is cut; stdin has it
#: whole up to :data:`_STDIN_LIMIT`).
_ENV_LIMIT = 4000
_STDIN_LIMIT = 64 * 1024
_STDERR_TAIL = 500
#: The service manager's variables are ours, not the command's: a command that inherited
#: NOTIFY_SOCKET could send READY=/STATUS= in the daemon's name.
_NOT_INHERITED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                  "LISTEN_FDNAMES")


def job_facts(summary: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The facts of a ``job.failed`` summary line that a notification carries."""
    keys = ("job_id", "inbox", "rule", "input", "action", "attempts", "error_type", "error",
            "where", "sha256", "size", "moved_to", "log", "left_in_inbox")
    facts = {k: summary.get(k) for k in keys}
    facts.update(more)
    return facts


def fault_facts(fault: Fault, **more: Any) -> dict[str, Any]:
    """The facts of a fault (backoff.py): what, where, why, which probe clears it."""
    return {"fault_kind": fault.probe, "fault_what": fault.label, "fault_path": str(fault.path),
            "fault_reason": fault.reason, "fault": fault.describe(), **more}


@dataclass(slots=True)
class _Running:
    proc: subprocess.Popen[bytes]
    event: str
    deadline: float
    stderr: IO[bytes]
    started: float
    killed: bool = False


class Notifications:
    """The queue and the running commands; used from the daemon's main loop only."""

    def __init__(self, config: Notify | None, log: Any, host_id: str) -> None:
        self.config, self.log, self.host_id = config, log, host_id
        self.queue: deque[dict[str, Any]] = deque()
        self.running: list[_Running] = []
        self.dropped = 0
        self._active: dict[tuple[str, str], int] = {}  # fault key → sources that see it

    def job_failed(self, summary: dict[str, Any]) -> None:
        """``Jobs.on_failed``: a ``job.failed`` summary (plus where the input and log went)."""
        self.emit("job_failed", job_facts(summary))

    def fault(self, event: str, fault: Fault, facts: dict[str, Any]) -> None:
        """A ``Waiting`` listener (backoff.py); a worker's retry pause is no fault.

        One fault may be seen by two sources (an inbox gone: the service's check, and the
        jobs that wait for it), so starts and ends are counted per fault key: the command
        hears the first start and the last end, once each."""
        if fault.probe == "after":
            return
        count = self._active.get(fault.key, 0)
        if event == "fault_started":
            self._active[fault.key] = count + 1
            if count:
                return
        else:
            if count == 0:
                return  # never said to have started
            if count > 1:
                self._active[fault.key] = count - 1
                return
            del self._active[fault.key]
        self.emit(event, fault_facts(fault, **facts))

    def inbox_missing(self, name: str, path: Path, missing: bool) -> None:
        """The service's inbox check: an inbox vanished (an unmounted share) or is back,
        whether or not any job waits for it."""
        fault = Fault(f"inbox {name}", path, "is missing (unmounted share? renamed?)", "dir")
        self.fault("fault_started" if missing else "fault_ended", fault, {})

    def emit(self, event: str, facts: dict[str, Any]) -> None:
        """Run the command for ``event`` now, or queue it, or drop it (see the module doc).
        Never raises: it is called from the middle of failing a job or probing a fault."""
        if self.config is None or event not in self.config.on:
            return
        try:
            self._emit(event, facts)
        except Exception as e:  # noqa: BLE001 - being told must never cost a job
            self.log.error("notify.failed", notify_event=event, error=f"{type(e).__name__}: {e}")

    def _emit(self, event: str, facts: dict[str, Any]) -> None:
        payload = {"event": event, "host_id": self.host_id, "version": __version__,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **facts}
        if len(self.queue) >= QUEUE_LIMIT:
            self.dropped += 1
            self.log.error("notify.dropped", notify_event=event, queued=len(self.queue),
                           running=len(self.running), dropped=self.dropped,
                           reason=f"{QUEUE_LIMIT} notifications already wait for a free slot")
            return
        self.queue.append(payload)
        self.tick()

    def tick(self, now: float | None = None) -> None:
        """Reap finished commands, kill those past their timeout, start queued ones."""
        now = time.monotonic() if now is None else now
        for run in list(self.running):
            code = run.proc.poll()
            if code is None and now >= run.deadline:
                self._kill(run)
                run.killed = True
                code = run.proc.poll()
            if code is None:
                continue  # running; or killed and not reaped yet: the next tick sees it
            if run.killed:
                self.log.error("notify.timeout", notify_event=run.event, pid=run.proc.pid,
                               timeout_s=round(run.deadline - run.started, 3),
                               action="its process group was killed")
            elif code != 0:
                self.log.error("notify.failed", notify_event=run.event, pid=run.proc.pid,
                               exit_code=code, stderr=self._tail(run.stderr))
            else:
                self.log.debug("notify.done", notify_event=run.event, pid=run.proc.pid,
                               duration_ms=round((now - run.started) * 1000, 1))
            self._forget(run)
        while self.queue and self.config is not None and \
                len(self.running) < self.config.max_running:
            self._start(self.queue.popleft(), now)

    def configure(self, config: Notify | None) -> None:
        """A reload: new events use the new command; running ones go on under their deadline."""
        self.config = config
        if config is None and self.queue:
            self.log.warning("notify.dropped", queued=len(self.queue),
                             reason="notify removed from the config by a reload")
            self.queue.clear()

    def close(self) -> None:
        """At shutdown: let queued and running commands finish within one ``timeout`` (a
        ``--once`` run ends right after the failure it must report), then kill the rest."""
        if self.config is not None:
            deadline = time.monotonic() + self.config.timeout
            while (self.queue or self.running) and time.monotonic() < deadline:
                self.tick()
                time.sleep(0.02)
        if self.queue:
            self.log.error("notify.dropped", queued=len(self.queue),
                           reason="the daemon stopped before they could run")
            self.queue.clear()
        for run in list(self.running):
            self._kill(run)
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(1.0)
            self.log.error("notify.timeout", notify_event=run.event, pid=run.proc.pid,
                           action="its process group was killed at shutdown")
            self._forget(run)

    # ------------------------------------------------------------ internals

    def _start(self, payload: dict[str, Any], now: float) -> None:
        assert self.config is not None
        event = payload["event"]
        stdin: IO[bytes] | None = None
        stderr: IO[bytes] | None = None
        try:
            stdin, stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            stdin.write(json.dumps(payload, default=str).encode()[:_STDIN_LIMIT])
            stdin.seek(0)
            proc = subprocess.Popen(list(self.config.command), stdin=stdin,
                                    stdout=subprocess.DEVNULL, stderr=stderr,
                                    env=self._environment(payload), cwd="/",
                                    start_new_session=True, close_fds=True)
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            if stderr is not None:
                stderr.close()
            self.log.error("notify.failed", notify_event=event,
                           command=self.config.command[0], error=f"{type(e).__name__}: {e}")
            return
        finally:
            if stdin is not None:
                stdin.close()
        self.running.append(_Running(proc, event, now + self.config.timeout, stderr, now))
        self.log.debug("notify.started", notify_event=event, pid=proc.pid)

    @staticmethod
    def _environment(payload: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in _NOT_INHERITED and not k.startswith("SMASKD_")}
        for key, value in payload.items():
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            env[f"SMASKD_{key.upper()}"] = text.replace("\0", "")[:_ENV_LIMIT]
        return env

    @staticmethod
    def _kill(run: _Running) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(run.proc.pid, signal.SIGKILL)  # its own session: pgid == pid

    def _forget(self, run: _Running) -> None:
        run.stderr.close()
        self.running.remove(run)

    @staticmethod
    def _tail(stderr: IO[bytes]) -> str:
        with contextlib.suppress(OSError):
            size = stderr.seek(0, os.SEEK_END)
            stderr.seek(max(0, size - _STDERR_TAIL))
            return stderr.read().decode("utf-8", "replace").strip()
        return ""
