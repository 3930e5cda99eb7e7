"""Folders that alias each other: compared by identity, not by the path strings in the config.

Why: an outbox that is a symlink into an inbox (or a bind mount of it, or ``/srv/in/../in``)
passes a string comparison, and then the daemon converts its own results in a loop (325 jobs
in 20 s, ``a.log.log.log…``); inbox A's ``done/`` inside inbox B converts every file twice; an
outbox equal to a ``failed/`` mixes reports with results. So every folder is compared by its
resolved real path *and* by (device, inode) against each existing ancestor of the other (a
bind mount has another path but the same inode). Refused, naming both config keys:

* an outbox that is, or lies inside, any inbox, ``done/`` or ``failed/``;
* an inbox's ``done/`` or ``failed/`` inside *another* inbox, or equal to its own inbox
  (inside its own inbox is the default);
* an inbox inside another inbox, inside an outbox, or inside any ``done/`` or ``failed/``.

``check-config``, start-up and SIGHUP run this through ``config.parse_config`` (exit 78).
Folders that do not exist yet are compared as far as they exist; the running daemon runs
the check again every second, because a folder can appear later (created as a symlink, a
share mounted over the mount point), and then refuses to use what it names: the inbox is not
scanned, the rule's jobs wait; STATUS and ``smaskd status`` say why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Folder", "Overlap", "config_folders", "find_overlaps", "is_within"]


@dataclass(frozen=True, slots=True)
class Folder:
    key: str  # the config key: "inboxes[0].path", "inboxes[0].done", "rules[1].outbox"
    role: str  # inbox | done | failed | outbox
    path: Path
    owner: str  # the inbox name (inbox, done, failed) or the rule name (outbox)


@dataclass(frozen=True, slots=True)
class Overlap:
    """``inner`` is, or lies inside, ``outer``; ``message`` names both keys."""

    inner: Folder
    outer: Folder
    message: str

    @property
    def inboxes(self) -> set[str]:
        """Inbox names the daemon stops scanning while this overlap lasts."""
        names = {f.owner for f in (self.inner,) if f.role != "outbox"}
        if self.inner.role == "inbox" and self.outer.role == "inbox":
            names.add(self.outer.owner)  # nested inboxes: each would claim the other's files
        return names

    @property
    def rules(self) -> set[str]:
        """Rule names whose jobs wait while this overlap lasts."""
        return {self.inner.owner} if self.inner.role == "outbox" else set()


def config_folders(config: Any) -> list[Folder]:
    """Every inbox, done/, failed/ and outbox of a config, with its key."""
    folders = []
    for i, inbox in enumerate(config.inboxes):
        folders.append(Folder(f"inboxes[{i}].path", "inbox", inbox.path, inbox.name))
        for role, path in (("done", inbox.done_dir), ("failed", inbox.failed_dir)):
            folders.append(Folder(f"inboxes[{i}].{role}", role, path, inbox.name))
    for i, rule in enumerate(config.rules):
        folders.append(Folder(f"rules[{i}].outbox", "outbox", rule.outbox, rule.name))
    return folders


@dataclass(frozen=True, slots=True)
class _Id:
    real: str  # realpath: symlinks in the existing part resolved
    node: tuple[int, int] | None  # (st_dev, st_ino) if it exists
    chain: frozenset[tuple[int, int]]  # itself and every existing ancestor


def _identity(path: Path) -> _Id:
    real = os.path.realpath(path)
    node, chain, current = None, set(), real
    while True:
        try:
            st = os.stat(current)
        except OSError:
            pass
        else:
            chain.add((st.st_dev, st.st_ino))
            if current == real:
                node = (st.st_dev, st.st_ino)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return _Id(real, node, frozenset(chain))


def _within(a: _Id, b: _Id) -> bool:
    """``a`` is ``b`` or lies inside it."""
    if a.real == b.real or a.real.startswith(b.real.rstrip("/") + "/"):
        return True
    return b.node is not None and b.node in a.chain


def is_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or lies inside it, by identity (symlinks and bind mounts seen
    through), as far as both exist."""
    return _within(_identity(path), _identity(folder))


def _forbidden(inner: Folder, outer: Folder) -> str | None:
    """Why ``inner`` may not be (inside) ``outer``, or None when that is allowed."""
    if inner.role == "outbox":
        if outer.role == "outbox":
            return None
        return {"inbox": "its results would be picked up again as inputs",
                "done": "results would mix with finished inputs",
                "failed": "results would mix with failed inputs"}[outer.role]
    if inner.role in ("done", "failed"):
        if outer.role == "inbox" and outer.owner != inner.owner:
            return "every file moved there would be converted again by the other inbox"
        return None
    # inner is an inbox
    if outer.role == "inbox":
        return "the inbox folders nest: one would claim the other's files and claims"
    if outer.role == "outbox":
        return "every result published there would be converted again"
    return "files moved there when finished would be converted again"


def _show(folder: Folder, ident: _Id) -> str:
    shown = f"{folder.key} = {folder.path}"
    if ident.real != os.path.normpath(folder.path):
        shown += f", which is {ident.real}"
    return shown


def find_overlaps(folders: Iterable[Folder]) -> list[Overlap]:
    """Every forbidden pair, in config order (an empty list: the folders are fine)."""
    folders = list(folders)
    ids = {f: _identity(f.path) for f in folders}
    found = []
    for inner in folders:
        for outer in folders:
            if inner is outer:
                continue
            if inner.owner == outer.owner and inner.role != "outbox" and outer.role != "outbox":
                # an inbox's own done/failed: inside it is the default; equal to it is not
                if inner.role in ("done", "failed") and outer.role == "inbox" and \
                        ids[inner].real == ids[outer].real:
                    found.append(Overlap(inner, outer, f"is the inbox itself "
                                         f"({_show(outer, ids[outer])}): every file moved "
                                         "there would be converted again"))
                continue
            why = _forbidden(inner, outer)
            if why is None or not _within(ids[inner], ids[outer]):
                continue
            relation = "is the same folder as" if ids[inner].real == ids[outer].real or (
                ids[inner].node is not None and ids[inner].node == ids[outer].node) \
                else "is inside"
            label = {"inbox": f"inbox {outer.owner!r}",
                     "outbox": f"the outbox of rule {outer.owner!r}",
                     "done": f"the done folder of inbox {outer.owner!r}",
                     "failed": f"the failed folder of inbox {outer.owner!r}"}[outer.role]
            text = f"{relation} {label} ({_show(outer, ids[outer])}): {why}"
            if ids[inner].real != os.path.normpath(inner.path):
                text = f"{inner.path} (which is {ids[inner].real}) {text}"
            found.append(Overlap(inner, outer, text))
    return found
