"""Find the elements of one top-level JSON list without parsing the document.

A Datumaro file is nearly all its ``items`` list. Parsed whole, a 6 MB file becomes ~40 MB
of Python objects that live until the export ends; parsed one element at a time, each item
becomes a compact model object and its dicts are freed at once (benchmarks/README.md,
scaling). The bracket scan :mod:`smaskd.annotations.jsonload` runs anyway (the depth check)
already knows where every bracket outside a string is and how deep, so finding the list and
the boundaries of its elements is a few vectorised steps more.

Anything unusual (the key twice, escapes in the key, an element that is not an object,
separators other than commas) returns None and the caller parses the whole document as
before, so every error message stays the one the whole-document parser gives.
"""

from __future__ import annotations

import re

import numpy as np

from smaskd.annotations.jsonload import SHALLOW, Brackets

__all__ = ["split_list_member"]

_SEPARATOR = re.compile(rb"[ \t\r\n]*,[ \t\r\n]*")
_SPACE = re.compile(rb"[ \t\r\n]*")


def split_list_member(
    body: bytes, quotes: np.ndarray, brackets: Brackets, key: str
) -> tuple[bytes, list[tuple[int, int]]] | None:
    """``(document with body[key] = [], [(start, end) of each element])``, or None.

    ``body`` is checked JSON; ``quotes`` and ``brackets`` are what ``check_json_bytes``
    found in it. Only a top-level object whose ``key`` (exactly once, at depth 1) holds a
    list of objects is split; ``body[start:end]`` is one element's text.
    """
    lead = _SPACE.match(body).end()  # type: ignore[union-attr]
    if lead >= len(body) or body[lead] != 0x7B:  # '{'
        return None
    pos, depth, is_open = brackets.pos, brackets.depth, brackets.is_open
    if SHALLOW < 3:  # pragma: no cover - the element brackets are at depth 3
        return None

    def depth_at(p: int) -> int:
        k = int(np.searchsorted(pos, p)) - 1
        return int(depth[k]) if k >= 0 else 0

    needle = b'"' + key.encode("utf-8") + b'"'
    found = []
    start = body.find(needle)
    while start != -1:
        k = int(np.searchsorted(quotes, start))
        if k < len(quotes) and quotes[k] == start and k % 2 == 0 and depth_at(start) == 1:
            found.append(start)
        start = body.find(needle, start + 1)
    if len(found) != 1:
        return None
    colon = _SPACE.match(body, found[0] + len(needle)).end()  # type: ignore[union-attr]
    if body[colon:colon + 1] != b":":
        return None
    left = _SPACE.match(body, colon + 1).end()  # type: ignore[union-attr]
    if body[left:left + 1] != b"[":
        return None
    i = int(np.searchsorted(pos, left))  # the '[' itself
    after = np.flatnonzero(depth[i + 1:] == 1)
    if after.size == 0:
        return None
    j = i + 1 + int(after[0])  # its matching ']'
    right = int(pos[j])
    inner_pos, inner_depth, inner_open = pos[i + 1:j], depth[i + 1:j], is_open[i + 1:j]
    starts = inner_pos[inner_open & (inner_depth == 3)]
    ends = inner_pos[~inner_open & (inner_depth == 2)] + 1
    if len(starts) != len(ends):
        return None
    spans = list(zip(starts.tolist(), ends.tolist()))
    # between the elements only commas and white space: nothing else is in the list
    edges = [left + 1] + [e for _, e in spans]
    nexts = [s for s, _ in spans] + [right]
    for n, (a, b) in enumerate(zip(edges, nexts)):
        gap = body[a:b]
        pattern = _SPACE if n == 0 or n == len(spans) else _SEPARATOR
        if not pattern.fullmatch(gap):
            return None
    if any(body[s] != 0x7B or body[e - 1] != 0x7D for s, e in spans):
        return None
    head = body[:left] + b"[]" + body[right + 1:]
    return head, spans
