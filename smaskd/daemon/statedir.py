"""The daemon's ``state_dir``: created, checked writable and locked before anything else runs.

Why a lock of its own: the journal is one SQLite file per ``state_dir``, and two daemons on one
journal (two host ids, one copied config) would each recover, retry and fail the other's jobs
from its rows, and the one that stops writes "stopped" over the live one's status file. The
per-inbox lock (``claims.lock_processing``) cannot see that: it is keyed by host id. So the
state_dir gets an exclusive ``flock`` for the life of the process, taken first, and a second
daemon is refused like a second one on an inbox (``BusyError``, exit 75), naming the holder.

Every failure here is an operator's to fix and says how: a folder that cannot be created or
written is ``NotWritableError`` (exit 73) naming the path and the user that needs access.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
from pathlib import Path

from smaskd.errors import BusyError, NotWritableError

__all__ = ["LOCK_FILE", "daemon_user", "lock_state_dir", "make_state_dir", "not_writable"]

LOCK_FILE = "daemon.lock"
_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}


def daemon_user() -> str:
    """The name of the user the daemon runs as (for "give <user> write access" messages)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def not_writable(path: Path, error: OSError, what: str) -> NotWritableError:
    """A ``NotWritableError`` for ``path`` saying what the daemon's user needs."""
    user = daemon_user()
    if error.errno == errno.EROFS:
        fix = "it is on a read-only filesystem: choose a state_dir on a writable local disk"
    else:
        fix = (f"give the daemon's user {user!r} write access (e.g. chown {user} {path}), or "
               "choose another state_dir")
    return NotWritableError(f"{what} cannot be written ({error.strerror}): {fix}", str(path))


def make_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` (and its parents) or say why it cannot be."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    except FileExistsError:
        raise NotWritableError("exists and is not a folder; state_dir must be a folder",
                               str(state_dir)) from None
    except OSError as e:
        if e.errno in _ACCESS:
            raise not_writable(state_dir, e, "state_dir") from None
        raise


def lock_state_dir(state_dir: Path) -> int:
    """Create ``state_dir`` if needed and hold its lock; the fd lives as long as the process
    (a second lock of the same file in this process would fail: flock is per open file)."""
    make_state_dir(state_dir)
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    except OSError as e:
        if e.errno in _ACCESS:
            raise not_writable(state_dir, e, "state_dir") from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise BusyError(f"another smaskd (pid {holder}) is running with this state_dir; "
                            "give each daemon its own state_dir", str(state_dir)) from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
