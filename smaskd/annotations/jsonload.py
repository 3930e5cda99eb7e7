"""Loading untrusted JSON safely, and typed access to what was loaded.

Every annotation file is hostile until proven otherwise (DESIGN.md, "Untrusted input"), and the
stdlib ``json`` module is permissive in ways that hurt later: it accepts ``NaN``/``Infinity``,
turns ``1e400`` into ``inf``, and recurses once per nesting level, so ``[[[[...`` 100,000 deep
ends in a ``RecursionError`` traceback instead of a message. So:

* the size is capped before reading (``max_bytes``, configurable by the caller);
* a UTF-8 BOM is accepted (legacy Windows tools write one); UTF-16/32 and invalid UTF-8 are
  refused with the byte offset;
* the nesting depth is measured with a vectorised bracket scan that skips strings, *before*
  the parser runs;
* ``NaN``/``Infinity`` are refused through ``parse_constant`` with their line and column;
* syntax errors become ``InputError`` with "line L column C".

The second half, ``At`` and the ``expect_*`` functions, is how the readers walk the parsed
document: each access names its JSON path (``items[3].annotations[2].points``), so a wrong type
at any level is an ``InputError`` that says where, never a ``TypeError``/``KeyError``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from smaskd.errors import IncompleteInputError, InputError

__all__ = [
    "COORD_LIMIT",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "At",
    "expect_dict",
    "expect_int",
    "expect_list",
    "expect_number",
    "expect_numbers",
    "expect_str",
    "load_json_bytes",
    "load_json_file",
    "parse_checked",
    "read_json_file",
    "refuse_constant",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_DEPTH = 512
#: Coordinates beyond this are corrupt data, not annotations; it also keeps every value finite
#: and far inside what the rasteriser's fixed-point arithmetic can represent.
COORD_LIMIT = 1e9

_BOMS = (
    (b"\xef\xbb\xbf", None),
    (b"\xff\xfe\x00\x00", "UTF-32 LE"),
    (b"\x00\x00\xfe\xff", "UTF-32 BE"),
    (b"\xff\xfe", "UTF-16 LE"),
    (b"\xfe\xff", "UTF-16 BE"),
)
_CONSTANT = re.compile(rb"-?(?:NaN|Infinity)")


def load_json_file(
    path: Path,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    name: str | None = None,
) -> Any:
    """Read and parse ``path``, refusing files over ``max_bytes`` before reading them."""
    source = name or Path(path).name
    return load_json_bytes(read_json_file(path, max_bytes, source), source, max_depth)


def read_json_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                   source: str | None = None) -> bytes:
    """The bytes of ``path``, refusing files over ``max_bytes`` before reading them."""
    source = source or Path(path).name
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise InputError(f"file is {size} bytes, over the limit of {max_bytes}", source)
            # The file may grow between stat and read; read(n) allocates n bytes up front, so
            # ask for what is there (plus slack), not for max_bytes: under a worker's
            # RLIMIT_AS a 512 MiB request fails even for a 1 KiB file.
            data = fh.read(min(max_bytes, size + (1 << 20)) + 1)
    except OSError as e:
        raise InputError(f"cannot read file: {e.strerror or e}", source) from None
    if len(data) > max_bytes:
        raise InputError(f"file is over the limit of {max_bytes} bytes", source)
    return data


def load_json_bytes(data: bytes, source: str = "JSON", max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse UTF-8 JSON bytes (optional BOM) under the depth limit; strict about constants."""
    body, text, quotes = _checked(data, source, max_depth)
    return parse_checked(body, text, quotes, source, max_depth)


def _checked(data: bytes, source: str, max_depth: int) -> tuple[bytes, str, np.ndarray]:
    offset = 0
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            if encoding is not None:
                raise InputError(f"file is {encoding} (byte order mark); save it as UTF-8", source)
            offset = len(bom)
            break
    body = data[offset:]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        # a multi-byte character cut by the end of the file: a writer not done yet
        cls = IncompleteInputError if e.reason == "unexpected end of data" else InputError
        raise cls(
            f"not valid UTF-8 at byte offset {e.start + offset} ({e.reason})", source
        ) from None
    quotes = _check_depth(body, source, max_depth)
    return body, text, quotes


