"""Intake: which names in an inbox are candidates, and when a candidate is ready to claim.

Why level-triggered: watchdog events arrive early, twice or never (inotify overflows, shares
where inotify is blind), so the directory listing is the truth and events only say "look
again soon". Where inotify's completion signals are known (``signals.py``) they decide: a
file written since its last close-after-write is never ready, however long its writer
pauses; a file renamed into the inbox is ready at once. Otherwise a file becomes ready when
its (device, inode, size, mtime) have not changed for ``settle`` seconds on the local
monotonic clock, and its bytes look complete: a zip must have its end-of-central-directory
record, a JSON file must end in ``}`` or ``]``. An incomplete file is "not ready", not failed,
until ``grace`` passes (a slow writer or a stalled copy); a prefix that merely looks complete
is caught after the claim (``unfinished.py``). Symlinks, FIFOs, sockets and devices are
reported by ``lstat`` and never opened.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from smaskd.config import Inbox
from smaskd.daemon import markers
from smaskd.daemon.signals import MOVED, WRITING, Completion

__all__ = ["DEFAULT_IGNORE", "Candidate", "Intake", "is_ignored", "looks_complete", "scan_inbox"]

#: Temp and hidden names of common writers (rsync, rclone, browsers, WinSCP, Office, vim, NFS),
#: and the files and folders desktops and NAS boxes add by themselves: Windows Explorer
#: (Thumbs.db, desktop.ini, $RECYCLE.BIN), macOS (.DS_Store and ._* are hidden names; Icon\r),
#: Synology (@eaDir, #recycle), filesystems (lost+found, System Volume Information).
#: Matched case-insensitively, on every name (so a folder's name skips the folder).
DEFAULT_IGNORE = (".*", "*.tmp", "*.part", "*.partial", "*.filepart", "*.crdownload", "~$*",
                  "*.swp", ".nfs*", "*~", "Thumbs.db", "ehthumbs.db", "ehthumbs_vista.db",
                  "desktop.ini", "Icon\r", "$RECYCLE.BIN", "System Volume Information",
                  "@eaDir", "#recycle", "#snapshot", "lost+found")

Signature = tuple[int, int, int, int]


@functools.lru_cache(maxsize=64)
def _ignore_regex(extra: tuple[str, ...]) -> re.Pattern[str]:
    # One compiled alternation instead of a dozen fnmatch calls per name: a scan of an inbox
    # holding thousands of files runs this once per name, on every scan.
    return re.compile("|".join(fnmatch.translate(p.lower()) for p in (*DEFAULT_IGNORE, *extra)))


def is_ignored(name: str, extra: tuple[str, ...] = ()) -> bool:
    """Hidden/temp names and the inbox's ``ignore`` globs (case-insensitive, on the name)."""
    return _ignore_regex(tuple(extra)).match(name.lower()) is not None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A name seen in an inbox, with its ``lstat`` result."""

    path: Path
    rel: str  # path relative to the inbox ("a.json", or "sub/a.json" when recursive)
    st: os.stat_result
    #: renamed into the inbox and not open for writing (inotify): complete, so a parse
    #: failure is the input's fault, never "still being written"
    moved_in: bool = False
    #: when the intake first found its bytes incomplete (monotonic), carried into the job
    #: so ``grace`` is counted once from there, not again after the claim
    incomplete_since: float | None = None

    @property
    def kind(self) -> str:
        if stat.S_ISREG(self.st.st_mode):
            return "file"
        if stat.S_ISLNK(self.st.st_mode):
            return "symlink"
        return "special"

    @property
    def signature(self) -> Signature:
        return (self.st.st_dev, self.st.st_ino, self.st.st_size, self.st.st_mtime_ns)


def _own_dirs(inbox: Inbox) -> set[Path]:
    """done/ and failed/ inside the inbox are outputs of ours, never inputs."""
    return {d for d in (inbox.done_dir, inbox.failed_dir) if d.is_relative_to(inbox.path)}


def scan_inbox(inbox: Inbox, skipped: dict[str, str] | None = None) -> Iterator[Candidate]:
    """Every non-ignored non-directory name in the inbox (``lstat`` only, nothing opened).

    A folder that cannot be listed or followed (no permission, a chain of folders longer
    than PATH_MAX, a share's error) is skipped, not fatal: the rest of the inbox is still
    scanned, and ``skipped`` (relative path → reason) tells the caller, which reports it.
    """
    skip = _own_dirs(inbox)
    ignored = _ignore_regex(tuple(inbox.ignore))
    stack: list[tuple[Path, str]] = [(inbox.path, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone since its parent was listed
        except OSError as e:
            if skipped is not None:
                skipped[prefix.rstrip("/") or "."] = _reason(e)
            continue
        for entry in entries:
            if ignored.match(entry.name.lower()):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as e:  # e.g. ENAMETOOLONG: its path is longer than PATH_MAX
                if skipped is not None:
                    skipped[prefix + entry.name] = _reason(e)
                continue
            path = folder / entry.name
            if path in skip:  # our done/ or failed/, even when someone swapped in a symlink
                continue
            if stat.S_ISDIR(st.st_mode):
                if inbox.recursive:
                    stack.append((path, f"{prefix}{entry.name}/"))
                continue
            yield Candidate(path, prefix + entry.name, st)


def _reason(error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0, str(error.errno))
    return f"{error.strerror or error} ({code})"


def shorten(rel: str, keep: int = 120) -> str:
    """A relative path fit for a status line: a chain longer than PATH_MAX is 4 KiB long."""
    if len(rel) <= keep:
        return rel
    return f"{rel[: keep // 2]}…{rel[-keep // 2:]} ({len(rel.encode())} bytes)"


def looks_complete(path: Path) -> bool:
    """Cheap "has the writer finished?" test on the bytes, never following a symlink.

    A zip is written front to back with the central directory last; JSON ends with its
    closing bracket. Anything else is judged by stability alone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        return True  # no wait makes it readable: claim it, fail it naming the permission
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return False
        head = os.pread(fd, 4, 0)
        tail_len = min(st.st_size, 65536 + 22)
        tail = os.pread(fd, tail_len, st.st_size - tail_len)
    finally:
        os.close(fd)
    if head.startswith(b"PK"):
        return b"PK\x05\x06" in tail
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"{", b"[") or head.startswith(b"\xef\xbb\xbf"):
        return tail.rstrip(b" \t\r\n\x00")[-1:] in (b"}", b"]")
    return True


