"""A zip's central directory, read record by record from the file instead of held in memory.

``zipfile.ZipFile`` turns every entry into a ``ZipInfo`` as it opens an archive (~0.7 KB
each with its name, extra field and ``NameToInfo`` slot): a 6,000-image mask zip (12,000
entries) costs ~10 MB before its first PNG is decoded, and 1.7 KB more per image.
:class:`~smaskd.safezip.SafeZip` keeps two integers per entry instead and reads an entry's
record again when the entry is opened; this module is that reading:

* :func:`find_directory`: the end record, as ``zipfile`` finds it (no comment first, else the
  last signature in the final 64 KiB), the zip64 end record when its locator is there, and
  the bytes prepended to the archive (self-extractors), which shift every offset;
* :func:`records`: the records in archive order, read in chunks, one ``Record`` at a time;
* :class:`RecordReader`: one record, from the offset ``records`` gave it.

Names and sizes are the ones ``zipfile`` 3.11 gives (UTF-8 names when flag bit 11 is set,
else cp437; zip64 sizes and offsets from the extra field; 3.12 would also take a name from
an Info-ZIP Unicode Path field, this module keeps the header's), and ``Record.zipinfo`` is
what ``ZipFile.open`` needs, so the members are still read by ``zipfile`` (every compression
method, the local-header name check, the CRC). Stricter than ``zipfile`` in one place: a
record running past the end of the directory is an error, not a silently cut name.
"""

from __future__ import annotations

import os
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from smaskd.errors import UnsafeArchiveError

__all__ = ["Directory", "Record", "RecordReader", "find_directory", "has_directory", "records"]

_END = struct.Struct("<4s4H2LH")  # 22 bytes
_END_MAGIC = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")  # 20 bytes
_LOCATOR_MAGIC = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")  # 56 bytes
_END64_MAGIC = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")  # 46 bytes
_CENTRAL_MAGIC = b"PK\x01\x02"
_MAX_COMMENT = 1 << 16
_MAX_EXTRACT_VERSION = 63  # zipfile refuses later versions
_UTF8_NAME = 0x800
_ZIP64_EXTRA = 0x0001
_CHUNK = 64 << 10


@dataclass(frozen=True, slots=True)
class Directory:
    """Where the records are: ``start`` and ``size`` in bytes, ``count`` as declared."""

    start: int
    size: int
    count: int
    concat: int  # bytes before the archive proper: added to every local header offset


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 µs more, per entry and lookup
class Record:
    """One central directory record: what vetting and reading an entry need."""

    offset: int  # of the record in the file (for RecordReader.at)
    length: int  # of the record, name, extra and comment included
    name: str  # as zipfile's ``orig_filename`` (nothing cut at a NUL)
    flag_bits: int
    compress_type: int
    crc: int
    compress_size: int
    file_size: int
    external_attr: int
    header_offset: int  # of the local header in the file (``concat`` added)

    def zipinfo(self) -> zipfile.ZipInfo:
        """The ``ZipInfo`` ``ZipFile.open`` reads the entry with."""
        info = zipfile.ZipInfo(self.name)
        info.flag_bits = self.flag_bits
        info.compress_type = self.compress_type
        info.CRC = self.crc
        info.compress_size = self.compress_size
        info.file_size = self.file_size
        info.external_attr = self.external_attr
        info.header_offset = self.header_offset
        return info


