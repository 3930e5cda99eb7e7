"""watchdog observers as *hints*: an event says "rescan this inbox soon", and on inotify
inboxes also whether a file's writer is done (``signals.py``).

Why hints only: events come early (created before the writer finished), twice, or never
(inotify overflow; writes by another host on NFS/SMB). The intake's scan is the truth; the
completion signals only make it wait longer (a file open for writing) or shorter (a file
renamed in). The handler is O(1), never raises (an exception kills watchdog's dispatcher
thread for good) and never blocks; the main loop checks the observers every tick and
rebuilds a dead one.
``observer: auto`` polls where inotify is blind: inboxes on nfs, cifs, smb3 or fuse mounts.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserverVFS

from smaskd.config import Inbox
from smaskd.daemon.mounts import fs_type, is_network_fs
from smaskd.daemon.signals import Completion

__all__ = ["Hints", "Watcher", "choose_observer"]

_NOT_HINTS = frozenset({"modified", "opened", "closed_no_write", "attrib", "deleted"})
OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


def choose_observer(inbox: Inbox, mountinfo: str | None = None) -> tuple[str, str]:
    """(inotify|polling, fs type) for an inbox."""
    kind = fs_type(inbox.path, mountinfo)
    if inbox.observer != "auto":
        return inbox.observer, kind
    return ("polling" if is_network_fs(kind) else "inotify"), kind


class Hints:
    """Dirty inbox names, filled by observer threads, drained by the main loop.

    A self-pipe wakes the main loop's ``wait()`` at once, so a dropped file is looked at
    within one tick instead of at the next timer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._all = False
        self.read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def mark(self, name: str | None) -> None:
        with self._lock:
            if name is None:
                self._all = True
            else:
                self._dirty.add(name)
        try:
            os.write(self._write_fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    def wake(self) -> None:
        """Wake the main loop without marking anything: safe in a signal handler (a raw
        write, no lock, which the interrupted main thread may hold)."""
        try:
            os.write(self._write_fd, b"s")
        except OSError:
            pass  # full pipe: the loop is awake anyway

    def take(self) -> tuple[set[str], bool]:
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            dirty, everything = self._dirty, self._all
            self._dirty, self._all = set(), False
        return dirty, everything

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self._write_fd)


class _Handler(FileSystemEventHandler):
    """Hints for one inbox; with ``signals`` (inotify only) also its completion signals."""

    def __init__(self, inbox: Inbox, hints: Hints, signals: Completion | None = None) -> None:
        self.inbox, self.hints, self.signals = inbox, hints, signals
        self.own = tuple(str(p) + os.sep for p in (inbox.path / ".smaskd", inbox.done_dir,
                                                    inbox.failed_dir))
        self.root = str(inbox.path)

    def _mine(self, path: str) -> bool:
        """A name the intake may claim: in the inbox (or below it when recursive), not ours."""
        return bool(path) and not path.startswith(self.own) and (
            self.inbox.recursive or os.path.dirname(path) == self.root)

    def _track(self, event: FileSystemEvent) -> None:
        """Update the completion signals before the hint wakes the main loop, so the scan
        it triggers already sees them."""
        signals = self.signals
        if signals is None:
            return
        kind = event.event_type
        if kind == "events_lost":
            signals.lost()
            return
        src = os.fsdecode(event.src_path)
        if event.is_directory or (kind != "moved" and not self._mine(src)):
            return
        if kind == "modified":
            signals.modified(src)
        elif kind == "closed":
            signals.closed_after_write(src)
        elif kind == "moved":
            dest = os.fsdecode(event.dest_path)
            signals.moved(src, dest if self._mine(dest) else "")
        elif kind in ("created", "deleted"):
            signals.forget(src)

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._track(event)
            if event.event_type in _NOT_HINTS:
                return
            path = os.fsdecode(getattr(event, "dest_path", "") or event.src_path)
            if path.startswith(self.own) or (
                    not self.inbox.recursive and os.path.dirname(path) != self.root):
                return
            self.hints.mark(self.inbox.name)
        except BaseException:  # noqa: BLE001 - an escaping exception kills the observer thread
            pass


def _listdir_skipping(roots: frozenset[str]) -> Any:
    def listdir(path: Any) -> Any:
        try:
            return os.scandir(path)
        except OSError as e:
            if os.fsdecode(path) in roots or e.errno in (errno.ENOENT, errno.ENOTDIR,
                                                         errno.EINVAL):
                raise  # the inbox itself, or a folder that is gone: watchdog handles these
            return iter(())
    return listdir


class _OverflowHandler(logging.Handler):
    """watchdog logs, but does not replay, an inotify queue overflow: rescan everything."""

    def __init__(self, hints: Hints, signals: Completion) -> None:
        super().__init__(logging.WARNING)
        self.hints, self.signals = hints, signals

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "overflow" in record.getMessage().lower():
                self.signals.lost()
                self.hints.mark(None)
        except Exception:  # noqa: BLE001
            pass


