"""Find the elements of a JSON document's top-level lists while reading the file in chunks.

An annotation file is nearly all one or two lists (Datumaro ``items``; COCO ``images`` and
``annotations``). To keep an export's memory flat in the number of items, the reader never
holds the file: one pass over fixed-size chunks finds where each element of those lists
starts and ends, then the elements are read back and parsed one at a time
(:mod:`smaskd.annotations.streamed`). What stays is a pair of offsets per element.

The scan tracks what the whole-document check in :mod:`smaskd.annotations.jsonload` tracks,
carried across chunk edges: UTF-8 validity, whether a byte is inside a string (unescaped
quotes pair up; a quote is escaped by an odd run of backslashes, which may start in the
previous chunk), and the bracket depth. Brackets at depth <= 3 are kept: the top object, a
list in it, the list's elements. So are the opening quotes at depth 1, the top-level keys.

It answers None for anything unusual (a BOM other than UTF-8's, invalid UTF-8, nesting over
the limit, a key twice, a list element that is not an object, anything but commas and white
space between elements): the caller then reads the file whole, and that reader's message
names the problem. Nothing here raises on bad input.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["ListSpans", "ScannedDocument", "iter_elements", "scan_top_level_lists"]

CHUNK = 1 << 18  # bytes per read of the scan: its temporaries are a few times this
_BLOCK = 1 << 18  # bytes per read when elements are read back in order
_SHALLOW = 3
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_SPACE = re.compile(rb"[ \t\r\n]*")
_SEPARATOR = re.compile(rb"[ \t\r\n]*,[ \t\r\n]*")
_KEY_WINDOW = 4096  # a key's colon and its list's bracket must be this close to the key


@dataclass(frozen=True, slots=True)
class ListSpans:
    """One top-level list: its brackets and each element's ``[start, end)`` in the file."""

    open: int  # offset of '['
    close: int  # offset of ']'
    starts: np.ndarray  # int64, ascending
    ends: np.ndarray  # int64, exclusive


@dataclass(frozen=True, slots=True)
class ScannedDocument:
    """The document minus its scanned lists, and where their elements are."""

    head: bytes  # the document with every found list emptied ("key": []), BOM removed
    lists: dict[str, ListSpans]  # only the keys that were found, each holding a list
    size: int  # bytes scanned; a later read that sees another size is a changed file


@dataclass(slots=True)
class _Scan:
    bracket_pos: np.ndarray
    bracket_depth: np.ndarray  # depth just after the bracket
    bracket_char: np.ndarray  # the bracket's byte
    key_quotes: list[int]
    body_start: int
    size: int


def scan_top_level_lists(fd: int, keys: tuple[str, ...], max_bytes: int,
                         max_depth: int) -> ScannedDocument | None:
    """Scan the file open at ``fd``; the lists held by ``keys`` in its top-level object.

    None when the document is not plainly an object with at most one of each key (see the
    module docstring). A key that is absent, or holds something other than a list, is
    simply not in ``lists`` and stays in ``head``.
    """
    scan = _scan(fd, max_bytes, max_depth)
    if scan is None:
        return None
    first = _first_byte(fd, scan.body_start, scan.size)
    if first != b"{":
        return None
    lists: dict[str, ListSpans] = {}
    for key in keys:
        found = _find_list(fd, scan, key)
        if found is False:
            return None
        if found is not None:
            lists[key] = found
    head = _head(fd, scan, sorted(lists.values(), key=lambda s: s.open))
    return ScannedDocument(head, lists, scan.size)


def iter_elements(fd: int, spans: ListSpans) -> Iterator[bytes | None]:
    """Each element's bytes, in order, read in blocks; None (then stop) at a bad separator.

    Everything between the list's brackets is read exactly once, so checking the gaps here
    (white space, one comma between elements) completes the proof that the document is the
    head plus these elements.
    """
    starts, ends = spans.starts.tolist(), spans.ends.tolist()
    block_start, block = spans.open + 1, b""
    prev_end = spans.open + 1
    for n, (start, end) in enumerate(zip(starts, ends)):
        if end > block_start + len(block):
            block_start = prev_end
            block = os.pread(fd, max(_BLOCK, end - prev_end), prev_end)
            if block_start + len(block) < end:
                yield None
                return
        gap = block[prev_end - block_start:start - block_start]
        if not (_SPACE if n == 0 else _SEPARATOR).fullmatch(gap):
            yield None
            return
        yield block[start - block_start:end - block_start]
        prev_end = end
    tail = os.pread(fd, spans.close - prev_end, prev_end)
    if not _SPACE.fullmatch(tail):
        yield None


