"""Claiming a file: one atomic rename into ``<inbox>/.smaskd/processing/<host-id>/``.

Why a rename: it is atomic on one filesystem (NFS included, Maildir's argument), so when
several daemons on one or many hosts watch the same inbox exactly one of them gets each file;
the loser sees ENOENT. The claimed name carries the job id, so after a crash the daemon can
find its own claims and their journal rows, and the file's path relative to the inbox, so a
restart or a host taking the claim over (it cannot read our journal) routes it by the same
rule: ``<job-id>__<name>`` for a file at the top of the inbox (the only form before 2026-12),
``<job-id>_+<rel>`` with ``%`` and ``/`` written as ``%25`` and ``%2F`` for one in a
sub-folder. A ``flock`` on ``processing/.<host-id>.lock`` stops two daemons with the same
host id from adopting each other's claims.

The claim area is used only through descriptors (``dirs.ClaimArea``): a ``.smaskd`` renamed
away, or ``processing``/``hosts`` replaced by symlinks, raises ``dirs.FolderSwapped`` instead of
being followed, and nothing is created or renamed through it.

Taking over a dead host's claims (``hosts.py`` decides when) is the same rename again, from
``processing/<other>/`` into ``processing/<me>/`` under a new job id.

**Exactly once, without locks.** Publishing (or failing) a job and taking its claim over are
decided by one *decision marker* per job, ``processing/<host>/.<job-id>.plan``, created
exclusively (written under a temp name, then ``link()``, which fails with EEXIST when the name
exists, on NFS too): the owner creates it with its publish/fail plan before the first rename
into the outbox; a taker creates it as a ``taken`` tombstone before renaming the claim away.
Whoever creates it first decides: an owner that finds a tombstone drops its work; a taker that
finds a plan takes the claim and finishes that plan (same staged files, same names) instead of
converting again. Names in a plan are relative to the rule's outbox, because another host may
mount the share somewhere else. An owner also checks that its claim is still there after
creating its marker, so a tombstone removed once the taker finished still stops it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from smaskd.config import Inbox
from smaskd.daemon import dirs
from smaskd.daemon.faults import fault_active
from smaskd.errors import BusyError

__all__ = ["CLAIM_PREFIX_LEN", "Claim", "area", "claim", "claim_file_name", "decide",
           "find_marker", "foreign_hosts", "lock_processing", "make_processing_dir", "markers",
           "new_job_id", "own_claims", "parse_claim_name", "processing_dir", "processing_root",
           "read_marker", "remove_marker", "source_dir", "split_claim_name", "take_over",
           "try_lock", "unlock"]

SEP = "__"
SEP_REL = "_+"
NAME_MAX = 255
#: The state a taker writes into the decision marker of a claim it takes over.
TAKEN = "taken"


def new_job_id() -> str:
    """Sortable by time, unique across hosts: ``20260101T120000-1a2b3c4d``."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


#: Bytes a claim adds in front of the dropped name (``<job id>__``): a name longer than
#: 255 minus this cannot be claimed.
CLAIM_PREFIX_LEN = len(new_job_id() + SEP)
_ID_LEN = CLAIM_PREFIX_LEN - len(SEP)


def area(inbox: Inbox) -> dirs.ClaimArea:
    return dirs.claim_area(inbox.path)


def processing_root(inbox: Inbox) -> Path:
    return inbox.path / ".smaskd" / "processing"


def processing_dir(inbox: Inbox, host_id: str) -> Path:
    return processing_root(inbox) / host_id


# ------------------------------------------------------------ claim names

def _encode(rel: str) -> str:
    return rel.replace("%", "%25").replace("/", "%2F")


def _decode(text: str) -> str:
    return text.replace("%2F", "/").replace("%25", "%")


def claim_file_name(job_id: str, rel: str) -> str:
    """The claimed name of the file at ``rel`` (relative to the inbox): see the module doc.

    A sub-folder path that does not fit in a name (255 bytes) is not kept: the file is
    claimed by its name alone (routed by name after a restart); the caller logs that.
    """
    name = rel.rsplit("/", 1)[-1]
    if "/" in rel:
        long = f"{job_id}{SEP_REL}{_encode(rel)}"
        if len(os.fsencode(long)) <= NAME_MAX:
            return long
    return f"{job_id}{SEP}{name}"


def parse_claim_name(name: str) -> tuple[str, str] | None:
    """Claimed name → (job id, path relative to the inbox); None for foreign names."""
    job_id, sep, rest = name[:_ID_LEN], name[_ID_LEN:_ID_LEN + 2], name[_ID_LEN + 2:]
    if sep not in (SEP, SEP_REL) or not rest or len(job_id) != _ID_LEN or "-" not in job_id:
        return None
    return job_id, (_decode(rest) if sep == SEP_REL else rest)


