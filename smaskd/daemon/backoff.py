"""Jobs held back by the filesystem, not by their input, and when to try them again.

Why a waiting room: an outbox that is full (ENOSPC, EDQUOT), read-only (EROFS) or not
writable (EACCES, EPERM), an inbox that vanished (an unmounted share, a folder renamed away)
and a done/ or failed/ folder replaced by a symlink say nothing about the dropped file.
Failing the job would put a good input into failed/; retrying at once would spawn a worker
per job against a full disk. So such a job waits here, its input still claimed in
processing/, keyed by what blocks it (a :class:`Fault`). One cheap probe per fault, not per
job, decides when to let them all go: 1 s after the fault, then doubling up to
``fault_backoff``. The doubling is per fault and survives a release: a probe that passes
while real writes still fail (4 KiB free, a 40 MB result) backs off as well instead of
looping once a second. Only time resets it: a fault not seen again for twice
``fault_backoff`` after its release starts over at 1 s. Another job getting through the same
folder says nothing about this fault (a small result fits where a big one does not), so no
success resets it.

Transient I/O errors (EIO, ESTALE, EBUSY, ETIMEDOUT: a share that hiccups) are faults too:
reading an input that fails so waits behind a ``read`` probe of that input, never fails it.
A worker that crashed or timed out waits behind an ``after`` fault (no probe: only time) before
its retry. Every delay is jittered (±25 %), so jobs parked together do not retry in lockstep
against a share that is just coming back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from smaskd.config import Inbox
from smaskd.daemon.dirs import FolderSwapped, recheck
from smaskd.daemon.journal import probe_writable

__all__ = ["FAULT_ERRNOS", "TRANSIENT_ERRNOS", "Fault", "Waiter", "Waiting", "classify", "probe"]

#: Errors that describe the place a file is written to, never the input being converted.
FAULT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
#: Errors of the storage, not of the bytes: the same read may well succeed a moment later.
TRANSIENT_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.EBUSY, errno.ETIMEDOUT})
JITTER = 0.25
#: Of those, the ones a read can raise as well (an unreadable input is the input's problem).
_ALSO_ON_READ = frozenset({errno.EACCES, errno.EPERM})
PROBE_BYTES = 64 * 1024
FIRST_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class Fault:
    """What blocks a job: ``probe`` says how to test that it is gone.

    ``probe`` is ``dir`` (the folder exists: an inbox), ``write`` (a file can be written in it:
    an outbox, failed/), ``nolink`` (it is not a symlink: done/, failed/), ``read`` (the file
    can be read: a claimed input), ``after`` (nothing to test: wait, then retry), ``folder``
    (the claim area folder is the one we opened again: ``dirs.recheck``), ``space`` (its
    filesystem has ``need`` bytes free: a spooled result, ``space.py``) or ``journal`` (the
    SQLite file at ``path`` takes a write: ``journal.probe_writable``).
    """

    label: str  # "outbox", "inbox in", "done folder", ...
    path: Path
    reason: str
    probe: str
    need: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.probe, str(self.path))

    def describe(self) -> str:
        return f"{self.label} {self.path} {self.reason}"


def _error_fields(error: BaseException | dict[str, Any] | None) -> tuple[int | None, str | None]:
    """(errno, filename) from an exception or from a worker's error report."""
    if isinstance(error, OSError):
        # link/rename name the destination second: that is the folder being written
        name = error.filename2 or error.filename
        return error.errno, os.fsdecode(name) if name else None
    if isinstance(error, dict):
        return error.get("errno"), error.get("filename")
    return None, None


def _under(filename: str, folder: Path) -> bool:
    return os.path.dirname(os.path.normpath(filename)) == os.path.normpath(folder)


