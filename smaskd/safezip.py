"""Reading untrusted zip archives in place: every entry is vetted before anything is decoded.

A dropped zip is hostile until proven otherwise, so ``SafeZip`` refuses the whole archive
(``UnsafeArchiveError``, naming the entry) when any entry could hurt a consumer that *did*
extract it, even though smaskd itself never writes members to disk:

* names: absolute (``/x``), ``..``, ``.`` or empty components, backslashes, drive letters
  (``C:``), NUL or other control characters; duplicate names and names that collide when case
  is folded (they overwrite each other on Windows/macOS);
* symlinks (Unix mode bits in ``external_attr``), encrypted entries;
* more than ``max_entries`` entries, more than ``max_total`` declared uncompressed bytes, a
  compression ratio over ``max_ratio`` (zip bombs). A ``.png`` entry is judged as PNG data:
  an uncompressed (level-0) PNG is legal and zips ~500:1, so it may be as large as the raw
  pixel rows its own header declares (read from the entry's first bytes; the header's pixel
  count is capped as decoding caps it);
* entries whose data overlap another entry's local header or data (the "overlapping files"
  bomb, where one compressed stream is referenced by many entries).

A file that is not a zip or is truncated is an ``InputError`` (the data is bad, not hostile).
Reads are capped per member (``read(name, limit)``); the decompressor never produces more than
an entry's declared size, which the totals above have already bounded.

Memory is flat in the number of entries: the directory is read with :mod:`smaskd.zipdir`
record by record, and only two int64 per entry stay (a key of the folded name and the
record's offset); an entry's record is read again when it is looked up. ``zipfile.ZipFile``
would keep ~0.7 KB per entry, ~10 MB for a 6,000-image mask zip.
"""

from __future__ import annotations

import bisect
import re
import stat
import struct
import zipfile
import zlib
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from smaskd import MAX_IMAGE_PIXELS
from smaskd.errors import InputError, UnsafeArchiveError
from smaskd.zipdir import Record, RecordReader, find_directory, records

__all__ = [
    "MAX_ENTRIES",
    "MAX_MEMBER_BYTES",
    "MAX_RATIO",
    "MAX_TOTAL_BYTES",
    "SafeZip",
]

#: Two entries an image plus a few: 250,000 images. The index costs 16 bytes an entry (8 MB
#: at the limit); the limit is there against directories of millions of empty entries.
MAX_ENTRIES = 500_000
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


def _ratio_error(rec: Record, max_ratio: float, png: bool = False) -> UnsafeArchiveError:
    ratio = rec.file_size / max(rec.compress_size, 1)
    more = " and larger than the raw pixels its PNG header declares" if png else ""
    return UnsafeArchiveError(
        f"compression ratio {ratio:.0f}:1 is over the limit of {max_ratio:.0f}:1{more} "
        f"({rec.compress_size} → {rec.file_size} bytes)",
        f"zip entry {rec.name!r}",
    )