def split_claim_name(name: str) -> tuple[str, str] | None:
    """Claimed name → (job id, original file name); None for foreign names."""
    parts = parse_claim_name(name)
    return (parts[0], parts[1].rsplit("/", 1)[-1]) if parts else None


class Claim:
    """A claimed file: where it is now, what it was called, and where it was in the inbox."""

    __slots__ = ("job_id", "name", "path", "rel")

    def __init__(self, job_id: str, name: str, path: Path, rel: str | None = None) -> None:
        self.job_id, self.name, self.path = job_id, name, path
        self.rel = rel or name

    def __repr__(self) -> str:
        return f"Claim({self.job_id!r}, {self.rel!r})"

    @classmethod
    def parse(cls, folder: Path, name: str) -> Claim | None:
        parts = parse_claim_name(name)
        if parts is None:
            return None
        return cls(parts[0], parts[1].rsplit("/", 1)[-1], folder / name, parts[1])


def make_processing_dir(inbox: Inbox, host_id: str) -> Path:
    """This host's processing folder, creating the levels below the inbox but never the inbox.

    An inbox that vanished (an unmounted share) raises FileNotFoundError instead of being
    rebuilt as an empty local folder under the mount point; a swapped level raises
    ``dirs.FolderSwapped``.
    """
    area(inbox).host(host_id).fd()
    return processing_dir(inbox, host_id)


def _source_dir(inbox: Inbox, rel: str) -> tuple[int, bool]:
    """A descriptor of the folder holding ``rel``, walked from the inbox without following a
    symlink (a sub-folder swapped for a symlink to someone's home is refused, not entered);
    (fd, whether the caller must close it)."""
    fd = area(inbox).inbox.fd()
    parts = rel.split("/")[:-1]
    if not parts:
        return fd, False
    current = fd
    try:
        for part in parts:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=current)
            if current != fd:
                os.close(current)
            current = nxt
    except OSError:
        if current != fd:
            os.close(current)
        raise
    return current, True


#: for ``markers.py``, which removes a ready marker beside a file claimed from a sub-folder
source_dir = _source_dir


