"""Intake: which names in an inbox are candidates, and when a candidate is ready to claim.

Why level-triggered: watchdog events arrive early, twice or never (inotify overflows, shares
where inotify is blind), so the directory listing is the truth and events only say "look
again soon". A file becomes ready when its (device, inode, size, mtime) have not changed for
``settle`` seconds on the local monotonic clock, and its bytes look complete: a zip must have
its end-of-central-directory record, a JSON file must end in ``}`` or ``]``. An incomplete file
is "not ready", not failed, until ``grace`` passes (a slow writer or a stalled copy).
Symlinks, FIFOs, sockets and devices are reported by ``lstat`` and never opened.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smaskd.config import Inbox

__all__ = ["DEFAULT_IGNORE", "Candidate", "Intake", "is_ignored", "looks_complete", "scan_inbox"]

#: Temp and hidden names of common writers (rsync, rclone, browsers, WinSCP, Office, vim, NFS).
DEFAULT_IGNORE = (".*", "*.tmp", "*.part", "*.partial", "*.filepart", "*.crdownload", "~$*",
                  "*.swp", ".nfs*", "*~")

Signature = tuple[int, int, int, int]


def is_ignored(name: str, extra: tuple[str, ...] = ()) -> bool:
    """Hidden/temp names and the inbox's ``ignore`` globs (case-insensitive, on the name)."""
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, p.lower()) for p in (*DEFAULT_IGNORE, *extra))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A name seen in an inbox, with its ``lstat`` result."""

    path: Path
    rel: str  # path relative to the inbox ("a.json", or "sub/a.json" when recursive)
    st: os.stat_result

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


def scan_inbox(inbox: Inbox) -> Iterator[Candidate]:
    """Every non-ignored non-directory name in the inbox (``lstat`` only, nothing opened)."""
    skip = _own_dirs(inbox)
    stack = [inbox.path]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if is_ignored(entry.name, inbox.ignore):
                continue
            path = Path(entry.path)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if inbox.recursive and path not in skip:
                    stack.append(path)
                continue
            yield Candidate(path, path.relative_to(inbox.path).as_posix(), st)


def looks_complete(path: Path) -> bool:
    """Cheap "has the writer finished?" test on the bytes, never following a symlink.

    A zip is written front to back with the central directory last; JSON ends with its
    closing bracket. Anything else is judged by stability alone.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
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


@dataclass(slots=True)
class Intake:
    """Per-inbox stability tracking between scans."""

    inbox: Inbox
    settle: float
    seen: dict[Path, _Seen] = field(default_factory=dict)
    left: dict[Path, Signature] = field(default_factory=dict)  # unmatched+leave / refused specials

    def poll(self, now: float | None = None, startup: bool = False) -> tuple[list[Candidate], int]:
        """Scan once: (candidates ready to claim, number still settling or not ready).

        At start-up a file whose mtime is already ``settle`` old counts as settled, so files
        present before the daemon started are claimed before READY=1; later arrivals are
        always watched for ``settle`` seconds (``cp -p``/``mv`` carry old mtimes).
        """
        now = time.monotonic() if now is None else now
        wall = time.time()
        ready: list[Candidate] = []
        pending = 0
        present: set[Path] = set()
        for cand in scan_inbox(self.inbox):
            present.add(cand.path)
            if self.left.get(cand.path) == cand.signature:
                continue
            self.left.pop(cand.path, None)
            seen = self.seen.get(cand.path)
            if seen is None or seen.signature != cand.signature:
                age = wall - cand.st.st_mtime_ns / 1e9
                settled = self.settle <= 0 or (startup and seen is None
                                               and self.settle <= age < 10 * 365 * 86400)
                seen = self.seen[cand.path] = _Seen(cand.signature, now - self.settle - 1.0 if settled else now)
                if not settled:
                    pending += 1
                    continue
            if now - seen.since < self.settle:
                pending += 1
                continue
            if cand.kind == "file" and not looks_complete(cand.path):
                seen.incomplete_since = seen.incomplete_since or now
                if now - seen.incomplete_since < self.inbox.grace:
                    pending += 1
                    continue
            ready.append(cand)
        for path in list(self.seen):
            if path not in present:
                del self.seen[path]
        for path in list(self.left):
            if path not in present:
                del self.left[path]
        ready.sort(key=lambda c: (c.st.st_mtime_ns, c.rel))  # oldest first, like Logstash
        return ready, pending

    def forget(self, path: Path) -> None:
        self.seen.pop(path, None)

    def leave(self, cand: Candidate) -> None:
        """Do not offer this file again until it changes (logged once by the caller)."""
        self.left[cand.path] = cand.signature
        self.seen.pop(cand.path, None)
