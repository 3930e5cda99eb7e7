"""Folders other people can write to, used only through directory descriptors.

Why: done/, failed/ and the claim area ``<inbox>/.smaskd/`` sit inside the inbox, and anyone
who may drop a file there may also rename folders and plant symlinks. Checking a folder and
then using it by path leaves a window in which it is swapped: a loop renaming ``done`` to a
symlink and back moved 5 of 40 inputs into a folder of the attacker's choice. So a folder is
opened once (``O_DIRECTORY|O_NOFOLLOW``, relative to its parent's descriptor where the parent
is writable by others too) and every operation on it is ``dir_fd=``-relative. Before each use
the descriptor is re-validated against the path (same device and inode, looked up without
following a symlink), so a folder renamed away is not followed either:

* a *place* (done/, failed/, an outbox: :func:`place`) whose path now holds another real
  directory is reopened, because that is where files go now (and its descriptor is closed
  after each pass of the main loop, so an idle daemon never keeps a share busy); a symlink
  or a file there is refused with :class:`FolderSwapped` (an ``OSError`` with ``ELOOP`` naming the folder, which
  ``backoff.classify`` turns into a wait);
* a *claim area* folder (``.smaskd``, ``processing``, ``hosts``, this host's folder:
  :class:`ClaimArea`) is *pinned*: our claims are in the one we opened or created, so a
  different one at that path (renamed away, a symlink planted) raises :class:`FolderSwapped`
  and the daemon reports the inbox and skips it. It is looked up through its parent's
  descriptor, so a swapped ``.smaskd`` or ``processing`` is noticed at every level.

The path above a place (the configured inbox or outbox) is the administrator's and is followed
as configured. Ownership is never a test: hosts of one share may run under different users.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

__all__ = ["ClaimArea", "Folder", "FolderSwapped", "SymlinkedSubfolder", "add_tree", "claim_area",
           "close_places", "forget", "place", "recheck"]

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderSwapped(OSError):
    """A folder is a symlink, not a folder, or not the one we opened (``errno`` ELOOP)."""

    def __init__(self, path: Path | str, why: str) -> None:
        super().__init__(errno.ELOOP, why, str(path))


class SymlinkedSubfolder(FolderSwapped):
    """A sub-folder of a ``keep_tree`` outbox (trees.py) is a symlink.

    Why the job's own error, not a fault to wait on like a symlinked done/: the sub-folder's
    name comes from an inbox writer's folder, so whoever planted the link chose it; waiting
    would hold the job (and its STATUS problem) until that person removes it, maybe forever.
    The job fails: its input goes to failed/ with a report naming the link, nothing is
    written through it, and the other jobs go on. ``job_error`` tells ``describe_error``
    (workers.py) it is no bug of ours: no traceback, and the message says it all.
    """

    job_error = True

    def __str__(self) -> str:
        return str(self.strerror)


class Folder:
    """One directory, its descriptor, and the (device, inode) it must still have at its path."""

    __slots__ = ("_fd", "_id", "create", "name", "parent", "path", "pinned")

    def __init__(self, path: Path, parent: Folder | None = None, *, create: bool = True,
                 pinned: bool = False) -> None:
        self.path, self.parent, self.name = path, parent, path.name
        self.create, self.pinned = create, pinned
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"Folder({str(self.path)!r}, fd={self._fd})"

    def _lookup(self) -> os.stat_result | None:
        try:
            if self.parent is None:
                return os.lstat(self.path)
            return os.stat(self.name, dir_fd=self.parent.fd(), follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _refuse(self, st: os.stat_result | None) -> FolderSwapped:
        if st is None:
            return FolderSwapped(self.path, "was renamed away or removed while in use; "
                                            "not followed")
        if stat.S_ISLNK(st.st_mode):
            if any(self.path != root and self.path.is_relative_to(root) for root in _TREES):
                return SymlinkedSubfolder(self.path, f"outbox sub-folder {self.path} is a "
                                          "symlink; refusing to follow it (nothing is written "
                                          "through it; remove it and drop the file again)")
            return FolderSwapped(self.path, "is a symlink; nothing is written through it")
        if not stat.S_ISDIR(st.st_mode):
            return FolderSwapped(self.path, "is not a folder")
        return FolderSwapped(self.path, "was swapped for another folder while in use "
                                        "(renamed away?); not followed")

    def matches(self) -> bool:
        """Does the path still lead to the folder our descriptor holds (no reopening)?"""
        if self._fd is None:
            return False
        try:
            st = self._lookup()
        except OSError:
            return False
        return st is not None and stat.S_ISDIR(st.st_mode) and \
            (st.st_dev, st.st_ino) == self._id

    def fd(self) -> int:
        """The folder's descriptor, re-validated against its path now (see the module doc)."""
        st = self._lookup()
        if st is None and (self._fd is None or not self.pinned) and self.create:
            self._mkdir()
            st = self._lookup()
        if st is None:
            if self._fd is not None and self.pinned:
                raise self._refuse(None)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(self.path))
        if not stat.S_ISDIR(st.st_mode):
            raise self._refuse(st)
        if self._fd is not None and (st.st_dev, st.st_ino) == self._id:
            return self._fd
        if self._fd is not None and self.pinned:
            raise self._refuse(st)
        return self._open(st)

    def _mkdir(self) -> None:
        """The last component only: a missing parent (an unmounted share) is an error."""
        try:
            if self.parent is None:
                os.mkdir(self.path)
            else:
                os.mkdir(self.name, dir_fd=self.parent.fd())
        except FileExistsError:
            pass

    def _open(self, st: os.stat_result) -> int:
        try:
            if self.parent is None:
                fd = os.open(self.path, _OPEN_DIR)
            else:
                fd = os.open(self.name, _OPEN_DIR, dir_fd=self.parent.fd())
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped since the lookup
                raise self._refuse(self._lookup()) from None
            raise
        got = os.fstat(fd)
        if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino) and self.pinned and \
                self._fd is not None:
            os.close(fd)
            raise self._refuse(got)
        self.close()
        self._fd, self._id = fd, (got.st_dev, got.st_ino)
        return fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = self._id = None

    # ---------------------------------------------------------------- operations by name

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=self.fd(), follow_symlinks=False)

    def exists(self, name: str) -> bool:
        try:
            self.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def listdir(self) -> list[str]:
        return os.listdir(self.fd())

    def unlink(self, name: str, missing_ok: bool = True) -> None:
        try:
            os.unlink(name, dir_fd=self.fd())
        except FileNotFoundError:
            if not missing_ok:
                raise

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        """``openat`` never following a symlink at ``name``."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd())

    def read_bytes(self, name: str, limit: int = 1 << 20) -> bytes:
        fd = self.open(name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(self.path / name))
            return os.read(fd, limit)
        finally:
            os.close(fd)

    def write_new(self, name: str, data: bytes, mode: int = 0o640, sync: bool = True,
                  exact_mode: bool = False) -> None:
        """Create ``name`` exclusively (never through a symlink) holding ``data``
        (``exact_mode``: ``mode`` whatever the umask)."""
        fd = self.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if exact_mode:
                os.fchmod(fd, mode)
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            self.unlink(name)
            raise
        os.close(fd)

    def replace(self, src: str, dst: str) -> None:
        fd = self.fd()
        os.replace(src, dst, src_dir_fd=fd, dst_dir_fd=fd)

    def sync(self) -> None:
        """Make renames and links in the folder durable (no-op where it cannot be synced)."""
        try:
            os.fsync(self.fd())
        except OSError:
            pass


# -------------------------------------------------------------------- places

_PLACES: dict[Path, Folder] = {}
#: Folders whose sub-folders are ours to create (an outbox with ``keep_tree``: trees.py).
_TREES: set[Path] = set()


def add_tree(root: Path) -> None:
    """Places below ``root`` are opened level by level from ``root``'s descriptor: their
    names come from inbox writers' folder names, so a symlink planted at one (or at any
    level between) is refused like a symlinked done/, never followed."""
    if root not in _TREES:
        _TREES.add(root)
        for path in [p for p in _PLACES if p != root and p.is_relative_to(root)]:
            _PLACES.pop(path).close()  # opened before: reopen through the chain


def place(path: Path) -> Folder:
    """done/, failed/ or an outbox: created (last component only) and opened on first use,
    reopened when a real folder now stands at the path, refused when it is a symlink.
    A folder below a tree root (:func:`add_tree`) is looked up and created through its
    parent's descriptor, each level in turn."""
    found = _PLACES.get(path)
    if found is None:
        below = any(path != root and path.is_relative_to(root) for root in _TREES)
        found = _PLACES[path] = Folder(path, place(path.parent) if below else None)
    return found