def claim(src: Path, inbox: Inbox, host_id: str, job_id: str | None = None,
          rel: str | None = None) -> Claim | None:
    """Rename ``src`` (at ``rel`` in the inbox) into this host's processing folder; None if
    another process won (or the inbox vanished with it)."""
    job_id = job_id or new_job_id()
    rel = rel or src.name
    try:
        dst = area(inbox).host(host_id)
        dst_fd = dst.fd()
        src_fd, owned = _source_dir(inbox, rel)
    except FileNotFoundError:
        return None
    except OSError as e:
        if isinstance(e, dirs.FolderSwapped) or e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        return None  # a sub-folder became a symlink under our feet: not followed
    new = claim_file_name(job_id, rel)
    try:
        os.rename(src.name, new, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except FileNotFoundError:
        # NFS may report ENOENT for a rename it did perform (lost reply after a retransmit).
        if not dst.exists(new):
            return None
    finally:
        if owned:
            os.close(src_fd)
    return Claim.parse(dst.path, new)


def _folder(inbox: Inbox, host_id: str) -> dirs.Folder:
    """Our folder (pinned: opened by ``make_processing_dir`` first), or another host's."""
    return area(inbox).folder(host_id)


def own_claims(inbox: Inbox, host_id: str) -> list[Claim]:
    """Claims ``host_id`` holds in processing/, oldest first."""
    folder = _folder(inbox, host_id)
    try:
        names = sorted(folder.listdir())
    except FileNotFoundError:
        return []
    return [c for c in (Claim.parse(folder.path, n) for n in names) if c is not None]


def try_lock(inbox: Inbox, host_id: str) -> int | None:
    """The host's lock fd if nobody holds it (that host is not running here), else None.

    ``SMASKD_FAULT=blind_locks`` (tests) plays a share whose locks other hosts cannot see.
    """
    fd = area(inbox).processing.open(f".{host_id}.lock", os.O_RDWR | os.O_CREAT, 0o640)
    if fault_active("blind_locks"):
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def unlock(fd: int) -> None:
    os.close(fd)  # closing the only fd drops the flock


def lock_processing(inbox: Inbox, host_id: str, wait: float = 3.0) -> int:
    """Hold an exclusive lock for this host id on this inbox for the life of the process.

    Another host probing this lock (to see whether we are alive) holds it for a moment, so
    a busy lock is retried for ``wait`` seconds before it means "a second daemon".
    """
    make_processing_dir(inbox, host_id)
    deadline = time.monotonic() + wait
    while (fd := try_lock(inbox, host_id)) is None:
        if time.monotonic() >= deadline:
            raise BusyError(f"another smaskd with host_id {host_id!r} is running on this inbox; "
                              "give each daemon its own --host-id", f"inbox {inbox.name}")
        time.sleep(0.1)
    return fd


def foreign_hosts(inbox: Inbox, host_id: str) -> list[str]:
    """Other host ids that have a processing folder in this inbox."""
    try:
        with os.scandir(area(inbox).processing.fd()) as it:
            entries = list(it)
    except FileNotFoundError:
        return []
    return sorted(e.name for e in entries if e.name != host_id and not e.name.startswith(".")
                  and e.is_dir(follow_symlinks=False))


def take_over(found: Claim, inbox: Inbox, host_id: str, job_id: str,
              from_host: str | None = None) -> Claim | None:
    """Rename another host's claim into ours under a new job id; None if someone else won.

    A new id, because the old owner may only be stalled: its staging files and journal row
    carry the old id, and nothing it cleans up later may touch the new owner's files.
    """
    src = area(inbox).other(from_host or found.path.parent.name)
    try:
        dst = area(inbox).host(host_id)
        dst_fd, src_fd = dst.fd(), src.fd()
    except FileNotFoundError:
        return None
    new = claim_file_name(job_id, found.rel)
    try:
        os.rename(found.path.name, new, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except FileNotFoundError:
        if not dst.exists(new) or src.exists(found.path.name):
            return None
    return Claim.parse(dst.path, new)


# ------------------------------------------------------------ decision (plan) markers

def _marker_name(job_id: str) -> str:
    return f".{job_id}.plan"


def decide(inbox: Inbox, host_id: str, job_id: str, data: dict[str, Any],
           claim_name: str | None = None) -> dict[str, Any] | None:
    """Create (or, if it is already ours, update) the decision marker of ``job_id``, which
    lives in ``host_id``'s folder; None when the decision is ours, else the marker that
    decided first (a plan of the owner, or a taker's tombstone). See the module doc.

    ``claim_name``: the owner's claim, which must still be there once the marker is made.
    """
    folder = _folder(inbox, host_id)
    final = _marker_name(job_id)
    tmp = f"{final}.{secrets.token_hex(4)}.tmp"
    folder.write_new(tmp, json.dumps(data, default=str).encode())
    try:
        try:
            os.link(tmp, final, src_dir_fd=folder.fd(), dst_dir_fd=folder.fd(),
                    follow_symlinks=False)
        except FileExistsError:
            existing = read_marker(inbox, host_id, job_id) or {"state": TAKEN}
            mine = existing.get("state") != TAKEN and data.get("state") != TAKEN and \
                existing.get("job_id") == data.get("job_id") and \
                existing.get("host_id") == data.get("host_id")
            if not mine:
                return existing
            folder.replace(tmp, final)  # our own plan, updated (a retry after a wait)
        except OSError as e:
            if e.errno not in {errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}:
                raise
            # no hard links (some SMB servers): O_EXCL on the final name decides instead
            try:
                folder.write_new(final, json.dumps(data, default=str).encode())
            except FileExistsError:
                return read_marker(inbox, host_id, job_id) or {"state": TAKEN}
    finally:
        folder.unlink(tmp)
    if claim_name is not None and not folder.exists(claim_name):
        folder.unlink(final)  # taken over and finished before we got here
        return {"state": TAKEN, "reason": "the claim is gone"}
    folder.sync()
    return None


def find_marker(inbox: Inbox, job_id: str) -> tuple[str, dict[str, Any]] | None:
    """(host, plan) of ``job_id``'s publish/fail plan in any host's folder (tombstones and
    unreadable markers are not plans)."""
    for host in foreign_hosts(inbox, ""):  # "" is nobody's id: every host's folder
        data = read_marker(inbox, host, job_id)
        if data is not None and data.get("state") in ("publishing", "failing"):
            return host, data
    return None


def read_marker(inbox: Inbox, host_id: str, job_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_folder(inbox, host_id).read_bytes(_marker_name(job_id)))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_marker(inbox: Inbox, host_id: str, job_id: str) -> None:
    with contextlib.suppress(OSError):
        _folder(inbox, host_id).unlink(_marker_name(job_id))


def markers(inbox: Inbox, host_id: str) -> list[tuple[str, str]]:
    """(job id, file name) of every marker or marker temp file in the host's folder."""
    try:
        names = _folder(inbox, host_id).listdir()
    except FileNotFoundError:
        return []
    return [(n[1:].split(".", 1)[0], n) for n in names
            if n.startswith(".") and (n.endswith(".plan") or
                                      (".plan" in n and n.endswith(".tmp")))]