def classify(inbox: Inbox, outbox: Path | None,
             error: BaseException | dict[str, Any] | None,
             source: Path | None = None, name: str = "") -> Fault | None:
    """The fault behind ``error`` for a job of ``inbox`` publishing to ``outbox`` (its
    input ``name``, claimed at ``source``), or None when the error is the job's own (bad input, a
    bug) and the job should fail as usual."""
    if not os.path.isdir(inbox.path):
        return Fault(f"inbox {inbox.name}", inbox.path, "is missing (unmounted share? renamed?)",
                     "dir")
    if outbox is not None and not os.path.isdir(outbox.parent):
        return Fault("outbox", outbox.parent, "is missing (unmounted share? renamed?); the "
                     f"outbox {outbox} is not created under it", "dir")
    code, filename = _error_fields(error)
    if code is None:
        return None
    if isinstance(error, FolderSwapped) and filename and \
            Path(filename).is_relative_to(inbox.path / ".smaskd"):
        return Fault(f"claim folder of inbox {inbox.name}", Path(filename), error.strerror,
                     "folder")
    if code in TRANSIENT_ERRNOS:
        reason = f"failed with {errno.errorcode.get(code, code)} ({os.strerror(code)}); transient"
        if outbox is not None and filename is not None and _under(filename, outbox):
            return Fault("outbox", outbox, reason, "write")
        if source is not None:
            return Fault(f"input {name or Path(source).name} of inbox {inbox.name}, claimed as",
                         Path(source), reason, "read")
        return None
    if code == errno.ELOOP and filename:
        for label, folder in (("done folder", inbox.done_dir), ("failed folder", inbox.failed_dir)):
            if os.path.normpath(filename) == os.path.normpath(folder):
                return Fault(label, folder, "is a symlink; nothing is written through it",
                             "nolink")
        return None
    if code not in FAULT_ERRNOS:
        return None
    reason = f"is not writable: {os.strerror(code)}"
    if outbox is not None and (filename is None or _under(filename, outbox)):
        if code in _ALSO_ON_READ and filename is None:
            return None  # EACCES without a path: nothing says it was the outbox
        return Fault("outbox", outbox, reason, "write")
    if filename is not None and code not in _ALSO_ON_READ:
        folder = Path(os.path.dirname(os.path.normpath(filename)))
        return Fault("folder", folder, reason, "write")
    for label, folder in (("failed folder", inbox.failed_dir), ("done folder", inbox.done_dir)):
        if filename is not None and _under(filename, folder):
            return Fault(label, folder, reason, "write")
    return None


def probe(fault: Fault) -> str | None:
    """None if the fault is gone, else why it is not (a fresh reason for the status)."""
    path = fault.path
    if fault.probe == "after":
        return None
    if fault.probe == "read":
        return _probe_read(path)
    if fault.probe == "folder":  # the claim area: the same folder as before, or still wait
        return recheck(path)
    if fault.probe == "journal":
        return probe_writable(path)
    if fault.probe == "space":
        try:
            free = shutil.disk_usage(path).free
        except OSError as e:
            return f"cannot be checked: {e.strerror}"
        return None if free >= fault.need else f"has {free} bytes free; {fault.need} needed"
    if fault.probe == "dir":
        return None if os.path.isdir(path) else "is missing"
    if fault.probe == "nolink":
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # gone: it will be created as a real folder
        except OSError as e:
            return f"cannot be checked: {e.strerror}"
        return None if stat.S_ISDIR(st.st_mode) else "is a symlink; nothing is written through it"
    # "write": create, fill and remove a hidden file, never through a symlink.
    if not os.path.isdir(path):
        return "is missing"
    name = path / f".smaskd-probe-{os.getpid()}"
    with contextlib.suppress(OSError):
        os.unlink(name)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        return f"is not writable: {e.strerror}"
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    except OSError as e:
        return f"is not writable: {e.strerror}"
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return None