class Watcher:
    """One inotify observer and one polling observer shared by all inboxes.

    ``signals`` collects the completion signals of the inotify inboxes; it is forgotten
    whenever the observers are (re)started, since events may have been missed meanwhile.
    """

    def __init__(self, inboxes: tuple[Inbox, ...], hints: Hints, log: Any,
                 signals: Completion | None = None) -> None:
        self.inboxes, self.hints, self.log = inboxes, hints, log
        self.signals = signals if signals is not None else Completion()
        self.modes: dict[str, str] = {}
        self.observers: dict[str, Any] = {}
        self._overflow = _OverflowHandler(hints, self.signals)

    def start(self) -> None:
        overflow_log = logging.getLogger(OVERFLOW_LOGGER)
        overflow_log.addHandler(self._overflow)
        if overflow_log.getEffectiveLevel() > logging.WARNING:  # a quiet log_level must not
            overflow_log.setLevel(logging.WARNING)               # silence the rescan trigger
        self.signals.lost()
        for inbox in self.inboxes:
            if self.root_missing(inbox):
                # Nothing to watch, and watching would need the folder: the main loop notices
                # when it is back and rebuilds the observers then.
                self.log.warning("observer.skipped", inbox=inbox.name, path=str(inbox.path),
                                 reason="inbox missing")
                continue
            mode, kind = choose_observer(inbox)
            if mode == "inotify":
                try:
                    self._schedule("inotify", inbox)
                except FileNotFoundError:
                    continue  # vanished since the check above: handled like a missing inbox
                except OSError as e:
                    if e.errno not in (errno.ENOSPC, errno.EMFILE):
                        raise
                    self.log.warning("observer.fallback", inbox=inbox.name, reason=str(e))
                    mode = "polling"
            if mode == "polling":
                try:
                    self._schedule("polling", inbox)
                except FileNotFoundError:
                    continue
            self.modes[inbox.name] = mode
            self.log.info("observer.started", inbox=inbox.name, path=str(inbox.path),
                          observer=mode, fs_type=kind)

    def _observer(self, mode: str) -> Any:
        if mode not in self.observers:
            if mode == "polling":
                # PollingObserver with a listing that skips a sub-folder it cannot read:
                # watchdog's own raises, and one such folder would end every snapshot of
                # the inbox (the intake skips and reports it the same way)
                obs = PollingObserverVFS(os.stat, _listdir_skipping(
                    frozenset(str(i.path) for i in self.inboxes)),
                    polling_interval=min(self.settle_hint(), 2.0))
            else:  # full events: a move in from outside is a move, not a "created"
                obs = Observer(generate_full_events=True)
            obs.daemon = True
            obs.start()
            self.observers[mode] = obs
        return self.observers[mode]

    def settle_hint(self) -> float:
        settles = [i.settle for i in self.inboxes if i.settle]
        return max(0.2, min(settles)) if settles else 1.0

    def _schedule(self, mode: str, inbox: Inbox) -> None:
        # inotify watches recursively even for a flat inbox: our own claim renames into
        # .smaskd/processing/ must pair with their IN_MOVED_TO, or watchdog holds each unpaired
        # IN_MOVED_FROM for 0.5 s and every later event queues behind it. Polling needs no pairing.
        recursive = inbox.recursive or mode == "inotify"
        handler = _Handler(inbox, self.hints, self.signals if mode == "inotify" else None)
        self._observer(mode).schedule(handler, str(inbox.path), recursive=recursive)

    def healthy(self) -> bool:
        return all(obs.is_alive() for obs in self.observers.values())

    def check(self) -> bool:
        """Rebuild dead observers (watchdog issues #427/#793); False if that failed."""
        if self.healthy():
            return True
        self.log.error("observer.dead", observers=[m for m, o in self.observers.items()
                                                   if not o.is_alive()])
        self.stop()
        try:
            self.start()
        except OSError as e:
            self.log.error("observer.rebuild_failed", error=str(e))
            return False
        self.hints.mark(None)
        return True

    def stop(self) -> None:
        logging.getLogger(OVERFLOW_LOGGER).removeHandler(self._overflow)
        for obs in self.observers.values():
            try:
                obs.stop()
            except Exception:  # noqa: BLE001 - stopping a dead observer may raise
                pass
        for obs in self.observers.values():
            if obs.is_alive():
                obs.join(timeout=2)
        self.observers.clear()

    @staticmethod
    def root_missing(inbox: Inbox) -> bool:
        """The inbox folder is gone (renamed away, deleted, or its share unmounted)."""
        return not Path(inbox.path).is_dir()
