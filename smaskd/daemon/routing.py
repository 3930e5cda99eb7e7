"""Routing: the first rule whose conditions all hold decides action and outbox.

Why "first match": a reader of the YAML can predict the outcome top to bottom, and
``smaskd route`` shows it for any path without running anything. ``kind`` comes from the
file's content, never its name (JSON by its first bytes, a zip by its directory: an export
zip or a CVAT backup is ``annotations``, a mask zip ``masks``), and only when a rule asks.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

from smaskd.config import Config, Rule
from smaskd.containers import sniff_file

__all__ = ["find_inbox", "route", "safe_kind"]


def safe_kind(path: Path) -> str | None:
    """``sniff_kind`` without following a symlink or blocking on a FIFO.

    The file is opened ``O_NOFOLLOW|O_NONBLOCK`` and checked to be regular, and its head
    (and a zip's end record) is read through this very descriptor, so a swap between the
    check and the read cannot redirect it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return sniff_file(fh)
    except OSError:
        return None
    finally:
        os.close(fd)


def _glob_matches(glob: str, name: str, rel: str, case_sensitive: bool) -> bool:
    """On the name or the inbox-relative path; case-insensitive unless the rule says so."""
    if not case_sensitive:
        glob, name, rel = glob.lower(), name.lower(), rel.lower()
    return fnmatch.fnmatchcase(name, glob) or fnmatch.fnmatchcase(rel, glob)


def route(config: Config, inbox: str | None, rel: str,
          kind_of: Callable[[], str | None]) -> Rule | None:
    """The first rule matching (inbox name, path relative to it, lazily sniffed kind)."""
    name = rel.rsplit("/", 1)[-1]
    kind: list[str | None] = []
    for rule in config.rules:
        m = rule.match
        if m.inbox is not None and m.inbox != inbox:
            continue
        if m.glob is not None and not _glob_matches(m.glob, name, rel, m.case_sensitive):
            continue
        if m.regex is not None and re.search(m.regex, rel) is None:
            continue
        if m.kind is not None:
            if not kind:
                kind.append(kind_of())
            if kind[0] != m.kind:
                continue
        return rule
    return None


def find_inbox(config: Config, path: Path) -> tuple[str | None, str]:
    """Which inbox a path is in, and its path relative to that inbox (for ``smaskd route``)."""
    absolute = Path(os.path.abspath(path))
    for inbox in config.inboxes:
        if absolute.is_relative_to(inbox.path) and absolute != inbox.path:
            return inbox.name, absolute.relative_to(inbox.path).as_posix()
    return None, absolute.name