@dataclass(slots=True)
class _Seen:
    signature: Signature
    since: float  # monotonic time the signature last changed
    incomplete_since: float | None = None


#: The longest wait between two looks at a file that is not complete yet.
INCOMPLETE_MAX_WAIT = 5.0


@dataclass(slots=True)
class Intake:
    """Per-inbox stability tracking between scans.

    ``backlog`` is the number of files the last :meth:`poll` found ready but did not offer
    because of its ``limit``: they stay in the inbox, unclaimed, until the daemon's queue has
    room. That is what bounds the daemon's memory in a burst of thousands of files: nothing
    is claimed (or held as a job) beyond the queue limit, and the directory listing, not an
    event queue, remembers the rest.
    """

    inbox: Inbox
    settle: float
    #: inotify's completion signals for this inbox; None where the observer polls
    signals: Completion | None = None
    seen: dict[Path, _Seen] = field(default_factory=dict)
    left: dict[Path, Signature] = field(default_factory=dict)  # unmatched+leave / refused specials
    #: why a left file was left, for STATUS (an input failed in place); goes with ``left``
    reasons: dict[Path, str] = field(default_factory=dict)
    backlog: int = 0
    #: When a poll can next change anything for the files seen so far: the earliest end of
    #: a settle period, or the next look at an incomplete file (backing off to every 5 s).
    #: Without new events nothing is ready sooner, so the service need not list the inbox
    #: before then: one file still being written must not cost a listing 4 times a second.
    next_due: float = 0.0
    #: folders (and names) below the inbox the last full listing could not look into:
    #: relative path → reason (reported once by the service, and in STATUS while they last)
    skipped: dict[str, str] = field(default_factory=dict)
    #: data files the last full listing found without a valid ready marker (markers.py),
    #: for STATUS: they are never ``seen`` (nothing settles until the marker comes), so a
    #: partial listing cannot see them, and their marker or removal wakes a full listing
    unmarked: set[Path] = field(default_factory=set)

    def _listing(self, full: bool) -> Iterator[Candidate]:
        """The inbox's names (``full``), or only those already being watched: between two
        listings nothing else can become ready, and an ``lstat`` of the few files still
        settling is far cheaper than listing an inbox that holds thousands of left files."""
        if full:
            skipped: dict[str, str] = {}
            yield from scan_inbox(self.inbox, skipped)
            self.skipped = skipped
            return
        for path in list(self.seen):
            try:
                st = os.lstat(path)
            except OSError:
                continue  # gone: dropped from ``seen`` below
            if not stat.S_ISDIR(st.st_mode):
                yield Candidate(path, path.relative_to(self.inbox.path).as_posix(), st)

    def poll(self, now: float | None = None, startup: bool = False,
             limit: int | None = None, full: bool = True) -> tuple[list[Candidate], int]:
        """Scan once: (candidates ready to claim, number still settling or not ready).

        At start-up a file whose mtime is already ``settle`` old counts as settled, so files
        present before the daemon started are claimed before READY=1; later arrivals are
        always watched for ``settle`` seconds (``cp -p``/``mv`` carry old mtimes).
        At most ``limit`` candidates are returned, oldest first; only those are opened for
        the completeness check, so a scan of a big backlog stays one ``lstat`` per name.
        """
        now = time.monotonic() if now is None else now
        wall = time.time()
        settled: list[tuple[Candidate, _Seen]] = []
        pending = 0
        due = float("inf")
        present: set[Path] = set()
        unmarked: set[Path] = set()
        for cand in self._listing(full):
            present.add(cand.path)
            if self.left.get(cand.path) == cand.signature:
                continue
            self.left.pop(cand.path, None)
            marked = markers.state(self.inbox, cand.path, cand.st)
            if marked == markers.UNMARKED:
                unmarked.add(cand.path)
            if marked in (markers.MARKER, markers.UNMARKED):
                continue  # a ready marker, or a file not marked done yet (markers.py)
            signal = self.signals.state(str(cand.path)) if self.signals is not None else None
            if signal == WRITING:
                # Open for writing since its last write: not a candidate, however long the
                # writer pauses. Its close-after-write wakes us; settle counts from then.
                self.seen[cand.path] = _Seen(cand.signature, now)
                pending += 1
                continue
            if (signal == MOVED or marked == markers.MARKED) and cand.kind == "file":
                # watched like a settled file, so a backlog's partial listings still see it
                seen = self.seen[cand.path] = _Seen(cand.signature, now - self.settle - 1.0)
                settled.append((replace(cand, moved_in=True), seen))
                continue
            seen = self.seen.get(cand.path)
            if seen is None or seen.signature != cand.signature:
                age = wall - cand.st.st_mtime_ns / 1e9
                fresh = self.settle <= 0 or (startup and seen is None
                                             and self.settle <= age < 10 * 365 * 86400)
                seen = self.seen[cand.path] = _Seen(cand.signature,
                                                    now - self.settle - 1.0 if fresh else now)
                if not fresh:
                    pending += 1
                    due = min(due, seen.since + self.settle)
                    continue
            if now - seen.since < self.settle:
                pending += 1
                due = min(due, seen.since + self.settle)
                continue
            settled.append((cand, seen))
        for path in [p for p in self.seen if p not in present]:
            del self.seen[path]
        if full:
            for path in [p for p in self.left if p not in present]:
                del self.left[path]
            self.unmarked = unmarked
        for path in [p for p in self.reasons if p not in self.left]:
            del self.reasons[path]  # changed or gone: it is a new drop
        settled.sort(key=lambda cs: (cs[0].st.st_mtime_ns, cs[0].rel))  # oldest first (Logstash)
        ready: list[Candidate] = []
        self.backlog = 0
        for cand, seen in settled:
            if limit is not None and len(ready) >= limit:
                self.backlog += 1
                continue
            if cand.kind == "file" and not cand.moved_in and not looks_complete(cand.path):
                seen.incomplete_since = seen.incomplete_since or now
                waited = now - seen.incomplete_since
                if waited < self.inbox.grace:
                    pending += 1
                    look_again = min(INCOMPLETE_MAX_WAIT, max(0.05, waited / 4))
                    due = min(due, now + look_again, seen.incomplete_since + self.inbox.grace)
                    continue
            if seen.incomplete_since is not None:
                cand = replace(cand, incomplete_since=seen.incomplete_since)
            ready.append(cand)
        self.next_due = due
        return ready, pending

    def reset(self) -> None:
        """Forget every stability clock (an inbox that vanished and came back: a remounted
        share may hold other bytes under the same names, so everything settles again)."""
        self.seen.clear()
        self.left.clear()
        self.skipped = {}
        self.reasons.clear()
        self.unmarked.clear()
        self.backlog = 0

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)

    def leave(self, cand: Candidate, reason: str | None = None) -> None:
        """Do not offer this file again until it changes (logged once by the caller);
        a ``reason`` is reported in STATUS for as long as it is left."""
        self.left[cand.path] = cand.signature
        self.seen.pop(cand.path, None)
        if reason is not None:
            self.reasons[cand.path] = reason
