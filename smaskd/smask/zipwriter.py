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
from smaskd.geometry.limits import shown

__all__ = ["ZipStreamWriter", "check_item_id", "check_member_name"]

_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest zip date: byte-reproducible archives


#: Bytes in a file name (one path component) on ext4, APFS, NTFS: a longer one is written
#: to the zip but cannot be extracted anywhere (CVAT, which writes files first, fails).
MAX_COMPONENT_BYTES = 255


def check_member_name(name: str, where: str | None = None) -> None:
    """Refuse names that would escape the archive root or collide after extraction, and
    names no file system could extract (a 70,000-character ``file_name``)."""
    parts = name.split("/")
    longest = max(parts, key=lambda p: len(p.encode("utf-8", "surrogatepass")))
    size = len(longest.encode("utf-8", "surrogatepass"))
    if size > MAX_COMPONENT_BYTES:
        raise InputError(
            f"name {shown(longest, 60)!r} is {size} bytes long in UTF-8; a file name may have "
            f"at most {MAX_COMPONENT_BYTES} (the archive could not be extracted)",
            shown(where or name),
        )
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


def check_item_id(item_id: str, where: str | None = None) -> None:
    """An item id is safe when its PNGs' names are: export and import refuse the same ids
    (an ``ImageSets`` line ``../../../etc/passwd`` must not become a ``file_name``)."""
    try:
        check_member_name(f"SegmentationClass/{item_id}.png", where)
    except InputError as e:
        if "bytes long" in e.message:
            raise
        raise InputError(
            f"item id {shown(item_id)!r} is not a safe relative path (absolute, '..', '.', "
            "empty component, backslash, drive letter or NUL)",
            e.where,
        ) from None


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
