"""A streaming, ZIP_STORED zip writer onto any binary file object.

CVAT's ``make_zip_archive`` stores files only (no folder entries), with ``/`` separators and
no compression; PNGs are already deflated, so deflating them again costs time for nothing.
Members are written as they are produced, so an export holds one image in memory, not the
whole archive. The stdlib ``zipfile`` does the format work (CRC, Zip64 past 4 GiB, data
descriptors on unseekable outputs); this wrapper pins the parts that make output
reproducible and safe: a fixed timestamp, regular-file permissions, and member names that
are relative, ``..``-free and unique.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from smaskd.errors import InputError

__all__ = ["ZipStreamWriter", "check_member_name"]

_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest zip date: byte-reproducible archives


def check_member_name(name: str, where: str | None = None) -> None:
    """Refuse names that would escape the archive root or collide after extraction."""
    parts = name.split("/")
    bad = (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or (len(name) > 1 and name[1] == ":")
    )
    if bad:
        raise InputError(
            f"{name!r} is not a safe relative path inside the zip (absolute, '..', '.', empty "
            "component, backslash or drive letter)",
            where or name,
        )


class _PackedDirectory:
    """``ZipFile.filelist`` for a writer, packed: ~80 bytes a member instead of a ZipInfo.

    ``zipfile`` keeps a ``ZipInfo`` per member (~0.3 KB with its name) until ``close()``
    writes the central directory from them: 25,000 images made ~17 MB that grew with the
    export and fragmented the heap between the per-item images. Every member of ours shares
    everything but the fields packed here, so the ``ZipInfo`` that ``close()`` iterates is
    rebuilt one at a time, and the directory comes out byte for byte as ``zipfile`` writes it.
    """

    _RECORD = struct.Struct("<IQQQHBBH")  # CRC, sizes, offset, flags, versions, name length

    def __init__(self) -> None:
        self._packed = bytearray()
        self._count = 0

    def append(self, info: zipfile.ZipInfo) -> None:
        name = info.filename.encode("utf-8")
        self._packed += self._RECORD.pack(
            info.CRC, info.compress_size, info.file_size, info.header_offset, info.flag_bits,
            info.extract_version, info.create_version, len(name),
        ) + name
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[zipfile.ZipInfo]:
        pos, size = 0, self._RECORD.size
        while pos < len(self._packed):
            crc, csize, fsize, offset, flags, extract, create, n = self._RECORD.unpack_from(
                self._packed, pos)
            pos += size
            info = _member_info(bytes(self._packed[pos:pos + n]).decode("utf-8"))
            pos += n
            info.CRC, info.compress_size, info.file_size = crc, csize, fsize
            info.header_offset, info.flag_bits = offset, flags
            info.extract_version, info.create_version = extract, create
            yield info


class _NoNameIndex(dict):
    """``ZipFile.NameToInfo`` that keeps nothing (only reading uses it)."""

    def __setitem__(self, key: str, value: zipfile.ZipInfo) -> None:
        pass


def _member_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = (0o100644 & 0xFFFF) << 16  # regular file, rw-r--r--
    return info


class ZipStreamWriter:
    """Write members one by one; ``close()`` (or the ``with`` block) writes the directory."""

    def __init__(self, out: BinaryIO) -> None:
        self._zip = zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._zip.filelist = _PackedDirectory()  # type: ignore[assignment]
        self._zip.NameToInfo = _NoNameIndex()

    def write(self, name: str, data: bytes) -> None:
        check_member_name(name)  # unique names are the export plan's job (one writer per id)
        self._zip.writestr(_member_info(name), data)

    def close(self) -> None:
        self._zip.close()  # does not close ``out``: the caller owns it

    def __enter__(self) -> "ZipStreamWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
