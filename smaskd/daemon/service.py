"""The daemon's main loop: scan, claim, supervise, publish; signals, reload and sd_notify.

Why one thread: every state change (journal, renames, the queue) happens here, so there is
nothing to lock and the order "publish → journal → move input" is plain sequential code.
watchdog's threads only mark inboxes dirty; workers are separate processes. The loop blocks
in one ``wait()`` on the hint pipe and the workers' pipes and sentinels, so it reacts at once
to a dropped file, a finished job or a signal, and ``WATCHDOG=1`` is sent only from here,
only while the observers are alive: a stuck loop stops the pings and systemd restarts us.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from smaskd.config import Config, Inbox, load_config
from smaskd.daemon.claims import lock_processing
from smaskd.daemon.intake import Intake
from smaskd.daemon.jobs import Jobs
from smaskd.daemon.journal import Journal
from smaskd.daemon.notify import Notifier
from smaskd.daemon.watcher import Hints, Watcher, choose_observer
from smaskd.daemon.workers import Supervisor
from smaskd.errors import ConfigError

__all__ = ["Service"]

STATUS_EVERY = 5.0


@dataclass(slots=True)
class _InboxState:
    inbox: Inbox
    intake: Intake
    rescan: float
    poll: float
    next_rescan: float = 0.0
    next_poll: float = 0.0
    pending: int = 0
    scanned: bool = False


def _effective(inbox: Inbox) -> tuple[float, float]:
    """(settle, rescan) defaults: shares are slower and their events are missing."""
    mode, _ = choose_observer(inbox)
    settle = inbox.settle if inbox.settle is not None else (5.0 if mode == "polling" else 2.0)
    rescan = inbox.rescan if inbox.rescan is not None else (15.0 if mode == "polling" else 60.0)
    return settle, rescan


class Service:
    """``smaskd run``: returns the process exit code."""

    def __init__(self, config: Config, log: Any, once: bool = False,
                 host_override: str | None = None) -> None:
        self.config, self.log, self.once = config, log, once
        self.host_override = host_override
        self.notifier = Notifier()
        self.hints = Hints()
        self.supervisor = Supervisor()
        self.journal: Journal | None = None
        self.jobs: Jobs | None = None
        self.watcher: Watcher | None = None
        self.inboxes: dict[str, _InboxState] = {}
        self.locks: dict[str, int] = {}
        self._stop = False
        self._reload = False
        self._last_status = 0.0
        self._last_check = 0.0

    # ------------------------------------------------------------ set-up

    def _prepare_folders(self, config: Config) -> None:
        for inbox in config.inboxes:
            for folder in (inbox.path, inbox.done_dir, inbox.failed_dir):
                folder.mkdir(parents=True, exist_ok=True)
            if str(inbox.path) not in self.locks:
                self.locks[str(inbox.path)] = lock_processing(inbox, config.host_id)
        for rule in config.rules:
            rule.outbox.mkdir(parents=True, exist_ok=True)

    def _states(self, config: Config) -> dict[str, _InboxState]:
        states = {}
        for inbox in config.inboxes:
            settle, rescan = _effective(inbox)
            old = self.inboxes.get(inbox.name)
            intake = Intake(inbox, settle)
            if old is not None and old.inbox.path == inbox.path:
                intake.seen, intake.left = old.intake.seen, old.intake.left
            states[inbox.name] = _InboxState(inbox, intake, rescan,
                                             poll=min(0.5, max(0.05, settle / 4)))
        return states

    def _signals(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            self._stop = True
            self._wake()

        def reload(signum: int, frame: Any) -> None:
            self._reload = True
            self._wake()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)

    def _wake(self) -> None:
        # Signal-safe: a raw write, no lock (the main thread may hold the hints lock).
        try:
            os.write(self.hints._write_fd, b"s")
        except OSError:
            pass

    # ------------------------------------------------------------ run

    def run(self) -> int:
        os.umask(self.config.umask)
        self._prepare_folders(self.config)
        self.journal = Journal(self.config.state_dir)
        self.jobs = Jobs(self.config, self.journal, self.supervisor, self.log)
        self._signals()
        self.inboxes = self._states(self.config)
        self.log.info("daemon.start", host_id=self.config.host_id, workers=self.config.workers,
                      once=self.once, config=str(self.config.source or "(embedded default)"),
                      state_dir=str(self.config.state_dir), pid=os.getpid())
        for state in self.inboxes.values():
            adopted = self.jobs.recover(state.inbox)
            if adopted:
                self.log.info("claims.recovered", inbox=state.inbox.name, count=adopted)
        if not self.once:
            self.watcher = Watcher(self.config.inboxes, self.hints, self.log)
            self.watcher.start()
        self._scan(time.monotonic(), everything=True)
        self.notifier.ready(self._status_text())
        self.log.info("daemon.ready", queued=len(self.jobs.queue), pending=self._pending())
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self._do_reload()
                try:
                    self._tick()
                except Exception as e:  # noqa: BLE001 - log, survive, and let the next tick retry
                    self.log.exception("loop.error", error=f"{type(e).__name__}: {e}")
                    time.sleep(0.5)
                if self.once and self._idle():
                    break
                wait([self.hints.read_fd, *self.supervisor.waitables()], self._timeout())
        finally:
            code = self._shutdown()
        return code

    def _tick(self) -> None:
        assert self.jobs is not None
        dirty, everything = self.hints.take()
        now = time.monotonic()
        self._scan(now, everything, dirty)
        self.jobs.collect()
        self.jobs.start_ready()
        healthy = True
        if self.watcher is not None and now - self._last_check >= 1.0:
            self._last_check = now
            healthy = self.watcher.check()
            for state in self.inboxes.values():
                if not state.inbox.path.is_dir():
                    self.log.error("inbox.missing", inbox=state.inbox.name, action="recreated")
                    state.inbox.path.mkdir(parents=True, exist_ok=True)
                    self.watcher.stop()
                    self.watcher.start()
        self.notifier.watchdog(healthy and (self.watcher is None or self.watcher.healthy()))
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            self.notifier.status(self._status_text())

    def _scan(self, now: float, everything: bool = False, dirty: set[str] = frozenset()) -> None:
        assert self.jobs is not None
        for name, state in self.inboxes.items():
            full = everything or name in dirty or now >= state.next_rescan
            if not (full or (state.pending and now >= state.next_poll)):
                continue
            if full:
                state.next_rescan = now + state.rescan
                self.log.debug("inbox.scan", inbox=name, reason="full" if everything else "hint")
            state.next_poll = now + state.poll
            ready, state.pending = state.intake.poll(now, startup=not state.scanned)
            state.scanned = True
            if not self.jobs.accepting:
                continue
            for cand in ready:
                try:
                    self.jobs.admit(cand, state.inbox, state.intake)
                except OSError as e:  # a vanished file or a flaky share: the next scan retries
                    self.log.warning("admit.error", inbox=name, path=cand.rel, error=str(e))

    def _pending(self) -> int:
        return sum(s.pending for s in self.inboxes.values())

    def _idle(self) -> bool:
        assert self.jobs is not None
        return (all(s.scanned for s in self.inboxes.values()) and not self._pending()
                and not self.jobs.queue and not self.jobs.running)

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = min(s.next_rescan for s in self.inboxes.values()) - now
        if self._pending():
            timeout = min(timeout, min(s.poll for s in self.inboxes.values()))
        if self.supervisor.running:
            timeout = min(timeout, 0.25)  # enforce job deadlines
        if self.notifier.watchdog_interval:
            timeout = min(timeout, self.notifier.watchdog_interval / 2)
        return max(0.02, min(timeout, 1.0))

    def _status_text(self) -> str:
        assert self.jobs is not None
        return (f"queued={len(self.jobs.queue)} running={len(self.jobs.running)} "
                f"pending={self._pending()} done={self.jobs.done} failed={self.jobs.failed}")

    # ------------------------------------------------------------ reload / stop

    def _do_reload(self) -> None:
        assert self.jobs is not None
        self.notifier.reloading()
        if self.config.source is None:
            self.log.info("config.reload_skipped", reason="running the embedded default")
            self.notifier.ready(self._status_text())
            return
        try:
            new = load_config(self.config.source)
            if self.host_override:
                new = dataclasses.replace(new, host_id=self.host_override)
            fixed = [k for k in ("state_dir", "host_id") if getattr(new, k) != getattr(self.config, k)]
            if fixed:
                self.log.warning("config.restart_needed", keys=fixed, action="kept the old values")
                new = dataclasses.replace(new, state_dir=self.config.state_dir,
                                          host_id=self.config.host_id)
            self._prepare_folders(new)
        except (ConfigError, OSError) as e:
            self.log.error("config.reload_failed", error=str(e), action="kept the old config")
            self.notifier.ready(f"reload failed: {e}")
            return
        self.config = new
        self.jobs.config = new
        os.umask(new.umask)
        self.inboxes = self._states(new)
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = Watcher(new.inboxes, self.hints, self.log)
            self.watcher.start()
        self.log.info("config.reloaded", inboxes=[i.name for i in new.inboxes],
                      rules=[r.name for r in new.rules], workers=new.workers)
        self.hints.mark(None)
        self.notifier.ready(self._status_text())

    def _shutdown(self) -> int:
        assert self.jobs is not None and self.journal is not None
        interrupted = self._stop
        self.jobs.accepting = False
        if interrupted:
            self.notifier.stopping()
            self.log.info("daemon.stopping", running=len(self.jobs.running),
                          queued=len(self.jobs.queue), drain_timeout=self.config.drain_timeout)
        if self.watcher is not None:
            self.watcher.stop()
        for job in self.jobs.queue:  # unstarted claims stay in processing/ for the next start
            self.journal.update(job.job_id, state="claimed")
        deadline = time.monotonic() + self.config.drain_timeout
        while self.jobs.running and time.monotonic() < deadline:
            wait(self.supervisor.waitables(), min(0.25, max(0.01, deadline - time.monotonic())))
            self.jobs.collect(retry=False)
        for job_id in self.supervisor.stop_all():
            job = self.jobs.running.pop(job_id)
            self.journal.update(job_id, state="claimed")
            self.jobs._cleanup_staging(job)
            self.log.warning("job.interrupted", job_id=job_id, input=job.name,
                             action="left claimed for the next start")
        self.log.info("daemon.stopped", done=self.jobs.done, failed=self.jobs.failed)
        self.notifier.close()
        self.journal.close()
        if self.once and not interrupted:
            return 65 if self.jobs.failed else 0
        return 0