def refuse_constant(name: str) -> Any:
    """``parse_constant`` for ``json.loads``: NaN and ±Infinity are not JSON."""
    raise _ConstantError(name)


def parse_checked(body: bytes, text: str | bytes, quotes: np.ndarray, source: str,
                  max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """``json.loads`` of a checked body, its failures turned into ``InputError``."""
    try:
        return json.loads(text, parse_constant=refuse_constant)
    except _ConstantError as e:
        place = _locate_constant(body, quotes)
        raise InputError(
            f"{e.args[0]} is not valid JSON (only finite numbers are allowed){place}", source
        ) from None
    except json.JSONDecodeError as e:
        # The parser stopped at the end of the text: what came was a valid start of a
        # document (a writer not done yet, or a cut copy), not a wrong byte somewhere.
        cls = IncompleteInputError if e.pos >= len(text.rstrip()) else InputError
        raise cls(
            f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", source
        ) from None
    except RecursionError:  # the depth scan should make this unreachable; never a traceback
        raise InputError(f"JSON nesting too deep (limit {max_depth})", source) from None
    except ValueError as e:  # e.g. an integer literal over sys.get_int_max_str_digits()
        raise InputError(f"invalid JSON: {e}", source) from None


class _ConstantError(Exception):
    pass


_SCAN_CHUNK = 1 << 20  # bytes per step of the scans: temporaries stay ~1 MB, not file-sized

def _unescaped_quotes(buf: np.ndarray) -> np.ndarray:
    """Positions of ``"`` that are not escaped by an odd run of backslashes."""
    dtype = np.int32 if len(buf) < 2**31 else np.int64
    parts = [(np.flatnonzero(buf[a:a + _SCAN_CHUNK] == 0x22) + a).astype(dtype)
             for a in range(0, len(buf), _SCAN_CHUNK)]
    quotes = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    if quotes.size == 0:
        return quotes
    suspicious = quotes[(quotes > 0) & (buf[np.maximum(quotes - 1, 0)] == 0x5C)]
    if suspicious.size == 0:
        return quotes
    escaped = []
    for q in suspicious.tolist():  # rare: only quotes right after a backslash
        run = 0
        while q - run - 1 >= 0 and buf[q - run - 1] == 0x5C:
            run += 1
        if run % 2:
            escaped.append(q)
    return np.setdiff1d(quotes, np.asarray(escaped, dtype=quotes.dtype), assume_unique=True)


def _check_depth(body: bytes, source: str, max_depth: int) -> np.ndarray:
    """Refuse nesting deeper than ``max_depth``; returns the positions of the string quotes.

    JSON has quotes only around strings, so unescaped quotes pair up as string start/end and a
    bracket is inside a string exactly when an odd number of them precede it. Multi-byte UTF-8
    sequences never contain ASCII bytes, so scanning bytes is exact. The scan goes a chunk at
    a time, carrying the depth, so a large file costs no file-sized temporaries.
    """
    buf = np.frombuffer(body, dtype=np.uint8)
    quotes = _unescaped_quotes(buf)
    depth0 = 0
    for a in range(0, len(buf), _SCAN_CHUNK):
        chunk = buf[a:a + _SCAN_CHUNK]
        opens = (chunk == 0x5B) | (chunk == 0x7B)
        pos = np.flatnonzero(opens | (chunk == 0x5D) | (chunk == 0x7D))
        if pos.size == 0:
            continue
        here = pos + a
        outside = (np.searchsorted(quotes, here) % 2) == 0
        pos, here = pos[outside], here[outside]
        if pos.size == 0:
            continue
        is_open = opens[pos]
        depth = depth0 + np.cumsum(np.where(is_open, 1, -1), dtype=np.int64)
        too_deep = np.flatnonzero(depth > max_depth)
        if too_deep.size:
            line, col = _line_col(body, int(here[too_deep[0]]))
            raise InputError(
                f"JSON nesting deeper than {max_depth} levels at line {line} column {col}; "
                "refused before parsing",
                source,
            )
        depth0 = int(depth[-1])
    return quotes


def _locate_constant(body: bytes, quotes: np.ndarray) -> str:
    for m in _CONSTANT.finditer(body):
        if int(np.searchsorted(quotes, m.start())) % 2 == 0:
            line, col = _line_col(body, m.start())
            return f" at line {line} column {col}"
    return ""


def _line_col(body: bytes, offset: int) -> tuple[int, int]:
    line_start = body.rfind(b"\n", 0, offset) + 1
    column = len(body[line_start:offset].decode("utf-8", "replace")) + 1
    return body.count(b"\n", 0, offset) + 1, column


class At:
    """A place in a JSON document: file, path, and the item/annotation it belongs to.

    ``str(at)`` is the ``where`` of an error: ``train.json: items[3].annotations[2].points
    (item '100', annotation id 5)``.
    """

    __slots__ = ("context", "path", "source")

    def __init__(self, source: str, path: str = "", context: str = "") -> None:
        self.source = source
        self.path = path
        self.context = context

    def key(self, key: str) -> At:
        return At(self.source, f"{self.path}.{key}" if self.path else key, self.context)

    def index(self, i: int) -> At:
        return At(self.source, f"{self.path}[{i}]", self.context)

    def within(self, context: str) -> At:
        """The same place, described further (item id, annotation id)."""
        ctx = f"{self.context}, {context}" if self.context else context
        return At(self.source, self.path, ctx)

    def error(self, message: str) -> InputError:
        return InputError(message, str(self))

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where} ({self.context})" if self.context else where


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def expect_dict(value: Any, at: At) -> dict:
    if not isinstance(value, dict):
        raise at.error(f"expected an object, got {_kind(value)}")
    return value


