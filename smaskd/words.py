"""Counted nouns for messages a person reads: "1 item, 2 warnings", never "1 items".

Why a module: the summary lines of the CLI, ``check-config`` and the daemon's status all count
things, and a hand-written ``(s)`` or a plain ``s`` is wrong half the time.
"""

from __future__ import annotations

__all__ = ["count"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "item")`` → "1 item"; ``count(2, "inbox", "inboxes")`` → "2 inboxes"."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
