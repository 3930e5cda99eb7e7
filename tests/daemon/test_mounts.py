"""Filesystem detection from mountinfo text, and the observer it implies."""

from __future__ import annotations

from pathlib import Path

import pytest

from smaskd.config import Inbox
from smaskd.daemon.mounts import fs_type, is_network_fs, parse_mountinfo
from smaskd.daemon.watcher import choose_observer

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/nas rw,relatime shared:5 - nfs4 nas:/export rw,vers=4.2
31 22 0:41 / /mnt/smb rw,relatime shared:6 - cifs //srv/share rw
32 22 0:42 / /mnt/ssh rw,nosuid shared:7 - fuse.sshfs user@host:/ rw
33 22 0:43 / /mnt/with\\040space rw shared:8 - smb3 //srv/x rw
34 30 8:2 / /mnt/nas/local rw shared:9 - xfs /dev/sdb1 rw
"""


def test_parse_mountinfo_unescapes_names() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert ("/mnt/with space", "smb3") in [(m.mount_point, m.fs_type) for m in mounts]


@pytest.mark.parametrize("path,kind,network", [
    ("/home/u/inbox", "ext4", False),
    ("/mnt/nas/inbox", "nfs4", True),
    ("/mnt/nas/local/inbox", "xfs", False),  # the longest mount point wins
    ("/mnt/smb/drop", "cifs", True),
    ("/mnt/ssh/drop", "fuse.sshfs", True),
    ("/mnt/with space/in", "smb3", True),
])
def test_fs_type_and_network(path: str, kind: str, network: bool) -> None:
    assert fs_type(path, MOUNTINFO) == kind
    assert is_network_fs(kind) is network


@pytest.mark.parametrize("observer,path,expected", [
    ("auto", "/mnt/nas/in", "polling"), ("auto", "/srv/in", "inotify"),
    ("inotify", "/mnt/nas/in", "inotify"), ("polling", "/srv/in", "polling"),
])
def test_choose_observer(observer: str, path: str, expected: str) -> None:
    assert choose_observer(Inbox("i", Path(path), observer=observer), MOUNTINFO)[0] == expected
