"""Publishing into outboxes and moving inputs into done/ and failed/.

Why this shape: a reader of the outbox (a person, CVAT, the next pipeline stage) must never
see a half-written file, so every file is written under a hidden staging name in the *target*
folder (``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink planted there is never written through),
fsynced, and then given its final name. Keep-both publishing uses ``link()``, which fails
instead of clobbering when a name appears concurrently; ``replace`` uses ``rename()``. Neither
follows a symlink at the destination. A crash between link and unlink leaves both names on
one inode, which recovery recognises.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smaskd.atomicio import fsync_dir

__all__ = ["move_input", "output_stem", "pick_names", "publish", "staging_path", "write_new",
           "write_staging"]

_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def output_stem(name: str) -> str:
    """``a.json`` → ``a``; ``a`` → ``a``; ``.x`` stays (hidden names never get here anyway)."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def _variants(stem: str) -> Iterator[str]:
    yield stem
    n = 1
    while True:
        yield f"{stem}-{n}"
        n += 1


def pick_names(folder: Path, stem: str, suffixes: list[str], on_conflict: str) -> str | None:
    """A stem under which none of ``stem+suffix`` exists (rename), the stem itself (replace),
    or None when it exists and the rule says skip."""
    if on_conflict == "replace":
        return stem
    if on_conflict == "skip":
        return None if any(os.path.lexists(folder / f"{stem}{s}") for s in suffixes) else stem
    for candidate in _variants(stem):
        if not any(os.path.lexists(folder / f"{candidate}{s}") for s in suffixes):
            return candidate
    raise AssertionError("unreachable")


def staging_path(folder: Path, job_id: str, suffix: str) -> Path:
    """Hidden (so no watcher picks it up) and tied to the job (so recovery can find it)."""
    return folder / f".smaskd-{job_id}{suffix}"


def write_staging(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively, never through a symlink, and make its bytes durable."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a leftover of a crashed attempt of this same job
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(staging: Path, final: Path, replace: bool) -> None:
    """Give ``staging`` its final name atomically; FileExistsError if keep-both lost a race."""
    if replace:
        os.replace(staging, final)
    else:
        try:
            os.link(staging, final, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.EEXIST:
                if _same_file(staging, final):  # a crash after link, before unlink
                    os.unlink(staging)
                    return
                raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
            if e.errno not in _NO_LINK:
                raise
            if os.path.lexists(final):  # a filesystem without hard links (some SMB servers)
                raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
            os.rename(staging, final)
        else:
            os.unlink(staging)
    fsync_dir(final.parent)


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def write_new(folder: Path, stem: str, suffix: str, data: bytes, mode: int, job_id: str) -> Path:
    """Write a small file (a failed job's log) atomically under a keep-both name."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = staging_path(folder, job_id, f"{suffix}.new")
    write_staging(staging, data, mode)
    for candidate in _variants(stem):
        target = folder / f"{candidate}{suffix}"
        if os.path.lexists(target):
            continue
        try:
            publish(staging, target, replace=False)
            return target
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def move_input(src: Path, folder: Path, name: str) -> Path:
    """Move a claimed input into done/ or failed/ keeping both on a name collision.

    ``link(follow_symlinks=False)`` moves a symlink itself, never its target. Across
    filesystems (done: on another disk) it falls back to copy+delete.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem, dot, ext = name.rpartition(".")
    base, suffix = (stem, f".{ext}") if dot and stem else (name, "")
    for candidate in _variants(base):
        target = folder / f"{candidate}{suffix}"
        if os.path.lexists(target):
            continue
        try:
            os.link(src, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
            shutil.move(str(src), str(target))
            return target
        os.unlink(src)
        fsync_dir(folder)
        return target
    raise AssertionError("unreachable")


def report_bytes(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, default=str, ensure_ascii=False) + "\n").encode()
