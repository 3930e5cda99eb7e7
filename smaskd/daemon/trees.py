"""Tree-preserving outboxes: ``keep_tree: true`` publishes ``projA/x.json`` as ``projA/x.zip``.

Why: a recursive inbox often holds one folder per project or per client, and the same file
name in each (``projA/x.json``, ``projB/x.json``). A flat outbox turns them into ``x.zip``
and ``x-1.zip``, and which is which is only in the logs. With ``keep_tree`` on a rule the
result and its log go to the input's sub-folder path below the rule's outbox:

* each folder name is mapped as result names are (``names.windows_safe``: ``a:b`` → ``a_b``,
  ``CON`` → ``CON_``), since Windows clients read the outbox too;
* sub-folders are created one level at a time through their parent's descriptor and never
  followed when they are symlinks (``dirs.add_tree``): the names come from inbox writers,
  and nothing is written through a symlink planted at one (the job fails, naming it);
* ``on_conflict`` applies within the sub-folder: ``projA/x.zip`` and ``projB/x.zip`` do not
  clash, two drops of ``projA/x.json`` do;
* staging files stay at the top of the outbox (one folder to sweep after a crash, one
  filesystem) and are renamed into the sub-folder through both descriptors;
* done/ and failed/ stay flat, as for every rule: they belong to the inbox, not the rule,
  and an input keeps its own name there (keep-both ``-1`` on a clash).

A file claimed by name alone (its path too long for a claim name) is published at the top.
The decision marker of a job (claims.py) names results relative to the outbox, sub-folder
included, so a host taking over a claim publishes into the same sub-folder;
:func:`plan_target` refuses a marker's name that would leave the outbox.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from smaskd.config import Config, Rule
from smaskd.daemon import dirs
from smaskd.daemon.names import windows_safe

__all__ = ["plan_pairs", "plan_target", "register", "result_folder"]


def register(config: Config) -> None:
    """Make the outboxes of ``keep_tree`` rules tree roots (before anything is published:
    a restart may finish a plan naming a sub-folder)."""
    for rule in config.rules:
        if rule.keep_tree:
            dirs.add_tree(rule.outbox)


def result_folder(rule: Rule, rel: str) -> Path:
    """Where the results of the input dropped at ``rel`` (inbox-relative) are published."""
    parts = rel.split("/")[:-1]
    if not rule.keep_tree or not parts:
        return rule.outbox
    dirs.add_tree(rule.outbox)
    return rule.outbox.joinpath(*(windows_safe(part) for part in parts))


def plan_pairs(plan: list[list[str]]) -> list[list[str]]:
    """A publish/fail plan's (staging, final) paths as a decision marker names them: each
    relative to the folder of its staging file (the outbox or failed/), so ``x.zip``, or
    ``projA/x.zip`` for a result published into a sub-folder."""
    pairs = []
    for staging, final in plan:
        rel = os.path.relpath(final, os.path.dirname(staging))
        pairs.append([Path(staging).name, rel if not rel.startswith("..") else Path(final).name])
    return pairs


def plan_target(folder: Path, name: str) -> Path:
    """``folder / name`` for a name read from a decision marker (an inbox writer can write
    one): a path that is absolute or climbs out (``..``) is cut to its last part."""
    path = PurePosixPath(name)
    if path.parts and not path.is_absolute() and ".." not in path.parts:
        return folder.joinpath(*path.parts)
    return folder / (path.name if path.name not in ("", ".", "..") else "_")
