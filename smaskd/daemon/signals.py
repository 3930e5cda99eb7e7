"""Completion signals: what inotify says about whether a file's writer is done.

Why: stability of (size, mtime) for ``settle`` seconds is a guess. A writer that holds a file
open and pauses longer than ``settle`` at a ``}`` looks finished and is not; a file renamed
into the inbox is finished at once and still waits ``settle``. The kernel knows both, and
watchdog's inotify emitter (watchdog 7, ``generate_full_events=True``) passes them on:

==========================  ============================  ==================================
inotify                     watchdog event                what it tells us here
==========================  ============================  ==================================
IN_MODIFY                   FileModifiedEvent             someone wrote: it is open for writing
IN_CLOSE_WRITE              FileClosedEvent               a writing descriptor closed
IN_MOVED_FROM + IN_MOVED_TO FileMovedEvent(src, dest)     renamed inside the watched tree
IN_MOVED_TO alone           FileMovedEvent("", dest)      moved in from outside the inbox
IN_CREATE                   FileCreatedEvent              a new inode: nothing known yet
IN_DELETE, IN_MOVED_FROM    FileDeletedEvent,             gone
alone                       FileMovedEvent(src, "")
queue overflow              EventsLostEvent (+ a log)     everything known is forgotten
IN_OPEN, IN_CLOSE_NOWRITE   FileOpenedEvent,              nothing (IN_OPEN does not say
                            FileClosedNoWriteEvent        whether for reading or writing)
==========================  ============================  ==================================

So a path is ``writing`` from a write until the next close-after-write, and ``moved`` when it
was renamed or moved into the inbox while not ``writing`` (a writer that renames a file it
still writes to carries ``writing`` over to the new name). Anything else is unknown, and
unknown files are judged as before: ``settle``, then the bytes (``intake.py``), then the
claimed input is watched for changes (``unfinished.py``).

What no observer can know: a writer that closes and reopens the file to append looks
finished between the two (IN_CLOSE_WRITE came); a file moved in from outside while another
process still has it open for writing (no IN_MODIFY has been seen under this name yet); a
file written through ``mmap`` (no IN_MODIFY). And the signals lag the kernel a little: watchdog
holds the IN_MOVED_FROM half of every rename in the inbox (the daemon's own heartbeat and
claims included) up to 0.5 s to pair it, and its emitter thread can be asleep on one even after
the pair arrived, so events behind it wait; a ``settle`` shorter than that can judge a file
whose IN_MODIFY is still on its way (the claim-time check catches it). Polling observers
(shares) see none of this:
their inboxes are not tracked here at all and ``settle`` is the rule.
"""

from __future__ import annotations

import os
import threading

__all__ = ["MOVED", "WRITING", "Completion"]

WRITING = "writing"
MOVED = "moved"


class Completion:
    """Per-path completion state, written by observer threads, read by the main loop.

    Keys are absolute path strings as the observer reports them (the inbox path joined with
    the names below it), which is how the intake builds its candidates' paths too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}

    def state(self, path: str) -> str | None:
        """``writing``, ``moved`` or None (unknown: settle and the bytes decide)."""
        return self._state.get(path)

    def modified(self, path: str) -> None:
        with self._lock:
            self._state[path] = WRITING

    def closed_after_write(self, path: str) -> None:
        """The writer closed: complete as far as inotify knows, but written in place, so
        ``settle`` still applies (it may reopen to append)."""
        with self._lock:
            if self._state.get(path) == WRITING:
                del self._state[path]

    def moved(self, src: str, dest: str) -> None:
        """A rename; ``dest`` is "" when moved out of the watched tree, ``src`` "" when
        moved in from outside it."""
        with self._lock:
            before = self._state.pop(src, None) if src else None
            if dest:
                self._state[dest] = WRITING if before == WRITING else MOVED

    def forget(self, path: str) -> None:
        """Created (a new inode under this name) or deleted: nothing known."""
        with self._lock:
            self._state.pop(path, None)

    def lost(self) -> None:
        """Events were lost (queue overflow, a rebuilt observer): forget everything."""
        with self._lock:
            self._state.clear()

    def __len__(self) -> int:
        return len(self._state)

    @staticmethod
    def key(path: str | os.PathLike[str]) -> str:
        return os.fsdecode(path)
