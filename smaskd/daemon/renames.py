"""A rename that never replaces: ``renameat2(RENAME_NOREPLACE)``.

Why: inputs move by ``link`` + ``unlink`` (a name clash fails instead of clobbering), but the
kernel refuses to link a file the daemon neither owns nor can read and write when
``fs.protected_hardlinks`` is on (EPERM), which is exactly the case of another user's
unreadable file. A plain ``rename`` would work there, but replaces whatever holds the target
name; ``RENAME_NOREPLACE`` makes the kernel refuse that atomically. Where the call or the
flag is missing (old kernels, some network filesystems) the fallback checks the name first:
a narrow race, only on those filesystems.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

__all__ = ["rename_noreplace"]

_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_noreplace(src: Path | str, dst: Path | str, src_dir_fd: int | None = None,
                     dst_dir_fd: int | None = None) -> None:
    """Rename ``src`` to ``dst`` (each relative to its folder descriptor, if given);
    FileExistsError if ``dst`` exists, OSError(EXDEV) across filesystems, like ``os.rename``
    otherwise."""
    if _renameat2 is not None:
        sfd = _AT_FDCWD if src_dir_fd is None else src_dir_fd
        dfd = _AT_FDCWD if dst_dir_fd is None else dst_dir_fd
        if _renameat2(sfd, os.fsencode(src), dfd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    try:
        os.lstat(dst, dir_fd=dst_dir_fd)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
