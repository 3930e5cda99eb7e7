"""Publishing into outboxes and moving inputs into done/ and failed/.

Why this shape: a reader of the outbox (a person, CVAT, the next pipeline stage) must never
see a half-written file, so every file is written under a hidden staging name in the *target*
folder (``O_CREAT|O_EXCL|O_NOFOLLOW``: a symlink planted there is never written through),
fsynced, and then given its final name. Keep-both publishing uses ``link()``, which fails
instead of clobbering when a name appears concurrently; ``replace`` uses ``rename()``. Neither
follows a symlink at the destination. A crash between link and unlink leaves both names on
one inode, which recovery recognises.

done/ and failed/ live inside the inbox by default, where everyone who drops files can also
rename folders, so every folder here is used through a descriptor (``dirs.place``) that is
re-validated against its path before each use: a ``done`` replaced by a symlink to ``~/.ssh``
gets an ``ELOOP`` error, never an input, and one renamed away is not followed. Folders
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

from smaskd.daemon import dirs

__all__ = ["NO_LINK", "copy_into", "link_input", "move_input", "name_variants", "open_folder", "output_stem",
           "pick_names", "publish", "real_folder", "same_inode", "split_name", "staging_files",
           "staging_path", "write_staging"]

NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def output_stem(name: str) -> str:
    """``a.json`` → ``a``; ``a`` → ``a``; ``.x`` stays (hidden names never get here anyway)."""
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def name_variants(stem: str) -> Iterator[str]:
    """``stem``, ``stem-1``, ``stem-2`` ...: the keep-both names, in the order they are tried."""
    yield stem
    n = 1
    while True:
        yield f"{stem}-{n}"
        n += 1


def pick_names(folder: Path, stem: str, suffixes: list[str], on_conflict: str) -> str | None:
    """A stem under which none of ``stem+suffix`` exists (rename), the stem itself (replace),
    or None when it exists and the rule says skip (looked up through the folder's descriptor)."""
    if on_conflict == "replace":
        return stem
    place = dirs.place(folder)
    if on_conflict == "skip":
        return None if any(place.exists(f"{stem}{s}") for s in suffixes) else stem
    for candidate in name_variants(stem):
        if not any(place.exists(f"{candidate}{s}") for s in suffixes):
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
    place = dirs.place(path.parent)
    place.unlink(path.name)  # a leftover of a crashed attempt of this same job
    place.write_new(path.name, data, mode, exact_mode=True)


def publish(staging: Path, final: Path, replace: bool, sync: bool = True) -> None:
    """Give ``staging`` its final name atomically; FileExistsError if keep-both lost a race.

    Each name is used through its folder's descriptor: one folder, or with ``keep_tree``
    the outbox (staging) and a sub-folder of it (final; trees.py). A staging file that is
    gone while ``final`` exists was published by another host finishing the same plan (a
    takeover of a stalled host): that is done, not an error. ``sync=False``: the caller
    fsyncs both folders once after several renames (before it records them).
    """
    place = dirs.place(final.parent)
    src = dirs.place(staging.parent)
    try:
        if replace:
            os.replace(staging.name, final.name, src_dir_fd=src.fd(), dst_dir_fd=place.fd())
        else:
            _link_staging(src, staging.name, place, final.name)
    except FileNotFoundError:
        if src.exists(staging.name) or not place.exists(final.name):
            raise
    if sync:
        place.sync()
        if src is not place:
            src.sync()


def _link_staging(src: dirs.Folder, staging: str, place: dirs.Folder, final: str) -> None:
    sfd, fd = src.fd(), place.fd()
    try:
        os.link(staging, final, src_dir_fd=sfd, dst_dir_fd=fd, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.EEXIST:
            try:
                st = src.lstat(staging)
            except FileNotFoundError:
                raise
            except OSError:
                st = None
            if st is not None and _same(st, place, final):  # a crash after link, before unlink
                src.unlink(staging)
                return
            raise FileExistsError(errno.EEXIST, "exists", str(place.path / final)) from None
        if e.errno not in NO_LINK:
            raise
        if place.exists(final):  # a filesystem without hard links (some SMB servers)
            raise FileExistsError(errno.EEXIST, "exists", str(place.path / final)) from None
        os.rename(staging, final, src_dir_fd=sfd, dst_dir_fd=fd)
    else:
        src.unlink(staging)


def _same(st: os.stat_result, place: dirs.Folder, name: str) -> bool:
    try:
        other = place.lstat(name)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def same_inode(st: os.stat_result, path: Path) -> bool:
    """``path`` is the file ``st`` describes (a hard link made before a crash, say)."""
    try:
        return _same(st, dirs.place(path.parent), path.name)
    except OSError:
        return False


def open_folder(folder: Path) -> int:
    """A new descriptor of ``folder`` (created if missing, its parent must exist), refusing
    a symlink in the last component: ``OSError(ELOOP)`` naming the folder."""
    return os.dup(dirs.place(folder).fd())


def real_folder(folder: Path) -> Path:
    """``folder``, created if missing (one level), or ``OSError(ELOOP)`` if it is a symlink."""
    dirs.place(folder).fd()
    return folder


#: A folder that keeps being swapped while we link into it is given up on after this many
#: tries (the job waits: backoff.py); each try is a link and an unlink.
SWAP_TRIES = 50


def link_input(src_dir: int, src: str, folder: Path, name: str, sync: bool = True) -> Path:
    """Link ``src`` (in the folder ``src_dir``) into done/ or failed/ keeping both on a name
    clash; the source stays (the caller records the target, then unlinks it).

    ``link(follow_symlinks=False)`` moves a symlink itself, never its target, and the link is
    made relative to the folder's descriptor, re-validated before and after: a folder renamed
    away or swapped for a symlink meanwhile gets the link removed again and the move retried,
    so the returned path is where the input is. Across filesystems (done: on another disk) it
    falls back to a copy through the same descriptor. ``sync=False``: the caller fsyncs
    ``folder`` (before it records the move).
    """
    base, suffix = split_name(name)
    place = dirs.place(folder)
    for _ in range(SWAP_TRIES):
        dfd = place.fd()
        target = None
        for candidate in name_variants(base):
            target = f"{candidate}{suffix}"
            if place.exists(target):
                continue
            try:
                os.link(src, target, src_dir_fd=src_dir, dst_dir_fd=dfd, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in NO_LINK:
                    raise
                if not copy_into(src_dir, src, target, dfd):
                    continue
            break
        assert target is not None
        if place.matches():
            if sync:
                place.sync()
            return folder / target
        with contextlib.suppress(OSError):  # it went into a folder renamed away: take it back
            os.unlink(target, dir_fd=dfd)
    raise dirs.FolderSwapped(folder, "keeps being swapped (renamed or replaced by a symlink); "
                                     "nothing is moved into it")


def move_input(src: Path, folder: Path, name: str) -> Path:
    """Move the file ``src`` into done/ or failed/ keeping both on a name clash (see
    :func:`link_input`)."""
    sfd = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target = link_input(sfd, src.name, folder, name)
        os.unlink(src.name, dir_fd=sfd)
    finally:
        os.close(sfd)
    return target


def split_name(name: str) -> tuple[str, str]:
    """``a.json`` → (``a``, ``.json``); ``a`` → (``a``, ``""``)."""
    stem, dot, ext = name.rpartition(".")
    return (stem, f".{ext}") if dot and stem else (name, "")


def copy_into(src_dir: int, src: str, name: str, dfd: int) -> bool:
    """Copy ``src`` to ``name`` in the folder ``dfd``; False if the name was taken meanwhile."""
    st = os.stat(src, dir_fd=src_dir, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        try:
            os.symlink(os.readlink(src, dir_fd=src_dir), name, dir_fd=dfd)
        except FileExistsError:
            return False
        return True
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      stat.S_IMODE(st.st_mode), dir_fd=dfd)
    except FileExistsError:
        return False
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        with os.fdopen(fd, "rb") as fh, os.fdopen(out, "wb", closefd=False) as dst:
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