def _probe_read(path: Path) -> str | None:
    """Read the head and the tail of the file (never through a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # gone: the job finds out and reports the claim as lost
    except OSError as e:
        return f"cannot be opened: {e.strerror}"
    try:
        size = os.fstat(fd).st_size
        os.pread(fd, PROBE_BYTES, 0)
        os.pread(fd, PROBE_BYTES, max(0, size - PROBE_BYTES))
    except OSError as e:
        return f"failed with {errno.errorcode.get(e.errno or 0, e.errno)} ({e.strerror})"
    finally:
        os.close(fd)
    return None


def _jittered(delay: float) -> float:
    return delay * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(slots=True)
class Waiter:
    """A parked job and the step to redo: ``run`` (a worker), ``publish`` (the worker's
    result is staged; ``outcome`` holds its report) or ``complete`` (outputs published,
    only the input still has to move)."""

    job: Any
    step: str
    outcome: Any = None


@dataclass(slots=True)
class _Blocker:
    fault: Fault
    since: float
    delay: float
    next_try: float
    waiters: list[Waiter] = field(default_factory=list)


class Waiting:
    """Faults and the jobs parked behind them; used from the daemon's main loop only."""

    def __init__(self, log: Any, cap: float = 60.0, first: float = FIRST_DELAY,
                 probes: dict[str, Callable[[Fault], str | None]] | None = None) -> None:
        self.log, self.cap, self.first = log, cap, first
        self.probes = probes or {}  # extra probe kinds (``overlap``: overlaps.py, via jobs.py)
        self.blockers: dict[tuple[str, str], _Blocker] = {}
        # per fault: (last delay, when it was last released); see the module docstring
        self._delays: dict[tuple[str, str], tuple[float, float]] = {}
        #: told ``(event, fault, facts)`` when a fault starts (``fault_started``) or is gone
        #: (``fault_ended``): notifications.py; must not raise
        self.listeners: list[Callable[[str, Fault, dict[str, Any]], None]] = []

    def __len__(self) -> int:
        return sum(len(b.waiters) for b in self.blockers.values())

    def park(self, fault: Fault, waiter: Waiter, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        blocker = self.blockers.get(fault.key)
        if blocker is None:
            self.note(fault, now)
            blocker = self.blockers[fault.key]
        elif fault.probe == "space" and fault.need < blocker.fault.need:
            blocker.fault = fault  # released once the smallest waiting result fits
        blocker.waiters.append(waiter)
        waiter.job.log.warning("job.waiting", what=fault.label, path=str(fault.path),
                               reason=fault.reason, step=waiter.step)

    def note(self, fault: Fault, now: float | None = None) -> None:
        """Record a fault no job waits behind (a claim undone because the journal failed):
        it shows in STATUS and is probed like the others until it is gone."""
        now = time.monotonic() if now is None else now
        if fault.key not in self.blockers:
            last, released = self._delays.get(fault.key, (None, 0.0))
            fresh = last is None or now - released > 2 * self.cap
            delay = self.first if fresh else min(self.cap, last * 2)
            self._delays[fault.key] = (delay, now)
            self.blockers[fault.key] = _Blocker(fault, now, delay, now + _jittered(delay))
            self.log.error("fault.blocked", what=fault.label, path=str(fault.path),
                           reason=fault.reason, retry_in_s=delay)
            for listener in self.listeners:
                listener("fault_started", fault, {})

    def has(self, probe_kind: str) -> bool:
        """A fault of this kind (``journal``...) is present."""
        return any(key[0] == probe_kind for key in self.blockers)

    def blocking(self, inbox: Path, outbox: Path | None) -> Fault | None:
        """The fault a job of this inbox and outbox would run into now, if any."""
        for blocker in self.blockers.values():
            fault = blocker.fault
            if fault.probe == "space":
                continue  # a result too big for the room left: smaller ones may still fit
            if fault.path == inbox or (outbox is not None and fault.path == outbox):
                return fault
        return None

    def release(self, now: float | None = None) -> list[Waiter]:
        """Probe every fault that is due; the jobs behind those that are gone, oldest first."""
        now = time.monotonic() if now is None else now
        freed: list[Waiter] = []
        for key, blocker in list(self.blockers.items()):
            if now < blocker.next_try:
                continue
            extra = self.probes.get(blocker.fault.probe)
            still = extra(blocker.fault) if extra else probe(blocker.fault)
            if still is None:
                del self.blockers[key]
                self._delays[key] = (blocker.delay, now)
                self.log.info("fault.cleared", what=blocker.fault.label,
                              path=str(blocker.fault.path), released=len(blocker.waiters),
                              blocked_s=round(now - blocker.since, 1))
                freed.extend(blocker.waiters)
                for listener in self.listeners:
                    listener("fault_ended", blocker.fault,
                             {"released": len(blocker.waiters),
                              "blocked_s": round(now - blocker.since, 1)})
                continue
            blocker.delay = min(self.cap, blocker.delay * 2)
            self._delays[key] = (blocker.delay, now)
            blocker.next_try = now + _jittered(blocker.delay)
            if still != blocker.fault.reason:
                blocker.fault = replace(blocker.fault, reason=still)
            self.log.warning("fault.persists", what=blocker.fault.label,
                             path=str(blocker.fault.path), reason=still,
                             waiting=len(blocker.waiters), retry_in_s=blocker.delay)
        return freed

    def next_due(self) -> float | None:
        return min((b.next_try for b in self.blockers.values()), default=None)

    def describe(self) -> list[str]:
        """One phrase per fault for STATUS= and ``smaskd status``. Nothing in it changes
        from tick to tick (no countdown), so the daemon can send it whenever it changes."""
        return [f"{b.fault.describe()}; {len(b.waiters)} job(s) waiting "
                f"(retrying every {b.delay:g} s)" for b in self.blockers.values()]
