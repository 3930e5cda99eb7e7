"""Which filesystem a folder lives on, from ``/proc/self/mountinfo``.

Why: inotify sees nothing that *another host* writes to an NFS or SMB share, so an inbox
there needs a polling observer; and SQLite's locking is unreliable on network filesystems, so
the journal must refuse them. Both decisions need the filesystem type of a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Mount", "fs_type", "is_network_fs", "parse_mountinfo"]

NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse", "ceph", "glusterfs",
                        "afs", "lustre", "gpfs", "sshfs", "davfs"})


@dataclass(frozen=True, slots=True)
class Mount:
    mount_point: str
    fs_type: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mount points and fs types from mountinfo text (see proc(5)); bad lines are skipped."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        mounts.append(Mount(_unescape(fields[4]), right.split()[0]))
    return mounts


def fs_type(path: Path | str, mountinfo: str | None = None) -> str:
    """The fs type of the mount holding ``path`` (the longest matching mount point wins)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return "unknown"
    target = os.path.realpath(path)
    best, best_len = "unknown", -1
    for mount in parse_mountinfo(mountinfo):
        mp = mount.mount_point.rstrip("/") or "/"
        if (target == mp or target.startswith(mp + "/") or mp == "/") and len(mp) >= best_len:
            best, best_len = mount.fs_type, len(mp)
    return best


def is_network_fs(kind: str) -> bool:
    """nfs*, cifs, smb3, fuse.* (sshfs, rclone mounts) and other shared filesystems."""
    base = kind.split(".")[0]
    return kind in NETWORK_FS or base in NETWORK_FS or kind.startswith("nfs")