def expect_list(value: Any, at: At) -> list:
    if not isinstance(value, list):
        raise at.error(f"expected a list, got {_kind(value)}")
    return value


def expect_str(value: Any, at: At) -> str:
    """A string that is Unicode text: JSON's ``\\ud800`` escapes allow a lone UTF-16
    surrogate, which no file name, zip member or UTF-8 output can hold."""
    if not isinstance(value, str):
        raise at.error(f"expected a string, got {_kind(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise at.error(f"string has a lone UTF-16 surrogate {value[e.start]!r} at "
                           f"character {e.start} (not Unicode text)") from None
    return value


def expect_int(value: Any, at: At, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (``5.0`` is accepted as 5: some writers emit every number as a float)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise at.error(f"expected an integer, got {_kind(value)}")
    if minimum is not None and value < minimum:
        raise at.error(f"expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise at.error(f"expected an integer <= {maximum}, got {value}")
    return value


def expect_number(value: Any, at: At) -> float:
    """A finite int or float within ``COORD_LIMIT``, kept exactly as parsed."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise at.error(f"expected a number, got {_kind(value)}")
    if not -COORD_LIMIT <= value <= COORD_LIMIT:
        raise at.error(f"number {value!r} is out of range (finite, within ±{COORD_LIMIT:g})")
    return value


_NUMERIC = {int, float}


def expect_numbers(
    value: Any, at: At, count: int | None = None, multiple_of: int = 1, minimum: int = 0
) -> tuple[float, ...]:
    """A flat list of numbers, checked at C speed (polygons may hold millions of them)."""
    values = expect_list(value, at)
    if values and not set(map(type, values)) <= _NUMERIC:
        for i, v in enumerate(values):
            expect_number(v, at.index(i))
    if values and not (-COORD_LIMIT <= min(values) and max(values) <= COORD_LIMIT):
        for i, v in enumerate(values):
            expect_number(v, at.index(i))
    n = len(values)
    if count is not None and n != count:
        raise at.error(f"expected {count} numbers, got {n}")
    if n % multiple_of:
        raise at.error(f"expected a multiple of {multiple_of} numbers, got {n}")
    if n < minimum:
        raise at.error(f"expected at least {minimum} numbers, got {n}")
    return tuple(values)
