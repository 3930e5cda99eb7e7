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

import zipfile
from typing import BinaryIO

from smaskd.errors import InputError, InternalError

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


class ZipStreamWriter:
    """Write members one by one; ``close()`` (or the ``with`` block) writes the directory."""

    def __init__(self, out: BinaryIO) -> None:
        self._zip = zipfile.ZipFile(out, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._names: set[str] = set()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._names)

    def write(self, name: str, data: bytes) -> None:
        check_member_name(name)
        if name in self._names:
            raise InternalError(f"zip member {name!r} written twice", name)
        self._names.add(name)
        info = zipfile.ZipInfo(name, date_time=_EPOCH)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = (0o100644 & 0xFFFF) << 16  # regular file, rw-r--r--
        self._zip.writestr(info, data)

    def close(self) -> None:
        self._zip.close()  # does not close ``out``: the caller owns it

    def __enter__(self) -> "ZipStreamWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
