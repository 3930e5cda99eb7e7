"""Atomic file output: temp name in the target folder, fsync, rename.

Readers of a folder (users, CVAT uploads, the next pipeline stage) must never see a
half-written file, and a crash must leave either the old state or the new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_writer", "fsync_dir"]


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, without the set-and-restore race of ``os.umask`` where possible."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` only if the block completes.

    The temp file is a dot-name in the same folder (so the rename is atomic and watch
    folders ignore it); on any exception it is removed and ``path`` is untouched.
    ``mkstemp`` makes it 0600; the result gets ``mode``, by default what ``open()`` would
    have given (0666 less the umask), so a user's umask still decides who may read it.
    """
    if mode is None:
        mode = 0o666 & ~_umask()
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
