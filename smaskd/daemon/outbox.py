"""Publishing into outboxes and moving inputs into done/ and failed/.

Why this shape: a reader of the outbox (a person, CVAT, the next pipeline stage) must never
see a half-written file, so every file is written under a hidden staging name in the *target*
folder (``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink planted there is never written through),
fsynced, and then given its final name. Keep-both publishing uses ``link()``, which fails
instead of clobbering when a name appears concurrently; ``replace`` uses ``rename()``. Neither
follows a symlink at the destination. A crash between link and unlink leaves both names on
one inode, which recovery recognises.

done/ and failed/ live inside the inbox by default, where everyone who drops files can also
rename folders, so they are opened with ``O_NOFOLLOW`` (``open_folder``; ``move_input`` then
works through that descriptor): a ``done`` replaced by a symlink to ``~/.ssh`` gets an
``ELOOP`` error, never an input. Folders
are created one level at a time (no ``parents=True``): if the inbox itself vanished (an
unmounted share) we fail instead of building an empty local copy under the mount point.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from smaskd.atomicio import fsync_dir

__all__ = ["NO_LINK", "move_input", "open_folder", "output_stem", "pick_names", "publish",
           "real_folder", "same_inode", "staging_files", "staging_path", "write_staging"]

NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


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


#: A staging file (``.smaskd-<job id>…``) or the worker's temp file beside it (``..smaskd-…``).
STAGING_NAME = re.compile(r"^\.{1,2}smaskd-(\d{8}T\d{6}-[0-9a-f]{8})")


def staging_files(folders: Iterable[Path]) -> Iterator[tuple[os.DirEntry, str]]:
    """(entry, job id) of every staging or worker temp file in ``folders`` (unreadable
    folders are skipped: the next sweep tries again)."""
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = STAGING_NAME.match(entry.name)
            if m:
                yield entry, m.group(1)


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
                try:
                    st = os.lstat(staging)
                except OSError:
                    st = None
                if st is not None and same_inode(st, final):  # a crash after link, before unlink
                    os.unlink(staging)
                    return
                raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
            if e.errno not in NO_LINK:
                raise
            if os.path.lexists(final):  # a filesystem without hard links (some SMB servers)
                raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
            os.rename(staging, final)
        else:
            os.unlink(staging)
    fsync_dir(final.parent)


def same_inode(st: os.stat_result, path: Path) -> bool:
    """``path`` is the file ``st`` describes (a hard link made before a crash, say)."""
    try:
        other = os.lstat(path)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def open_folder(folder: Path) -> int:
    """A descriptor of ``folder`` (created if missing, its parent must exist), refusing a
    symlink in the last component: ``OSError(ELOOP)`` naming the folder."""
    try:
        folder.mkdir()
    except FileExistsError:
        pass
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(folder):
            raise OSError(errno.ELOOP, "is a symlink; refusing to write through it",
                          str(folder)) from None
        raise


def real_folder(folder: Path) -> Path:
    """``folder``, created if missing (one level), or ``OSError(ELOOP)`` if it is a symlink.

    For callers that then work by path: it narrows, but cannot close, the window in which a
    user who can write the inbox swaps done/ for a symlink; ``move_input`` closes it.
    """
    os.close(open_folder(folder))
    return folder


def move_input(src: Path, folder: Path, name: str) -> Path:
    """Move a claimed input into done/ or failed/ keeping both on a name collision.

    ``link(follow_symlinks=False)`` moves a symlink itself, never its target, and the link
    is made relative to a descriptor of ``folder`` opened with ``O_NOFOLLOW``, so a folder
    swapped for a symlink is refused rather than written through. Across filesystems (done:
    on another disk) it falls back to copy+delete through the same descriptor.
    """
    stem, dot, ext = name.rpartition(".")
    base, suffix = (stem, f".{ext}") if dot and stem else (name, "")
    dfd = open_folder(folder)
    try:
        for candidate in _variants(base):
            target = f"{candidate}{suffix}"
            if _exists_at(target, dfd):
                continue
            try:
                os.link(src, target, dst_dir_fd=dfd, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in NO_LINK:
                    raise
                if not _copy_into(src, target, dfd):
                    continue
            os.unlink(src)
            os.fsync(dfd)
            return folder / target
    finally:
        os.close(dfd)
    raise AssertionError("unreachable")


def _exists_at(name: str, dfd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    return True


def _copy_into(src: Path, name: str, dfd: int) -> bool:
    """Copy ``src`` to ``name`` in the folder ``dfd``; False if the name was taken meanwhile."""
    st = os.lstat(src)
    if stat.S_ISLNK(st.st_mode):
        try:
            os.symlink(os.readlink(src), name, dir_fd=dfd)
        except FileExistsError:
            return False
        return True
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      stat.S_IMODE(st.st_mode), dir_fd=dfd)
    except FileExistsError:
        return False
    try:
        with open(src, "rb") as fh, os.fdopen(out, "wb", closefd=False) as dst:
            shutil.copyfileobj(fh, dst, 1 << 20)
            dst.flush()
            os.fsync(out)
    except BaseException:
        os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dfd)
        raise
    os.close(out)
    return True


def report_bytes(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, default=str, ensure_ascii=False) + "\n").encode()
