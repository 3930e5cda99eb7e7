"""The daemon's main loop: scan, claim, supervise, publish; signals, reload and sd_notify.

Why one thread: every state change (journal, renames, the queue) happens here, so there is
nothing to lock and the order "publish → journal → move input" is plain sequential code.
watchdog's threads only mark inboxes dirty; workers are separate processes. The loop blocks
in one ``wait()`` on the hint pipe and the workers' pipes and sentinels, so it reacts at once
to a dropped file, a finished job or a signal, and ``WATCHDOG=1`` is sent only from here,
only while the observers are alive: a stuck loop stops the pings and systemd restarts us.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from smaskd import log as logsetup
from smaskd.config import Config, Inbox, load_config
from smaskd.daemon.claims import CLAIM_PREFIX_LEN, lock_processing
from smaskd.daemon.dirs import FolderSwapped, claim_area, close_places, forget
from smaskd.daemon.hosts import Leases
from smaskd.daemon.intake import Candidate, Intake, shorten
from smaskd.daemon.jobs import Jobs
from smaskd.daemon.journal import Journal
from smaskd.daemon.metrics import Metrics
from smaskd.daemon.notifications import Notifications
from smaskd.daemon.notify import Notifier
from smaskd.overlaps import config_folders, find_overlaps
from smaskd.daemon.permissions import DENIED, explain
from smaskd.daemon.retention import Retention
from smaskd.daemon.signals import Completion
from smaskd.daemon.statedir import lock_state_dir
from smaskd.daemon.statusfile import write_status
from smaskd.daemon.watcher import Hints, Watcher, choose_observer
from smaskd.daemon.workers import Supervisor
from smaskd.errors import JournalError, SmaskdError

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
    wanted: bool = True  # a full listing is due (hint, timer, start-up) and has not run yet
    missing: bool = False  # the inbox folder is gone: nothing is scanned or created there
    refused: str | None = None  # why it aliases another folder now (overlaps.py): not scanned
    denied: str | None = None  # a permission problem, said once (permissions.py)
    denied_files: set[Path] = field(default_factory=set)  # left in place because of it
    reported: set[str] = field(default_factory=set)  # skipped folders logged


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
        self.metrics = Metrics(log)  # /metrics and /healthz when metrics.listen is set
        self.notifications = Notifications(config.notify, log, config.host_id)
        self.retention: Retention | None = None
        self.hints = Hints()
        self.signals = Completion()  # inotify's completion signals, filled by the watcher
        self.supervisor = Supervisor()
        self.leases = Leases(config.host_id, log)  # heartbeat + takeover of dead hosts' claims
        self.journal: Journal | None = None
        self.jobs: Jobs | None = None
        self.watcher: Watcher | None = None
        self.inboxes: dict[str, _InboxState] = {}
        self.locks: dict[str, int] = {}
        self.state_lock: int | None = None
        self._early_denied: dict[str, str] = {}  # permission problems before states exist
        self.swapped: dict[str, str] = {}  # inbox name → why its claim area is not used
        self._stop = False
        self._reload = False
        self._reload_error: str | None = None  # the last SIGHUP's failure, until one succeeds
        self._last_status = 0.0
        self._last_check = 0.0
        self._last_problems: list[str] = []

    # ------------------------------------------------------------ set-up

    def _prepare_folders(self, config: Config) -> None:
        for inbox in config.inboxes:
            try:
                self._prepare_inbox(inbox, config)
            except OSError as e:
                if e.errno not in DENIED:
                    raise
                # the other inboxes work on; this one is retried every second (_check_inboxes)
                self._deny(inbox, e, None)
        for rule in config.rules:  # as inboxes: the last component only (see below)
            try:
                rule.outbox.mkdir(exist_ok=True)
            except FileNotFoundError:
                self.log.error("outbox.missing", rule=rule.name, path=str(rule.outbox),
                               action="its jobs wait for the parent folder; not created")

    def _prepare_inbox(self, inbox: Inbox, config: Config) -> bool:
        """Create the inbox (only its last component), done/, failed/, and lock the claims.

        An inbox whose *parent* is missing is left alone: that is an unmounted share or a
        renamed tree, and building an empty local copy under the mount point would hide
        the real one when it comes back. The main loop retries once the folder is there.
        """
        known = str(inbox.path) in self.locks
        try:
            if known:  # it existed once: if it is gone now, only its owner may bring it back
                if not inbox.path.is_dir():
                    return False
            else:
                inbox.path.mkdir(exist_ok=True)
        except FileNotFoundError:
            self.log.error("inbox.missing", inbox=inbox.name, path=str(inbox.path),
                           action="waiting for it; not created")
            return False
        for folder in (inbox.done_dir, inbox.failed_dir):
            folder.mkdir(parents=not folder.is_relative_to(inbox.path), exist_ok=True)
        if str(inbox.path) not in self.locks:
            try:
                self.locks[str(inbox.path)] = lock_processing(inbox, config.host_id)
            except FolderSwapped as e:
                self._swapped(inbox, e)
                forget(inbox.path)  # nothing of ours is in it yet: look afresh next time
                return False
        self._unswapped(inbox)
        return True

    def _swapped(self, inbox: Inbox, error: FolderSwapped) -> None:
        """The claim area was swapped (``.smaskd`` renamed away, a symlink planted): say so
        once; the inbox is skipped, nothing is created or moved through it (dirs.py)."""
        reason = f"{error.filename} {error.strerror}"
        if self.swapped.get(inbox.name) != reason:
            self.swapped[inbox.name] = reason
            self.log.error("inbox.claim_area_swapped", inbox=inbox.name, path=error.filename,
                           reason=error.strerror,
                           action="inbox skipped until the folder is back; nothing followed")

    def _unswapped(self, inbox: Inbox) -> None:
        if self.swapped.pop(inbox.name, None) is not None:
            self.log.info("inbox.claim_area_back", inbox=inbox.name)
            state = self.inboxes.get(inbox.name)
            if state is not None:
                state.wanted = True

    def _states(self, config: Config) -> dict[str, _InboxState]:
        states = {}
        for inbox in config.inboxes:
            settle, rescan = _effective(inbox)
            old = self.inboxes.get(inbox.name)
            intake = Intake(inbox, settle, self.signals)
            missing = str(inbox.path) not in self.locks
            if old is not None and old.inbox.path == inbox.path:
                intake.seen, intake.left = old.intake.seen, old.intake.left
                intake.reasons = old.intake.reasons
                missing = missing or old.missing
            state = states[inbox.name] = _InboxState(inbox, intake, rescan,
                                                     poll=min(0.5, max(0.05, settle / 4)),
                                                     missing=missing)
            if old is not None and old.inbox.path == inbox.path:  # said once, not per reload
                state.denied, state.denied_files = old.denied, old.denied_files
                state.refused = old.refused
            state.denied = self._early_denied.pop(inbox.name, state.denied)
            if missing and not state.denied and not (old is not None and old.missing):
                # missing from the start (or since a reload): told as when it vanishes, so the
                # "back" that ends it is told too
                self.notifications.inbox_missing(inbox.name, inbox.path, True)
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
        self.hints.wake()

    # ------------------------------------------------------------ run

    def run(self) -> int:
        os.umask(self.config.umask)
        # first: a second daemon on this state_dir must not touch the folders or the journal
        self.state_lock = lock_state_dir(self.config.state_dir)
        self.journal = Journal(self.config.state_dir)
        self._prepare_folders(self.config)
        self.jobs = Jobs(self.config, self.journal, self.supervisor, self.log)
        self.jobs.on_left = self._left_in_inbox
        self.metrics.start(self, self.config.metrics_listen)
        self.jobs.on_failed = self.notifications.job_failed
        self.jobs.waiting.listeners.append(self.notifications.fault)
        self.retention = Retention(self.config, self.journal, self.log)
        self.leases.beat(self.config)  # before recovery: other hosts must see us alive
        self._signals()
        self.inboxes = self._states(self.config)
        self._check_overlaps()
        self.log.info("daemon.start", host_id=self.config.host_id, workers=self.config.workers,
                      once=self.once, config=str(self.config.source or "(embedded default)"),
                      state_dir=str(self.config.state_dir), pid=os.getpid())
        for state in self.inboxes.values():
            if not state.missing:
                self._recover(state.inbox)
        self.jobs.sweep_staging()
        if not self.once:
            self.watcher = Watcher(self.config.inboxes, self.hints, self.log, self.signals)
            self.watcher.start()
        self._scan(time.monotonic(), everything=True)
        close_places()
        self.notifier.ready(self._status_text())
        self.log.info("daemon.ready", queued=len(self.jobs.queue), pending=self._pending())
        self._publish_status(force=True)
        try:
            while not self._stop:
                if self._reload:
                    self._reload = False
                    try:
                        self._do_reload()
                    except Exception as e:  # noqa: BLE001 - a reload must never stop the daemon
                        self.log.error("config.reload_failed", error=f"{type(e).__name__}: {e}",
                                       action="running on")
                        self._reload_failed(f"{type(e).__name__}: {e}")
                try:
                    self._tick()
                except Exception as e:  # noqa: BLE001 - log, survive, and let the next tick retry
                    self.log.exception("loop.error", error=f"{type(e).__name__}: {e}")
                    time.sleep(0.5)
                close_places()  # idle, the daemon holds no outbox or done/ open (dirs.py)
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
        checking = now - self._last_check >= 1.0  # inboxes present? observers alive?
        if checking:
            self._last_check = now
            self._check_overlaps()
            self._check_inboxes()
        self._scan(now, everything, dirty)
        self.jobs.collect()
        journal_failing = self.jobs.waiting.has("journal")
        self.jobs.retry_waiting()
        self.jobs.retry_unfinished()
        if journal_failing and not self.jobs.waiting.has("journal"):
            self.hints.mark(None)  # files left unclaimed meanwhile: list every inbox now
        self.leases.tick(self.config, now, self.jobs.take_over)
        self.jobs.start_ready()
        self.notifications.tick(now)
        if self.retention is not None:
            self.retention.tick(now)
        healthy = True
        if self.watcher is not None and checking:
            healthy = self.watcher.check()
        healthy = healthy and (self.watcher is None or self.watcher.healthy())
        self.notifier.watchdog(healthy)
        self.metrics.tick(healthy)
        self._publish_status(force=now - self._last_status >= STATUS_EVERY)

    def _recover(self, inbox: Inbox) -> None:
        assert self.jobs is not None
        adopted = self.jobs.recover(inbox)
        if adopted:
            self.log.info("claims.recovered", inbox=inbox.name, count=adopted)

    def _deny(self, inbox: Inbox, error: OSError, state: _InboxState | None) -> None:
        """A permission problem in ``inbox``: logged once per distinct reason, in STATUS."""
        reason = explain(inbox.path, error)
        known = state.denied if state is not None else self._early_denied.get(inbox.name)
        if reason.split(". ", 1)[1:] == (known or "").split(". ", 1)[1:] and known:
            return  # the same problem with another file: said already
        self.log.error("inbox.permission", inbox=inbox.name, path=str(inbox.path), reason=reason,
                       action="files left in place; the rest keeps working")
        if state is None:
            self._early_denied[inbox.name] = reason
        else:
            state.denied = reason

    def _allow(self, state: _InboxState) -> None:
        self.log.info("inbox.permission_ok", inbox=state.inbox.name, was=state.denied)
        state.denied = None

    def _check_overlaps(self) -> None:
        """The start-up folder check again (overlaps.py): a folder may have appeared since,
        as a symlink or a share mounted over its mount point. What it names is refused (the
        inbox not scanned, the rule's jobs held) and said once, until it is fixed."""
        assert self.jobs is not None
        inboxes: dict[str, str] = {}
        rules: dict[str, str] = {}
        for overlap in find_overlaps(config_folders(self.config)):
            reason = f"{overlap.inner.key} {overlap.message}"
            for name in overlap.inboxes:
                inboxes.setdefault(name, reason)
            for name in overlap.rules:
                rules.setdefault(name, reason)
        for name, state in self.inboxes.items():
            reason = inboxes.get(name)
            if reason != state.refused:
                if reason:
                    self.log.error("inbox.refused", inbox=name, reason=reason,
                                   action="not scanned until the folders are fixed")
                else:
                    self.log.info("inbox.accepted", inbox=name, was=state.refused)
                    state.wanted = True
                state.refused = reason
        for name in set(rules) | set(self.jobs.refused_rules):
            if rules.get(name) != self.jobs.refused_rules.get(name):
                if name in rules:
                    self.log.error("outbox.refused", rule=name, reason=rules[name],
                                   action="its jobs wait until the folders are fixed")
                else:
                    self.log.info("outbox.accepted", rule=name)
        self.jobs.refused_rules = rules

    def _left_in_inbox(self, inbox: Inbox, path: Path, reason: str) -> None:
        """An input failed where it lies (failed/ could not take it): not claimed again
        until it changes, and named in STATUS until then."""
        state = self.inboxes.get(inbox.name)
        try:
            st = os.lstat(path)
        except OSError:
            return
        if state is not None:
            rel = path.relative_to(inbox.path).as_posix()
            state.intake.leave(Candidate(path, rel, st), f"input {inbox.name}/{rel} {reason}")

    def _check_inboxes(self) -> None:
        """Notice an inbox that vanished or came back; never create it, never act on the loss.

        While it is gone nothing is scanned there, so the files that "disappeared" with it
        cause no action at all; jobs that need it wait (see backoff.py). When it is back,
        every file settles again from scratch and the observers are rebuilt, because a
        deleted-and-recreated folder is a new inode that no inotify watch follows.
        """
        back = False
        for state in self.inboxes.values():
            inbox = state.inbox
            gone = not inbox.path.is_dir()
            if not gone and not state.missing:
                try:
                    claim_area(inbox.path).check(self.config.host_id)
                except FolderSwapped as e:
                    self._swapped(inbox, e)
                except OSError:
                    pass  # a flaky share: the next check looks again
                else:
                    self._unswapped(inbox)
            if gone and not state.missing:
                state.missing = True
                state.intake.reset()
                state.pending = 0
                self.log.error("inbox.missing", inbox=inbox.name, path=str(inbox.path),
                               action="not scanned and not recreated until it is back")
                self.notifications.inbox_missing(inbox.name, inbox.path, True)
            elif not gone and state.missing:
                first = str(inbox.path) not in self.locks
                if not first:  # a remounted share: opened afresh, not through old descriptors
                    forget(inbox.path)
                try:
                    if not self._prepare_inbox(inbox, self.config):
                        continue
                except OSError as e:
                    if e.errno in DENIED:
                        self._deny(inbox, e, state)
                    else:
                        self.log.error("inbox.prepare_failed", inbox=inbox.name, error=str(e))
                    continue
                if state.denied and not state.denied_files:
                    self._allow(state)
                state.missing = False
                state.intake.reset()
                state.wanted = True
                back = True
                self.log.info("inbox.back", inbox=inbox.name, path=str(inbox.path))
                self.notifications.inbox_missing(inbox.name, inbox.path, False)
                if first:
                    self._recover(inbox)
        if back and self.watcher is not None:
            self.watcher.stop()
            self.watcher.start()
            self.hints.mark(None)

    def _queued(self) -> int:
        """Claimed jobs not yet handed to a worker: the queue plus those parked by a fault."""
        assert self.jobs is not None
        return len(self.jobs.queue) + len(self.jobs.waiting) + len(self.jobs.unfinished)

    def _gated(self) -> bool:
        """More than half of ``queue_limit`` is queued: a listing now could claim little, so
        the inboxes wait until the workers have drained the queue to half. In a burst of
        thousands of files this makes listings O(files / (limit / 2)) instead of one per
        finished job, and it is what keeps claims (and memory) bounded by the limit."""
        return self._queued() > self.config.queue_limit // 2

    def _scan(self, now: float, everything: bool = False, dirty: set[str] = frozenset()) -> None:
        assert self.jobs is not None
        for name, state in self.inboxes.items():
            if everything or name in dirty or now >= state.next_rescan:
                state.wanted = True
            if state.missing or state.refused or name in self.swapped:
                continue
            busy = state.pending or state.intake.backlog
            if not (state.wanted or (busy and now >= state.next_poll)):
                continue
            if self._gated():
                continue
            full = state.wanted or not state.scanned
            if state.wanted:
                for path in state.denied_files:  # try them again once per rescan
                    state.intake.left.pop(path, None)
                state.wanted = False
                state.next_rescan = now + state.rescan
                self.log.debug("inbox.scan", inbox=name, reason="full" if everything else "hint")
            room = self.config.queue_limit - self._queued()
            began = time.perf_counter()
            ready, state.pending = state.intake.poll(now, startup=not state.scanned, limit=room,
                                                     full=full)
            if full:
                self.metrics.scanned(name, time.perf_counter() - began)
            state.scanned = True
            if full and state.denied_files:  # those no longer in the inbox are no problem
                state.denied_files &= set(state.intake.seen) | set(state.intake.left)
                if not state.denied_files and state.denied:
                    self._allow(state)
            self._report_skipped(state)
            # a backlog (over queue_limit) polls at the normal pace; files settling or not
            # yet complete only when one of them can have become ready (events come sooner)
            due = now if state.intake.backlog else state.intake.next_due
            state.next_poll = max(now + state.poll, due)
            if not self.jobs.accepting:
                continue
            for cand in ready:
                try:
                    self.jobs.admit(cand, state.inbox, state.intake)
                except OSError as e:
                    if e.errno == errno.ENAMETOOLONG:
                        # The claim name (job id + name) does not fit: no retry can help.
                        # Say so once and leave the file where it is, untouched.
                        self.log.error("file.name_too_long", inbox=name, path=cand.rel,
                                       action="left in the inbox; rename it shorter",
                                       limit=f"{255 - CLAIM_PREFIX_LEN} bytes")
                        state.intake.leave(cand)
                        continue
                    if e.errno in DENIED:  # said once; the file stays; retried every rescan
                        self._deny(state.inbox, e, state)
                        state.intake.leave(cand)
                        state.denied_files.add(cand.path)
                        continue
                    # a vanished file or a flaky share: the next scan retries
                    self.log.warning("admit.error", inbox=name, path=cand.rel, error=str(e))
                    continue
                if cand.path in state.denied_files:
                    state.denied_files.discard(cand.path)
                    if not state.denied_files:
                        self._allow(state)

    def _report_skipped(self, state: _InboxState) -> None:
        """Log each folder the scan had to skip once, when first seen (STATUS lists them
        while they last), and once more when it can be listed again."""
        skipped = state.intake.skipped
        for rel in skipped.keys() - state.reported:
            self.log.error("inbox.folder_skipped", inbox=state.inbox.name, folder=shorten(rel),
                           reason=skipped[rel],
                           action="not scanned; the rest of the inbox is")
        for rel in state.reported - skipped.keys():
            self.log.info("inbox.folder_back", inbox=state.inbox.name, folder=shorten(rel))
        state.reported = set(skipped)

    def _pending(self) -> int:
        """Files in the inboxes not claimed yet: settling, or ready but over the queue limit."""
        return sum(s.pending + s.intake.backlog for s in self.inboxes.values())

    def _idle(self) -> bool:
        assert self.jobs is not None
        # Jobs waiting for a fault do not keep ``--once`` running: it ends and says what
        # waits and why (``_shutdown``); the next run resumes them from the journal. A retry
        # pause (``after``: only time) is no fault: it is waited out.
        return (all(s.scanned or s.missing or s.refused or n in self.swapped
                    for n, s in self.inboxes.items())
                and not self._pending() and not self.jobs.queue and not self.jobs.running
                and not len(self.jobs.unfinished) and not self.jobs.waiting.has("after"))

    def _timeout(self) -> float:
        assert self.jobs is not None
        now = time.monotonic()
        timeout = 1.0  # also the pace of the inbox-presence check
        if not self._gated():  # gated: only a finished worker (a waitable) can change that
            for state in self.inboxes.values():
                if state.missing:
                    continue
                timeout = min(timeout, state.next_rescan - now)
                if state.pending or state.intake.backlog:
                    timeout = min(timeout, max(state.next_poll - now, 0.02))
        if self.supervisor.running:
            timeout = min(timeout, 0.25)  # enforce job deadlines
        for due in (self.jobs.waiting.next_due(), self.jobs.unfinished.next_due(now)):
            if due is not None:
                timeout = min(timeout, due - now)
        timeout = min(timeout, self.leases.next_beat - now)
        if self.notifier.watchdog_interval:
            timeout = min(timeout, self.notifier.watchdog_interval / 2)
        return max(0.02, min(timeout, 1.0))

    def _problems(self) -> list[str]:
        assert self.jobs is not None
        missing = [f"inbox {s.inbox.name} {s.inbox.path} is missing (unmounted share? renamed?)"
                   for s in self.inboxes.values()
                   if s.missing and not s.denied and s.inbox.name not in self.swapped]
        missing += [f"inbox {s.inbox.name} {s.inbox.path} {s.denied}"
                    + (f" ({len(s.denied_files)} file(s) left in place)" if s.denied_files else "")
                    for s in self.inboxes.values() if s.denied]
        refused = [f"inbox {s.inbox.name} not used: {s.refused}" for s in self.inboxes.values()
                   if s.refused and not s.missing]
        refused += [f"outbox of rule {name} not used: {reason}"
                    for name, reason in self.jobs.refused_rules.items()]
        for s in self.inboxes.values():
            skipped = sorted(s.intake.skipped.items())
            missing += [f"inbox {s.inbox.name}: {shorten(rel)} cannot be listed or followed "
                        f"({why}); skipped" for rel, why in skipped[:5]]
            if len(skipped) > 5:
                missing.append(f"inbox {s.inbox.name}: {len(skipped) - 5} more folders skipped")
        swapped = [f"inbox {name} skipped: its claim area {why}"
                   for name, why in sorted(self.swapped.items())]
        left = [r for s in self.inboxes.values() for r in s.intake.reasons.values()]
        reload = [self._reload_error] if self._reload_error else []
        return (reload + missing + swapped + refused + self.metrics.problems()
                + self.jobs.waiting.describe()
                + self.jobs.unfinished.describe() + left)

    def _status_text(self) -> str:
        assert self.jobs is not None
        text = (f"queued={len(self.jobs.queue)} running={len(self.jobs.running)} "
                f"waiting={len(self.jobs.waiting) + len(self.jobs.unfinished)} pending={self._pending()} "
                f"done={self.jobs.done} failed={self.jobs.failed}")
        waiting = [f"inbox {name}: {n} waiting for a ready marker"
                   for name, n in self._unmarked().items()]
        return "; ".join([text, *waiting, *self._problems()])

    def _unmarked(self) -> dict[str, int]:
        """Files per inbox that wait for their ready marker (markers.py), from the last full
        listing: not "pending" (nothing the daemon can hurry, and ``--once`` does not wait
        for them), but the answer to "why is my file still there?", so STATUS says it."""
        return {name: len(s.intake.unmarked) for name, s in self.inboxes.items()
                if s.intake.unmarked}

    def _publish_status(self, force: bool = False) -> None:
        """STATUS= and the status file: every STATUS_EVERY, and at once when a problem
        appears or clears (the counters alone change too often to send on every tick)."""
        problems = self._problems()
        if not force and problems == self._last_problems:
            return
        self._last_problems = problems
        self._last_status = time.monotonic()
        text = self._status_text()
        self.notifier.status(text)
        write_status(self.config.state_dir, text, problems, unmarked=self._unmarked())

    # ------------------------------------------------------------ reload / stop

    def _reload_failed(self, error: str) -> None:
        """A failed SIGHUP stays a problem (STATUS, ``smaskd status``) until a reload works:
        the log line alone scrolls away, and the operator believes the new config runs."""
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        self._reload_error = f"reload failed at {when}, still running the old config: {error}"
        self._publish_status(force=True)

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
        except (SmaskdError, OSError) as e:  # incl. BusyError: an inbox another daemon holds
            self.log.error("config.reload_failed", error=str(e), action="kept the old config")
            self.notifier.ready(f"reload failed: {e}")
            self._reload_failed(str(e))
            return
        self._reload_error = None
        old, self.config = self.config, new
        self.jobs.config = new
        self.jobs.waiting.cap = new.fault_backoff
        self.notifications.configure(new.notify)
        if self.retention is not None:
            self.retention.configure(new)
        os.umask(new.umask)
        if (new.log_level, new.library_log_level) != (old.log_level, old.library_log_level):
            logsetup.configure(new.log_level, libraries=new.library_log_level)  # as at start
        self.metrics.configure(new.metrics_listen)  # rebinds: the old address until the new works
        self.inboxes = self._states(new)
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = Watcher(new.inboxes, self.hints, self.log, self.signals)
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
            with contextlib.suppress(JournalError):  # the row says claimed or running: same
                self.journal.update(job.job_id, state="claimed")
        deadline = time.monotonic() + self.config.drain_timeout
        while self.jobs.running and time.monotonic() < deadline:
            wait(self.supervisor.waitables(), min(0.25, max(0.01, deadline - time.monotonic())))
            self.jobs.collect(retry=False)
        for job_id in self.supervisor.stop_all():
            job = self.jobs.running.pop(job_id)
            with contextlib.suppress(JournalError):
                self.journal.update(job_id, state="claimed")
            self.jobs.cleanup_staging(job)
            self.log.warning("job.interrupted", job_id=job_id, input=job.name,
                             action="left claimed for the next start")
        if self.retention is not None:
            self.retention.close()
        self.notifications.close()
        self.log.info("daemon.stopped", done=self.jobs.done, failed=self.jobs.failed,
                      waiting=len(self.jobs.waiting), journal_writes=self.journal.writes,
                      journal_syncs=self.journal.syncs)
        write_status(self.config.state_dir, f"stopped; {self._status_text()}", self._problems(),
                     state="stopped")
        self.notifier.close()
        self.metrics.close()
        self.journal.close()
        close_places()
        if self.once and not interrupted:
            # a fault with no job behind it (the journal refused a claim) still left work
            waits = bool(len(self.jobs.waiting) or self.jobs.waiting.blockers)
            if waits:
                self.log.warning("once.waiting", waiting=len(self.jobs.waiting),
                                 problems=self._problems(),
                                 action="left as they are; the next run carries them on")
            return 65 if self.jobs.failed else 75 if waits else 0
        return 0