def _scan(fd: int, max_bytes: int, max_depth: int) -> _Scan | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    body_start = 0
    in_string = False
    backslashes = 0  # length of the backslash run that ended the previous chunk
    depth = 0
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    key_quotes: list[int] = []
    while True:
        chunk = os.pread(fd, CHUNK, offset)
        if not chunk:
            break
        if offset == 0:
            if chunk.startswith(_OTHER_BOMS):
                return None
            if chunk.startswith(_UTF8_BOM):
                body_start = len(_UTF8_BOM)
        if offset + len(chunk) > max_bytes:
            return None
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            return None
        buf = np.frombuffer(chunk, dtype=np.uint8)
        quotes = _unescaped_quotes(buf, backslashes)
        trailing = len(chunk) - len(chunk.rstrip(b"\\"))
        backslashes = backslashes + trailing if trailing == len(chunk) else trailing

        pos = np.flatnonzero((buf == 0x5B) | (buf == 0x5D) | (buf == 0x7B) | (buf == 0x7D))
        if pos.size:
            outside = ((np.searchsorted(quotes, pos) + in_string) % 2) == 0
            pos = pos[outside]
        is_open = (buf[pos] == 0x5B) | (buf[pos] == 0x7B)
        depths = depth + np.cumsum(np.where(is_open, 1, -1), dtype=np.int64)
        if depths.size and (depths.max() > max_depth or depths.min() < 0):
            return None
        shallow = np.where(is_open, depths, depths + 1) <= _SHALLOW
        # compact: these stay for the whole scan, two per list element
        kept.append(((pos[shallow] + offset).astype(np.int64), depths[shallow].astype(np.int8),
                     buf[pos[shallow]]))

        if quotes.size:
            opening = quotes[((np.arange(quotes.size) + in_string) % 2) == 0]
            k = np.searchsorted(pos, opening) - 1
            at_depth = np.where(k >= 0, depths[np.maximum(k, 0)] if depths.size else depth, depth)
            key_quotes.extend((opening[at_depth == 1] + offset).tolist())
        if depths.size:
            depth = int(depths[-1])
        in_string ^= bool(quotes.size % 2)
        offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    if in_string or depth != 0:
        return None
    pos, depths, chars = (np.concatenate(p) for p in zip(*kept)) if kept else (
        np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, np.uint8))
    return _Scan(pos, depths, chars, key_quotes, body_start, offset)


def _unescaped_quotes(buf: np.ndarray, carried: int) -> np.ndarray:
    """Positions of ``"`` in ``buf`` not escaped by an odd run of backslashes.

    ``carried`` is the backslash run the previous chunk ended with.
    """
    quotes = np.flatnonzero(buf == 0x22)
    if quotes.size == 0:
        return quotes
    after_backslash = np.zeros(quotes.size, dtype=bool)
    inner = quotes > 0
    after_backslash[inner] = buf[quotes[inner] - 1] == 0x5C
    if quotes[0] == 0 and carried:
        after_backslash[0] = True
    if not after_backslash.any():
        return quotes
    escaped = []
    for n in np.flatnonzero(after_backslash).tolist():  # rare: a quote right after a backslash
        q = int(quotes[n])
        run = 0
        while q - run - 1 >= 0 and buf[q - run - 1] == 0x5C:
            run += 1
        if run == q:
            run += carried
        if run % 2:
            escaped.append(n)
    return np.delete(quotes, escaped)


def _first_byte(fd: int, start: int, size: int) -> bytes:
    offset = start
    while offset < size:
        chunk = os.pread(fd, min(CHUNK, size - offset), offset)
        stripped = chunk.lstrip(b" \t\r\n")
        if stripped:
            return stripped[:1]
        offset += len(chunk)
    return b""


def _find_list(fd: int, scan: _Scan, key: str) -> ListSpans | None | bool:
    """The list ``key`` holds; None if the key is absent or holds no list; False if in doubt."""
    needle = b'"' + key.encode("utf-8") + b'"'
    where = None
    for q in scan.key_quotes:
        window = os.pread(fd, len(needle) + _KEY_WINDOW, q)
        if not window.startswith(needle):
            continue
        colon = _SPACE.match(window, len(needle)).end()  # type: ignore[union-attr]
        if window[colon:colon + 1] != b":":
            continue  # a string value that reads like the key
        if where is not None:
            return False  # the key twice: json keeps the last one; let the whole reader do it
        value = _SPACE.match(window, colon + 1).end()  # type: ignore[union-attr]
        if value >= len(window):
            return False
        where = (q + value, window[value:value + 1])
    if where is None:
        return None
    left, first = where
    if first != b"[":
        return None
    pos, depth, char = scan.bracket_pos, scan.bracket_depth, scan.bracket_char
    i = int(np.searchsorted(pos, left))
    if i >= len(pos) or pos[i] != left:
        return False
    after = np.flatnonzero(depth[i + 1:] == 1)
    if after.size == 0:
        return False
    j = i + 1 + int(after[0])
    if char[j] != 0x5D:
        return False
    inner_depth, inner_char, inner_pos = depth[i + 1:j], char[i + 1:j], pos[i + 1:j]
    opening = (inner_char == 0x5B) | (inner_char == 0x7B)
    element_open = opening & (inner_depth == 3)
    element_close = ~opening & (inner_depth == 2)
    # every element an object, not a list (the depth alone cannot tell them apart)
    if np.any(inner_char[element_open] != 0x7B) or np.any(inner_char[element_close] != 0x7D):
        return False
    starts, ends = inner_pos[element_open], inner_pos[element_close] + 1
    if len(starts) != len(ends) or np.any(starts[1:] < ends[:-1]) or np.any(ends <= starts):
        return False
    return ListSpans(left, int(pos[j]), starts, ends)


def _head(fd: int, scan: _Scan, found: list[ListSpans]) -> bytes:
    parts = []
    offset = scan.body_start
    for spans in found:
        parts.append(os.pread(fd, spans.open + 1 - offset, offset))
        offset = spans.close
    parts.append(os.pread(fd, scan.size - offset, offset))
    return b"".join(parts)