def _read_at(fh: BinaryIO, offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset``: with ``pread`` where ``fh`` has a descriptor, so its buffer
    stays (an entry's record is read between the reads of the members ``zipfile`` makes)."""
    try:
        fd = fh.fileno()
    except (OSError, AttributeError, ValueError):  # BytesIO: io.UnsupportedOperation
        fh.seek(offset)
        return fh.read(n)
    return os.pread(fd, n, offset)


def find_directory(fh: BinaryIO) -> Directory:
    """The end record's view of the directory; ``BadZipFile`` when there is none.

    The end record is the one whose comment runs exactly to the end of the file (APPNOTE
    4.3.16). ``zipfile`` takes the last signature in the final 64 KiB instead, so a comment
    holding a fake end record (``PK\\x05\\x06`` and 18 more bytes) made the archive an
    empty or unreadable one; that rule remains for files where no record fits (a comment
    cut short, bytes appended). When two records fit (a complete fake record at the very end
    of the real one's comment), the one whose directory begins with a directory record is
    taken; if both do, readers would disagree about which archive this is:
    ``UnsafeArchiveError``.
    """
    fh.seek(0, 2)
    file_size = fh.tell()
    if file_size < _END.size:
        raise zipfile.BadZipFile("File is not a zip file")
    first = max(file_size - _MAX_COMMENT - _END.size, 0)
    data = _read_at(fh, first, file_size - first)
    fitting: list[int] = []  # offsets in data, last first
    last = found = data.rfind(_END_MAGIC)
    while found >= 0:
        if len(data) - found >= _END.size:
            (comment,) = struct.unpack_from("<H", data, found + _END.size - 2)
            if found + _END.size + comment == len(data):
                fitting.append(found)
        found = data.rfind(_END_MAGIC, 0, found)
    if not fitting:
        if last < 0 or len(data) - last < _END.size:
            raise zipfile.BadZipFile("File is not a zip file")
        return _directory(fh, data[last:last + _END.size], first + last)
    found_dirs: list[Directory] = []
    for at in fitting:
        try:
            found_dirs.append(_directory(fh, data[at:at + _END.size], first + at))
        except zipfile.BadZipFile:
            continue
    if len(found_dirs) > 1:
        plausible = [d for d in found_dirs
                     if _read_at(fh, d.start, 4) == _CENTRAL_MAGIC and d.count > 0]
        if len(plausible) > 1:
            raise UnsafeArchiveError(
                f"{len(plausible)} end-of-directory records fit this file (at bytes "
                f"{', '.join(str(d.start + d.size) for d in plausible)}): one hides in the "
                "other's comment, and zip readers disagree about which archive this is")
        found_dirs = plausible or found_dirs[:1]
    if not found_dirs:
        raise zipfile.BadZipFile("Bad offset for central directory")
    return found_dirs[0]


def _directory(fh: BinaryIO, end: bytes, where: int) -> Directory:
    """The directory the end record ``end``, found at file offset ``where``, describes."""
    fields = _END.unpack(end)
    count, size, offset = fields[4], fields[5], fields[6]
    concat = where - size - offset
    zip64 = _zip64_end(fh, where)
    if zip64 is not None:
        count, size, offset = zip64
        concat = where - size - offset - _END64.size - _LOCATOR.size
    start = offset + concat
    if start < 0:
        raise zipfile.BadZipFile("Bad offset for central directory")
    return Directory(start, size, count, concat)


def has_directory(fh: BinaryIO) -> bool:
    """Whether ``fh`` is a zip as ``zipfile.is_zipfile`` decides it: by its end record, so a
    self-extractor (an executable with the archive appended) is one, whatever it starts with."""
    try:
        find_directory(fh)
    except UnsafeArchiveError:
        return True  # a zip, refused as such when it is opened
    except (zipfile.BadZipFile, OSError, ValueError, struct.error):
        return False
    return True


def _zip64_end(fh: BinaryIO, end_at: int) -> tuple[int, int, int] | None:
    """(count, size, offset) of the zip64 end record, when the locator before ``end_at`` says so."""
    at = end_at - _LOCATOR.size
    if at < 0:
        return None
    data = _read_at(fh, at, _LOCATOR.size)
    if len(data) != _LOCATOR.size:
        return None
    magic, disk, _, disks = _LOCATOR.unpack(data)
    if magic != _LOCATOR_MAGIC:
        return None
    if disk != 0 or disks > 1:
        raise zipfile.BadZipFile("zipfiles that span multiple disks are not supported")
    at -= _END64.size
    if at < 0:
        return None
    data = _read_at(fh, at, _END64.size)
    if len(data) != _END64.size:
        return None
    fields = _END64.unpack(data)
    if fields[0] != _END64_MAGIC:
        return None
    return fields[7], fields[8], fields[9]


class _Short(Exception):
    """The buffer ends before the record does: read ``need`` bytes from its start."""

    def __init__(self, need: int) -> None:
        self.need = need


def _parse(data: bytes, i: int, offset: int, concat: int) -> Record:
    """The record at ``data[i:]``, which was read from file offset ``offset``."""
    if len(data) - i < _CENTRAL.size:
        raise _Short(_CENTRAL.size)
    f = _CENTRAL.unpack_from(data, i)
    if f[0] != _CENTRAL_MAGIC:
        raise zipfile.BadZipFile("Bad magic number for central directory")
    if f[3] > _MAX_EXTRACT_VERSION:
        raise NotImplementedError(f"zip file version {f[3] / 10:.1f}")
    name_at = i + _CENTRAL.size
    extra_at, body_end = name_at + f[12], name_at + f[12] + f[13]
    if body_end > len(data):
        raise _Short(body_end - i)
    name = data[name_at:extra_at].decode("utf-8" if f[5] & _UTF8_NAME else "cp437")
    file_size, compress_size, header_offset = (
        _zip64_sizes(data[extra_at:body_end], f[11], f[10], f[18]) if f[13] else
        (f[11], f[10], f[18]))
    return Record(offset, body_end - i + f[14], name, f[5], f[6], f[9], compress_size,
                  file_size, f[17], header_offset + concat)


def _zip64_sizes(extra: bytes, file_size: int, compress_size: int,
                 header_offset: int) -> tuple[int, int, int]:
    """The sizes and offset a zip64 extra field replaces (``ZipInfo._decodeExtra``)."""
    while len(extra) >= 4:
        kind, n = struct.unpack("<HH", extra[:4])
        if n + 4 > len(extra):
            raise zipfile.BadZipFile(f"Corrupt extra field {kind:04x} (size={n})")
        if kind == _ZIP64_EXTRA:
            data = extra[4:n + 4]
            try:
                if file_size in (0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF):
                    (file_size,), data = struct.unpack("<Q", data[:8]), data[8:]
                if compress_size == 0xFFFF_FFFF:
                    (compress_size,), data = struct.unpack("<Q", data[:8]), data[8:]
                if header_offset == 0xFFFF_FFFF:
                    (header_offset,) = struct.unpack("<Q", data[:8])
            except struct.error:
                raise zipfile.BadZipFile("Corrupt zip64 extra field") from None
        extra = extra[n + 4:]
    return file_size, compress_size, header_offset


class RecordReader:
    """Records read through a small cache of the directory's bytes.

    Members are mostly opened in archive order, so the next record wanted is usually among
    the bytes the last one came with: one read serves dozens of lookups.
    """

    def __init__(self, fh: BinaryIO, directory: Directory, chunk: int = 4 << 10) -> None:
        self._fh, self._dir, self._chunk = fh, directory, chunk
        self._start, self._data = 0, b""  # self._data[0] is the byte at file offset _start

    def at(self, offset: int) -> Record:
        """The record at file ``offset`` (one that ``records`` gave)."""
        i = offset - self._start
        if 0 <= i < len(self._data):
            try:
                return _parse(self._data, i, offset, self._dir.concat)
            except _Short:
                pass
        self._start, self._data = offset, _read_at(self._fh, offset, self._chunk)
        try:
            return _parse(self._data, 0, offset, self._dir.concat)
        except _Short as short:
            self._data = _read_at(self._fh, offset, short.need)
        try:
            return _parse(self._data, 0, offset, self._dir.concat)
        except _Short:
            raise zipfile.BadZipFile("Truncated central directory") from None


def records(fh: BinaryIO, directory: Directory) -> Iterator[Record]:
    """Every record in archive order, read 64 KiB at a time; ``fh`` may be used in between."""
    reader = RecordReader(fh, directory, _CHUNK)
    at, end = directory.start, directory.start + directory.size
    while at < end:
        rec = reader.at(at)
        at += rec.length
        if at > end:
            raise zipfile.BadZipFile("Truncated central directory")
        yield rec
