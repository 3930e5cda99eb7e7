"""Reading untrusted zip archives in place: every entry is vetted before anything is decoded.

A dropped zip is hostile until proven otherwise, so ``SafeZip`` refuses the whole archive
(``UnsafeArchiveError``, naming the entry) when any entry could hurt a consumer that *did*
extract it, even though smaskd itself never writes members to disk:

* names: absolute (``/x``), ``..``, ``.`` or empty components, backslashes, drive letters
  (``C:``), NUL or other control characters; duplicate names and names that collide when case
  is folded (they overwrite each other on Windows/macOS);
* symlinks (Unix mode bits in ``external_attr``), encrypted entries;
* more than ``max_entries`` entries, more than ``max_total`` declared uncompressed bytes, a
  compression ratio over ``max_ratio`` (zip bombs);
* entries whose data overlap another entry's local header or data (the "overlapping files"
  bomb, where one compressed stream is referenced by many entries).

A file that is not a zip or is truncated is an ``InputError`` (the data is bad, not hostile).
Reads are capped per member (``read(name, limit)``); the decompressor never produces more than
an entry's declared size, which the totals above have already bounded.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from smaskd.errors import InputError, UnsafeArchiveError

__all__ = [
    "MAX_ENTRIES",
    "MAX_MEMBER_BYTES",
    "MAX_RATIO",
    "MAX_TOTAL_BYTES",
    "SafeZip",
]

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 2 << 30  # 2 GiB uncompressed in all
MAX_RATIO = 200
#: Entries smaller than this are not ratio-checked: a few KiB of zeros cannot hurt, and tiny
#: text files legitimately compress well beyond any ratio once headers are not counted.
RATIO_FLOOR = 64 << 10
#: Default per-member read cap (a 2^28-pixel RGBA PNG is far below this even uncompressed).
MAX_MEMBER_BYTES = 512 << 20

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Errors zipfile/zlib raise on corrupt or truncated input (zipfile has no single base class).
_CORRUPT = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    ValueError,
    struct.error,
    zlib.error,
    NotImplementedError,
    IndexError,
    KeyError,
    UnicodeDecodeError,
    OverflowError,
)


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    info: zipfile.ZipInfo


def _check_name(name: str) -> None:
    if not name:
        raise UnsafeArchiveError("zip entry with an empty name", "zip entry ''")
    where = f"zip entry {name!r}"
    if "\\" in name:
        raise UnsafeArchiveError("name contains a backslash (path separator on Windows)", where)
    if name.startswith("/"):
        raise UnsafeArchiveError("absolute name", where)
    if _DRIVE.match(name):
        raise UnsafeArchiveError("name starts with a drive letter", where)
    if _CONTROL.search(name):
        raise UnsafeArchiveError("name contains a control character", where)
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        raise UnsafeArchiveError("name contains '..' (would escape the extraction folder)", where)
    if any(p in ("", ".") for p in parts):
        raise UnsafeArchiveError("name contains an empty or '.' path component", where)


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


class SafeZip:
    """A vetted, read-only view of a zip archive; use as a context manager.

    ``names`` lists the file entries (folders left out) in archive order.
    """

    def __init__(
        self,
        source: str | Path | BinaryIO,
        *,
        max_entries: int = MAX_ENTRIES,
        max_total: int = MAX_TOTAL_BYTES,
        max_ratio: float = MAX_RATIO,
    ) -> None:
        self._label = str(source) if isinstance(source, (str, Path)) else "zip"
        self._owned: BinaryIO | None = None
        try:
            if isinstance(source, (str, Path)):
                self._owned = open(source, "rb")  # noqa: SIM115 - closed in close()
                fh: BinaryIO = self._owned
            else:
                fh = source
            self._fh = fh
            self._zf = zipfile.ZipFile(fh, "r")
        except _CORRUPT as e:
            self.close()
            raise InputError(f"not a zip archive, or truncated ({e})", self._label) from None
        except BaseException:
            self.close()
            raise
        try:
            self._entries = self._vet(max_entries, max_total, max_ratio)
        except BaseException:
            self.close()
            raise
        self.names: list[str] = [e.name for e in self._entries if not e.name.endswith("/")]
        self._by_name = {e.name: e.info for e in self._entries}

    # -- vetting ---------------------------------------------------------------------------

    def _vet(self, max_entries: int, max_total: int, max_ratio: float) -> list[_Entry]:
        infos = self._zf.infolist()
        if len(infos) > max_entries:
            raise UnsafeArchiveError(
                f"archive has {len(infos)} entries, more than the limit of {max_entries}",
                self._label,
            )
        entries: list[_Entry] = []
        seen: dict[str, str] = {}
        total = 0
        for info in infos:
            name = info.filename
            # zipfile turns '\' into '/' on Windows only; orig_filename keeps the raw name.
            raw = getattr(info, "orig_filename", name)
            _check_name(raw)
            where = f"zip entry {name!r}"
            if _is_symlink(info):
                raise UnsafeArchiveError("entry is a symbolic link", where)
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError("entry is encrypted", where)
            folded = name.rstrip("/").casefold()
            if folded in seen:
                other = seen[folded]
                what = "duplicate name" if other.rstrip("/") == name.rstrip("/") else (
                    f"name collides with {other!r} when case is ignored"
                )
                raise UnsafeArchiveError(what, where)
            seen[folded] = name
            if info.file_size < 0 or info.compress_size < 0:
                raise UnsafeArchiveError("negative size in the central directory", where)
            total += info.file_size
            if total > max_total:
                raise UnsafeArchiveError(
                    f"archive expands to more than {max_total} bytes (limit reached at this entry)",
                    where,
                )
            if info.file_size >= RATIO_FLOOR:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > max_ratio:
                    raise UnsafeArchiveError(
                        f"compression ratio {ratio:.0f}:1 is over the limit of {max_ratio:.0f}:1 "
                        f"({info.compress_size} → {info.file_size} bytes)",
                        where,
                    )
            entries.append(_Entry(name, info))
        self._check_overlaps(entries)
        return entries

    def _check_overlaps(self, entries: list[_Entry]) -> None:
        """Each entry's local header + data must end before the next entry (or the directory)."""
        spans: list[tuple[int, int, str]] = []
        fh = self._fh
        for e in entries:
            info = e.info
            start = info.header_offset
            where = f"zip entry {e.name!r}"
            try:
                fh.seek(start)
                raw = fh.read(_LOCAL_HEADER.size)
            except (OSError, ValueError, OverflowError) as err:
                raise InputError(f"cannot read the local header ({err})", where) from None
            if len(raw) != _LOCAL_HEADER.size:
                raise InputError("archive is truncated (local header missing)", where)
            fields = _LOCAL_HEADER.unpack(raw)
            if fields[0] != _LOCAL_MAGIC:
                raise InputError("bad local header signature (corrupt or truncated archive)", where)
            name_len, extra_len = fields[-2], fields[-1]
            end = start + _LOCAL_HEADER.size + name_len + extra_len + info.compress_size
            spans.append((start, end, e.name))
        spans.sort()
        directory = getattr(self._zf, "start_dir", None)
        for (s0, e0, n0), (s1, _e1, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                raise UnsafeArchiveError(
                    f"entry data overlaps entry {n0!r} (bytes {s0}..{e0} vs offset {s1})",
                    f"zip entry {n1!r}",
                )
        if spans and directory is not None and spans[-1][1] > directory:
            raise UnsafeArchiveError(
                "entry data runs into the central directory", f"zip entry {spans[-1][2]!r}"
            )

    # -- reading ---------------------------------------------------------------------------

    def size(self, name: str) -> int:
        """Declared uncompressed size of a member."""
        return self._by_name[name].file_size

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """The member's bytes; refuses members over ``limit`` bytes before decompressing."""
        info = self._by_name.get(name)
        where = f"zip entry {name!r}"
        if info is None:
            raise InputError("no such entry in the archive", where)
        if info.file_size > limit:
            raise InputError(f"entry is {info.file_size} bytes, over the limit of {limit}", where)
        try:
            with self._zf.open(info) as f:
                data = f.read(limit + 1)
        except _CORRUPT as e:
            raise InputError(f"cannot read entry: corrupt or truncated data ({e})", where) from None
        except RuntimeError as e:  # zipfile: encrypted / password required
            raise InputError(f"cannot read entry ({e})", where) from None
        if len(data) > limit:
            raise InputError(f"entry expands beyond the limit of {limit} bytes", where)
        return data

    def read_head(self, name: str, n: int) -> bytes:
        """Up to ``n`` leading bytes of a member (for sniffing image headers cheaply)."""
        info = self._by_name.get(name)
        where = f"zip entry {name!r}"
        if info is None:
            raise InputError("no such entry in the archive", where)
        try:
            with self._zf.open(info) as f:
                return f.read(n)
        except _CORRUPT as e:
            raise InputError(f"cannot read entry: corrupt or truncated data ({e})", where) from None
        except RuntimeError as e:
            raise InputError(f"cannot read entry ({e})", where) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name and not str(name).endswith("/")

    def close(self) -> None:
        zf = getattr(self, "_zf", None)
        if zf is not None:
            zf.close()
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __enter__(self) -> "SafeZip":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
