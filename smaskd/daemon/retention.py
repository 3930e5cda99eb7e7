"""Pruning what finished jobs leave behind: inputs in done/, job logs in outboxes, journal rows.

Why: every job leaves its input in done/, a ``<stem>.log.jsonl`` in its outbox and a journal
row, forever: 1,500 jobs are 1,500 of each, and a busy inbox fills its disk in the end. The
``retention:`` config bounds each kind by age and/or count. Nothing is pruned unless asked:
deleting inputs is the operator's call, and an upgrade must not start deleting by itself.

What is touched, and nothing else:

* ``done/`` of each inbox: regular files at its top level whose name is not hidden;
* each rule's outbox: regular files named ``*.log.jsonl`` at its top level (results, hidden
  staging files and anything else stay), and in its sub-folders when a ``keep_tree`` rule
  publishes there (trees.py: logs go beside their results in ``projA/``), each sub-folder
  counted on its own; sub-folders are never removed, hidden ones never entered;
* journal rows of finished jobs (``done``, ``failed``, ``lost``; ``Journal.prune``); a row of a
  job still under way is what a restart resumes from and is never deleted.

Age is the file's modification time (an input keeps the mtime it was dropped with, so a copy
that preserved an old mtime is pruned at the next pass) or the row's last update; a count
keeps the newest so many (per done/ folder, per outbox, and in the journal as a whole).

How it keeps off the hot path: the folders are pruned by a thread, one pass at start-up and
then every ``retention.every``, working only through folders it opened itself
(``dirs.Folder``: ``O_NOFOLLOW``, re-validated by device and inode before each unlink, closed
after the pass), never following a symlink and descending only into the sub-folders of a
``keep_tree`` outbox, each opened through its parent's descriptor. It logs
nothing itself: the main loop logs its result. Journal rows are deleted by the main loop (the
journal has one writer, see journal.py) in batches of :data:`JOURNAL_BATCH` per pass, so one
pass never holds the loop for long; a full batch makes the next pass take another.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from smaskd.config import Config, Prune
from smaskd.daemon.dirs import Folder
from smaskd.daemon.joblog import LOG_SUFFIX
from smaskd.daemon.journal import Journal
from smaskd.errors import JournalError

__all__ = ["JOURNAL_BATCH", "MAX_TREE_DEPTH", "Retention", "prune_folder", "prune_tree"]

#: A folder to prune: path, bounds, which names, and whether its sub-folders too (keep_tree).
_Target = tuple[Path, Prune, Callable[[str], bool], bool]

#: Journal rows deleted per pass of the main loop at most.
JOURNAL_BATCH = 500


@dataclass(slots=True)
class _Pass:
    """What one pass of the folder thread removed and what it could not do."""

    removed: dict[str, int] = field(default_factory=dict)  # folder → files removed
    errors: dict[str, str] = field(default_factory=dict)  # folder → why it was not pruned


def _is_input(name: str) -> bool:
    return not name.startswith(".")


def _is_log(name: str) -> bool:
    return not name.startswith(".") and name.endswith(LOG_SUFFIX) and name != LOG_SUFFIX


def prune_folder(path: Path, prune: Prune, wanted: Callable[[str], bool], now: float,
                 stop: threading.Event | None = None) -> int:
    """Remove the regular files of ``path`` (top level, names ``wanted``) beyond ``prune``'s
    count or age; returns how many. A missing folder is nothing to prune; a folder that is a
    symlink or is swapped during the pass raises ``FolderSwapped`` and the pass stops there."""
    return prune_tree(path, prune, wanted, now, stop, max_depth=0)


#: How deep :func:`prune_tree` descends (one descriptor per level is open at a time).
MAX_TREE_DEPTH = 32


def prune_tree(path: Path, prune: Prune, wanted: Callable[[str], bool], now: float,
               stop: threading.Event | None = None, errors: dict[str, str] | None = None,
               max_depth: int = MAX_TREE_DEPTH) -> int:
    """:func:`prune_folder` for a ``keep_tree`` outbox: the top level and every sub-folder
    (``projA/x.log.jsonl``), each counted on its own (``max_count`` per folder).

    Sub-folders are opened through their parent's descriptor, never following a symlink
    (``dirs.Folder`` with a parent), hidden ones are skipped, nothing but wanted regular files
    is removed, and folders are never removed (an empty ``projA/`` stays: a client may be
    looking into it). A sub-folder that cannot be pruned (swapped, unreadable) is noted in
    ``errors`` and skipped; the rest of the tree is still pruned. ``max_depth`` bounds the
    descriptors held at once."""
    root = Folder(path, create=False)
    try:
        try:
            root.fd()
        except FileNotFoundError:
            return 0
        return _prune_walk(root, prune, wanted, now, stop, {} if errors is None else errors,
                           max_depth)
    finally:
        root.close()


def _prune_walk(folder: Folder, prune: Prune, wanted: Callable[[str], bool], now: float,
                stop: threading.Event | None, errors: dict[str, str], depth_left: int) -> int:
    removed = _prune_in(folder, prune, wanted, now, stop)
    if depth_left <= 0:
        return removed
    fd = folder.fd()
    subfolders = []
    for name in os.listdir(fd):
        if name.startswith("."):
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):  # a symlink is not a folder here: never followed
            subfolders.append(name)
    for name in sorted(subfolders):
        if stop is not None and stop.is_set():
            break
        child = Folder(folder.path / name, parent=folder, create=False)
        try:
            child.fd()
            removed += _prune_walk(child, prune, wanted, now, stop, errors, depth_left - 1)
        except FileNotFoundError:
            continue
        except OSError as e:
            errors[str(child.path)] = e.strerror or str(e)
        finally:
            child.close()
    return removed


def _prune_in(folder: Folder, prune: Prune, wanted: Callable[[str], bool], now: float,
              stop: threading.Event | None) -> int:
    """Prune the files of one open folder (its top level only)."""
    fd = folder.fd()
    found: list[tuple[float, str, tuple[int, int]]] = []
    for name in os.listdir(fd):
        if not wanted(name):
            continue
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((st.st_mtime, name, (st.st_dev, st.st_ino)))
    found.sort(reverse=True)  # newest first: a count keeps these
    removed = 0
    for index, (mtime, name, identity) in enumerate(found):
        over_count = prune.max_count is not None and index >= prune.max_count
        too_old = prune.max_age is not None and now - mtime > prune.max_age
        if not (over_count or too_old):
            continue
        if stop is not None and stop.is_set():
            break
        fd = folder.fd()  # re-validated: still the folder we listed
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != identity:
            continue  # replaced since the listing: not the file we judged
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            continue
        removed += 1
    return removed


class Retention:
    """The folder thread and the journal batches; driven from the main loop's tick."""

    def __init__(self, config: Config, journal: Journal, log: Any) -> None:
        self.config, self.journal, self.log = config, journal, log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: _Pass | None = None
        self._next_files = 0.0
        self._next_journal = 0.0
        self._journal_removed = 0

    def configure(self, config: Config) -> None:
        """A reload: the next pass uses the new bounds (and starts now if they changed)."""
        if config.retention != self.config.retention:
            self._next_files = self._next_journal = 0.0
        self.config = config

    def _targets(self) -> list[_Target]:
        retention = self.config.retention
        targets: list[_Target] = []
        if retention.done.active:
            for inbox in self.config.inboxes:
                targets.append((inbox.done_dir, retention.done, _is_input, False))
        if retention.logs.active:
            trees: dict[Path, bool] = {}
            for rule in self.config.rules:  # an outbox shared with a keep_tree rule has a tree
                trees[rule.outbox] = trees.get(rule.outbox, False) or rule.keep_tree
            for outbox, tree in trees.items():
                targets.append((outbox, retention.logs, _is_log, tree))
        return targets

    def tick(self, now: float | None = None) -> None:
        """Start a folder pass when one is due, log a finished one, delete a journal batch."""
        now = time.monotonic() if now is None else now
        retention = self.config.retention
        self._collect()
        if retention.active and now >= self._next_files and self._thread is None:
            self._next_files = now + retention.every
            targets = self._targets()
            if targets:
                self._thread = threading.Thread(target=self._run, args=(targets,),
                                                name="smaskd-retention", daemon=True)
                self._thread.start()
        if retention.journal.active and now >= self._next_journal:
            self._prune_journal(now)

    def _prune_journal(self, now: float) -> None:
        bound = self.config.retention.journal
        before = time.time() - bound.max_age if bound.max_age is not None else None
        try:
            removed = self.journal.prune(before, bound.max_count, JOURNAL_BATCH)
        except JournalError as e:  # the journal's own faults are reported by the jobs
            self.log.warning("retention.journal_failed", error=str(e),
                             retry_in_s=self.config.retention.every)
            removed = 0
        self._journal_removed += removed
        if removed >= JOURNAL_BATCH:
            return  # more to do: another batch on the next pass of the loop
        self._next_journal = now + self.config.retention.every
        if self._journal_removed:
            self.log.info("retention.pruned", what="journal", removed=self._journal_removed)
        self._journal_removed = 0

    def _run(self, targets: list[_Target]) -> None:
        result = _Pass()
        now = time.time()
        for path, prune, wanted, tree in targets:
            if self._stop.is_set():
                break
            try:
                if tree:
                    removed = prune_tree(path, prune, wanted, now, self._stop, result.errors)
                else:
                    removed = prune_folder(path, prune, wanted, now, self._stop)
            except OSError as e:
                result.errors[str(path)] = e.strerror or str(e)
                continue
            except Exception as e:  # noqa: BLE001 - a thread's error must reach the log
                result.errors[str(path)] = f"{type(e).__name__}: {e}"
                continue
            if removed:
                result.removed[str(path)] = removed
        self._result = result

    def _collect(self) -> None:
        """Log the pass the thread finished (the thread itself never logs)."""
        if self._thread is None or self._thread.is_alive():
            return
        self._thread = None
        result, self._result = self._result, None
        if result is None:
            return
        for folder, removed in result.removed.items():
            self.log.info("retention.pruned", folder=folder, removed=removed)
        for folder, why in result.errors.items():
            self.log.warning("retention.folder_skipped", folder=folder, reason=why)

    def close(self, timeout: float = 5.0) -> None:
        """Stop a running pass between two files (it is safe to stop anywhere)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._collect()
