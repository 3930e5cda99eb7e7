"""Ready markers: ``data.json`` is taken only once its writer drops ``data.json.done``.

Why: some writers cannot rename into place (a scanner's FTP client, a script on a share) but
can say when they are done by creating a second, empty file. With ``ready_marker: ".done"``
on an inbox:

* a name ending in the suffix is a marker, never a candidate: it is neither claimed nor
  failed, whatever the rules say;
* a data file is not offered while it has no valid marker, however long it has settled;
  with one it is complete at once (as a file renamed in: no ``settle``, and a parse error
  is the input's own), unless inotify sees it still open for writing;
* a marker is valid only if it was made after the data file last changed (its ``ctime`` is
  not older than the data file's): a marker left behind (a crash between the claim and its
  removal, a writer that dropped one by mistake) never vouches for a later drop of that
  name, so a stale marker is harmless. ``ctime`` is used, not ``mtime``: ``cp -p`` and
  ``touch -d`` set mtimes, while every rename and write sets the ctime;
* the marker is removed right after the claim is journalled (through the folder's
  descriptor, walked from the inbox without following a symlink). Removing it when the job
  finishes instead would delete the marker of a newer drop of the same name that arrived
  meanwhile, and that file would never be taken;
* a marker with no data file is left alone (the writer's business, and invalid for any data
  file written after it).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from smaskd.config import Inbox
from smaskd.daemon.claims import source_dir

__all__ = ["MARKED", "MARKER", "UNMARKED", "consume", "marker_name", "state"]

MARKER = "marker"  # the name is a marker itself: never a candidate
UNMARKED = "unmarked"  # a data file without a valid marker: not offered yet
MARKED = "marked"  # a data file with a valid marker: complete


def is_marker(inbox: Inbox, name: str) -> bool:
    suffix = inbox.ready_marker
    return suffix is not None and name.endswith(suffix) and len(name) > len(suffix)


def marker_name(inbox: Inbox, name: str) -> str:
    """The name of the marker that vouches for the data file ``name`` (``data.json.done``)."""
    return name + (inbox.ready_marker or "")


def _valid(marker: Path, data: os.stat_result) -> os.stat_result | None:
    try:
        st = os.lstat(marker)
    except OSError:
        return None
    return st if st.st_ctime_ns >= data.st_ctime_ns else None


def state(inbox: Inbox, path: Path, st: os.stat_result) -> str | None:
    """What the marker convention says of the name at ``path`` (``lstat`` result ``st``);
    None when the inbox uses no markers."""
    if not inbox.ready_marker:
        return None
    if is_marker(inbox, path.name):
        return MARKER
    return MARKED if _valid(path.with_name(marker_name(inbox, path.name)), st) else UNMARKED


def consume(inbox: Inbox, rel: str, data: os.stat_result) -> None:
    """Remove the marker of the data file just claimed from ``rel`` (``data``: its ``lstat``
    before the claim); a marker that is gone or older than that file is not touched."""
    if not inbox.ready_marker:
        return
    name = marker_name(inbox, rel.rsplit("/", 1)[-1])
    with contextlib.suppress(OSError):  # gone, or its folder swapped: left, and harmless
        fd, owned = source_dir(inbox, rel)
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if st.st_ctime_ns >= data.st_ctime_ns:
                os.unlink(name, dir_fd=fd)
        finally:
            if owned:
                os.close(fd)