def close_places() -> None:
    """Close the places' descriptors (the main loop, after each pass). A descriptor held
    while idle would keep an outbox's share busy (``umount``: EBUSY) and, on a bind mount,
    keep writing into the mount that was taken away; the next use opens and validates
    afresh. The claim area's stay open: our claims are in that very folder."""
    for folder in _PLACES.values():
        folder.close()


def recheck(path: Path) -> str | None:
    """None when the folder at ``path`` can be used (as a place, or the claim area folder
    known by that path), else why not: the probe of a job waiting on it (backoff.py)."""
    known = _PLACES.get(path) or _AREA_FOLDERS.get(path)
    folder = known or Folder(path, create=False)
    try:
        folder.fd()
    except FileNotFoundError:
        return "is missing" if folder.pinned else None
    except FolderSwapped as e:
        return e.strerror
    except OSError as e:
        return f"cannot be opened: {e.strerror}"
    finally:
        if known is None:
            folder.close()
    return None


# -------------------------------------------------------------------- the claim area

_AREAS: dict[Path, ClaimArea] = {}
_AREA_FOLDERS: dict[Path, Folder] = {}


class ClaimArea:
    """``<inbox>/.smaskd`` with ``processing/`` and ``hosts/``: pinned folders (see above).

    The inbox itself is followed as configured (it is the administrator's path); everything
    below it is looked up through descriptors, one level at a time.
    """

    def __init__(self, inbox: Path) -> None:
        self.inbox = Folder(inbox, create=False)
        self.root = Folder(inbox / ".smaskd", self.inbox, pinned=True)
        self.processing = Folder(self.root.path / "processing", self.root, pinned=True)
        self.hosts = Folder(self.root.path / "hosts", self.root, pinned=True)
        self._hosts: dict[str, Folder] = {}
        self._others: dict[str, Folder] = {}
        for folder in (self.root, self.processing, self.hosts):
            _AREA_FOLDERS[folder.path] = folder

    def host(self, host_id: str) -> Folder:
        """``processing/<host_id>`` of this daemon: created, then pinned (our claims are there)."""
        found = self._hosts.get(host_id)
        if found is None:
            found = self._hosts[host_id] = Folder(self.processing.path / host_id,
                                                  self.processing, pinned=True)
            _AREA_FOLDERS[found.path] = found
        return found

    def other(self, host_id: str) -> Folder:
        """Another host's ``processing/<host_id>`` (never created; reopened if replaced:
        nothing of ours is in it until we rename it out)."""
        found = self._others.get(host_id)
        if found is None:
            found = self._others[host_id] = Folder(self.processing.path / host_id,
                                                   self.processing, create=False)
        return found

    def folder(self, host_id: str) -> Folder:
        """:meth:`host` if this daemon opened it as its own, else :meth:`other`."""
        return self._hosts.get(host_id) or self.other(host_id)

    def check(self, host_id: str) -> None:
        """Raise :class:`FolderSwapped` if any level of our claim area was swapped."""
        self.host(host_id).fd()
        self.hosts.fd()

    def close(self) -> None:
        for folder in (*self._hosts.values(), *self._others.values(), self.hosts,
                       self.processing, self.root, self.inbox):
            _AREA_FOLDERS.pop(folder.path, None)
            folder.close()
        self._hosts.clear()
        self._others.clear()


def claim_area(inbox: Path) -> ClaimArea:
    found = _AREAS.get(inbox)
    if found is None:
        found = _AREAS[inbox] = ClaimArea(inbox)
    return found


def forget(inbox: Path) -> None:
    """Drop the claim area's descriptors (the inbox vanished and came back: a remounted
    share is opened afresh, never through the old descriptors)."""
    area = _AREAS.pop(inbox, None)
    if area is not None:
        area.close()