#: Channels of each PNG colour type (gray, RGB, palette, gray+alpha, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_raw_bytes(head: bytes) -> int | None:
    """The filtered rows (filter byte + pixels) a PNG header declares; None: not a PNG
    header, or one over the decoder's pixel cap."""
    if len(head) < 33 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    width, height, depth, ctype = struct.unpack(">IIBB", head[16:26])
    channels = _PNG_CHANNELS.get(ctype)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        return None
    if not 0 < width * height <= MAX_IMAGE_PIXELS:
        return None
    return height * (1 + (width * channels * depth + 7) // 8)


def _is_symlink(rec: Record) -> bool:
    mode = rec.external_attr >> 16
    return stat.S_ISLNK(mode)


def _key(name: str) -> int:
    """Names that overwrite each other when extracted (case, a trailing '/') share a key."""
    return hash(name.rstrip("/").casefold())


class _MemberReader(zipfile.ZipFile):
    """``zipfile``'s member reading, without ``zipfile``'s directory.

    ``ZipFile.open(info)`` checks the local header against ``info``, decompresses with any
    method and checks the CRC, and needs no other entry; ``_RealGetContents`` is what builds a
    ``ZipInfo`` per entry. Should a later Python rename it, the directory is read twice: more
    memory, the same results.
    """

    def _RealGetContents(self) -> None:  # noqa: N802 - zipfile's name
        pass


class _Vetted:
    """What the vetting pass keeps per entry, in archive order (int64 arrays, not objects)."""

    def __init__(self) -> None:
        self.keys, self.where = array("q"), array("q")  # name key, record offset
        self.starts, self.ends = array("q"), array("q")  # local header .. end of data

    def add(self, rec: Record, end: int) -> None:
        self.keys.append(_key(rec.name))
        self.where.append(rec.offset)
        self.starts.append(rec.header_offset)
        self.ends.append(end)


class SafeZip:
    """A vetted, read-only view of a zip archive; use as a context manager.

    ``iter_names()`` (and the list ``names``) give the file entries (folders left out) in
    archive order, read from the file each time.
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
        self._zf: zipfile.ZipFile | None = None
        self._png_ratios: list[Record] = []  # .png entries over max_ratio, judged as PNGs
        try:
            if isinstance(source, (str, Path)):
                self._owned = open(source, "rb")  # noqa: SIM115 - closed in close()
                fh: BinaryIO = self._owned
            else:
                fh = source
            self._fh = fh
            self._dir = find_directory(fh)
            self._records = RecordReader(fh, self._dir)
            self._check_count(self._dir.count, max_entries)
            vetted = self._vet(max_entries, max_total, max_ratio)
            self._check_duplicates(vetted)
            self._check_overlaps(vetted)
            order = np.argsort(np.frombuffer(vetted.keys, np.int64), kind="stable")
            # sorted by key; stdlib arrays, as bisect on them runs in C (numpy's searchsorted
            # costs ~6 µs a call for one Python int)
            self._keys = array("q", np.frombuffer(vetted.keys, np.int64)[order].tobytes())
            self._where = array("q", np.frombuffer(vetted.where, np.int64)[order].tobytes())
            self._zf = _MemberReader(fh, "r")
            self._check_png_sizes(max_ratio)
        except _CORRUPT as e:
            self.close()
            raise InputError(f"not a zip archive, or truncated ({e})", self._label) from None
        except BaseException:
            self.close()
            raise

    # -- vetting ---------------------------------------------------------------------------

    def _check_count(self, count: int, max_entries: int) -> None:
        if count > max_entries:
            raise UnsafeArchiveError(
                f"archive has {count} entries, more than the limit of {max_entries}",
                self._label,
            )

    def _vet(self, max_entries: int, max_total: int, max_ratio: float) -> _Vetted:
        """One pass over the records: each entry's own checks, then what later checks need."""
        vetted = _Vetted()
        total = 0
        for n, rec in enumerate(records(self._fh, self._dir), start=1):
            if n > max_entries:  # the end record said fewer
                raise UnsafeArchiveError(
                    f"archive has more than {max_entries} entries (its end record says "
                    f"{self._dir.count})", self._label)
            name = rec.name
            _check_name(name)
            where = f"zip entry {name!r}"
            if _is_symlink(rec):
                raise UnsafeArchiveError("entry is a symbolic link", where)
            if rec.flag_bits & 0x1:
                raise UnsafeArchiveError("entry is encrypted", where)
            total += rec.file_size
            if total > max_total:
                raise UnsafeArchiveError(
                    f"archive expands to more than {max_total} bytes (limit reached at this entry)",
                    where,
                )
            if rec.file_size >= RATIO_FLOOR:
                ratio = rec.file_size / max(rec.compress_size, 1)
                if ratio > max_ratio:
                    if not name.lower().endswith(".png"):
                        raise _ratio_error(rec, max_ratio)
                    self._png_ratios.append(rec)  # judged once members can be read
            vetted.add(rec, self._data_end(rec))
        return vetted

    def _check_png_sizes(self, max_ratio: float) -> None:
        """A highly compressed ``.png`` entry is fine when it is no larger than the raw rows
        its IHDR declares (plus chunk and stored-block overhead): that is a level-0 PNG."""
        for rec in self._png_ratios:
            raw = _png_raw_bytes(self._open_read(rec, 33))
            if raw is None or rec.file_size > raw + raw // 64 + (64 << 10):
                raise _ratio_error(rec, max_ratio, png=raw is not None)
        self._png_ratios = []

    def _data_end(self, rec: Record) -> int:
        """Where the entry's local header + data end (the local header is read for its size)."""
        where = f"zip entry {rec.name!r}"
        try:
            self._fh.seek(rec.header_offset)
            raw = self._fh.read(_LOCAL_HEADER.size)
        except (OSError, ValueError, OverflowError) as err:
            raise InputError(f"cannot read the local header ({err})", where) from None
        if len(raw) != _LOCAL_HEADER.size:
            raise InputError("archive is truncated (local header missing)", where)
        fields = _LOCAL_HEADER.unpack(raw)
        if fields[0] != _LOCAL_MAGIC:
            raise InputError("bad local header signature (corrupt or truncated archive)", where)
        name_len, extra_len = fields[-2], fields[-1]
        return rec.header_offset + _LOCAL_HEADER.size + name_len + extra_len + rec.compress_size

    def _name_at(self, offset: int) -> str:
        return self._records.at(offset).name

    def _check_duplicates(self, vetted: _Vetted) -> None:
        """Names equal when case is folded; keys that are equal by chance are told apart."""
        keys = np.frombuffer(vetted.keys, np.int64)
        order = np.argsort(keys, kind="stable")  # equal keys stay in archive order
        same = np.flatnonzero(keys[order][1:] == keys[order][:-1])
        shared = np.zeros(len(keys), bool)  # (not np.unique: it imports numpy.ma, ~1.5 MB)
        shared[same] = shared[same + 1] = True
        clash: tuple[int, str, str] | None = None  # (archive index, name, earlier name)
        seen: dict[str, str] = {}
        for i in np.flatnonzero(shared):
            idx = int(order[i])
            name = self._name_at(vetted.where[idx])
            if i == 0 or keys[order[i - 1]] != keys[idx]:
                seen = {}  # a new run of equal keys
            folded = name.rstrip("/").casefold()
            if folded in seen and (clash is None or idx < clash[0]):
                clash = (idx, name, seen[folded])
            seen.setdefault(folded, name)
        if clash is not None:
            _, name, other = clash
            what = "duplicate name" if other.rstrip("/") == name.rstrip("/") else (
                f"name collides with {other!r} when case is ignored"
            )
            raise UnsafeArchiveError(what, f"zip entry {name!r}")

    def _check_overlaps(self, vetted: _Vetted) -> None:
        """Each entry's local header + data must end before the next entry (or the directory)."""
        if not vetted.starts:
            return
        starts = np.frombuffer(vetted.starts, np.int64)
        ends = np.frombuffer(vetted.ends, np.int64)
        order = np.lexsort((ends, starts))
        s, e = starts[order], ends[order]
        bad = np.flatnonzero(s[1:] < e[:-1])
        if bad.size:
            k = int(bad[0])
            first, second = (self._name_at(vetted.where[order[j]]) for j in (k, k + 1))
            raise UnsafeArchiveError(
                f"entry data overlaps entry {first!r} (bytes {s[k]}..{e[k]} vs offset {s[k + 1]})",
                f"zip entry {second!r}",
            )
        if e[-1] > self._dir.start:
            raise UnsafeArchiveError("entry data runs into the central directory",
                                     f"zip entry {self._name_at(vetted.where[order[-1]])!r}")

    # -- looking up ------------------------------------------------------------------------

    def _find(self, name: str, fold: bool = False) -> Record | None:
        """The entry named ``name`` (or, with ``fold``, equal to it when case is folded)."""
        key, keys = _key(name), self._keys
        i = bisect.bisect_left(keys, key)
        want = name.rstrip("/").casefold() if fold else name
        while i < len(keys) and keys[i] == key:
            rec = self._record(self._where[i])
            if (rec.name.rstrip("/").casefold() if fold else rec.name) == want:
                return rec
            i += 1
        return None

    def _record(self, offset: int) -> Record:
        try:
            return self._records.at(offset)
        except _CORRUPT as e:  # the file changed since it was vetted
            raise InputError(f"cannot read the zip directory ({e})", self._label) from None

    def locate(self, name: str) -> int | None:
        """Where the file entry ``name`` is, for :meth:`read_located`; None: there is none.

        A caller reading many members can look each up once, ahead, and keep 8 bytes for it:
        a lookup is the costly part of a small member's read.
        """
        rec = None if name.endswith("/") else self._find(name)
        return None if rec is None else rec.offset

    def find_folded(self, name: str) -> str | None:
        """The file entry whose name equals ``name`` when case is folded (at most one: names
        that collide so are refused)."""
        rec = self._find(name, fold=True)
        return None if rec is None or rec.name.endswith("/") else rec.name

    def iter_names(self) -> Iterator[str]:
        """The file entries in archive order, read from the directory as they are needed."""
        try:
            for rec in records(self._fh, self._dir):
                if not rec.name.endswith("/"):
                    yield rec.name
        except _CORRUPT as e:  # the file changed since it was vetted
            raise InputError(f"cannot read the zip directory ({e})", self._label) from None

    @property
    def names(self) -> list[str]:
        """``iter_names()`` as a list (made at each call)."""
        return list(self.iter_names())

    # -- reading ---------------------------------------------------------------------------

    def _entry(self, name: str) -> Record:
        rec = self._find(name)
        if rec is None:
            raise InputError("no such entry in the archive", f"zip entry {name!r}")
        return rec

    def size(self, name: str) -> int:
        """Declared uncompressed size of a member."""
        return self._entry(name).file_size

    def read(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """The member's bytes; refuses members over ``limit`` bytes before decompressing."""
        return self._read(self._entry(name), limit)

    def read_located(self, where: int, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """``read`` of the entry :meth:`locate` found ``where``."""
        return self._read(self._record(where), limit)

    def _read(self, rec: Record, limit: int) -> bytes:
        where = f"zip entry {rec.name!r}"
        if rec.file_size > limit:
            raise InputError(f"entry is {rec.file_size} bytes, over the limit of {limit}", where)
        data = self._open_read(rec, limit + 1)
        if len(data) > limit:
            raise InputError(f"entry expands beyond the limit of {limit} bytes", where)
        return data

    def read_head(self, name: str, n: int) -> bytes:
        """Up to ``n`` leading bytes of a member (for sniffing image headers cheaply)."""
        return self._open_read(self._entry(name), n)

    def _open_read(self, rec: Record, n: int) -> bytes:
        assert self._zf is not None
        where = f"zip entry {rec.name!r}"
        if rec.flag_bits & 0x1:  # vetted, unless the file changed since
            raise UnsafeArchiveError("entry is encrypted", where)
        try:
            with self._zf.open(rec.zipinfo()) as f:
                return f.read(n)
        except _CORRUPT as e:
            raise InputError(f"cannot read entry: corrupt or truncated data ({e})", where) from None
        except RuntimeError as e:  # zipfile: encrypted / password required
            raise InputError(f"cannot read entry ({e})", where) from None

    def __iter__(self) -> Iterator[str]:
        return self.iter_names()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and not name.endswith("/") and self._find(name) is not None

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
