"""The export's zip writer: byte for byte what ``zipfile`` writes, with a packed directory."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smaskd.errors import InputError
from smaskd.smask.zipwriter import ZipStreamWriter


def plain_zipfile(members: list[tuple[str, bytes]], out) -> None:
    """What the writer did before it packed its directory: ``zipfile`` with ZipInfo kept."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o100644 << 16
            zf.writestr(info, data)


def packed(members: list[tuple[str, bytes]], out) -> None:
    with ZipStreamWriter(out) as zw:
        for name, data in members:
            zw.write(name, data)


class Unseekable(io.RawIOBase):
    """A pipe-like output: ``zipfile`` writes data descriptors instead of seeking back."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf += b
        return len(b)


names = st.lists(
    st.text(st.characters(blacklist_characters="/\\\x00:", blacklist_categories=("Cs",)),
             min_size=1, max_size=12).filter(lambda s: s not in (".", "..")),
    min_size=1, max_size=3,
).map("/".join)


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(names, st.binary(max_size=300), max_size=12))
def test_the_bytes_are_zipfiles(members):
    items = sorted(members.items())
    a, b = io.BytesIO(), io.BytesIO()
    plain_zipfile(items, a)
    packed(items, b)
    assert b.getvalue() == a.getvalue()
    a, b = Unseekable(), Unseekable()
    plain_zipfile(items, a)
    packed(items, b)
    assert bytes(b.buf) == bytes(a.buf)
    with zipfile.ZipFile(io.BytesIO(bytes(b.buf))) as zf:
        assert [(i.filename, zf.read(i)) for i in zf.infolist()] == items


def test_more_members_than_a_plain_zip_directory_holds():
    """Past 65,535 members ``zipfile`` adds the zip64 end record: from our records too."""
    items = [(f"SegmentationClass/{i}.png", b"") for i in range(65_600)]
    a, b = io.BytesIO(), io.BytesIO()
    plain_zipfile(items, a)
    packed(items, b)
    assert b.getvalue() == a.getvalue()


@pytest.mark.parametrize("name", ["../a.txt", "/a.txt", "a//b", "a\\b", "c:x", ""])
def test_an_unsafe_name_is_refused(name):
    with ZipStreamWriter(io.BytesIO()) as zw:
        with pytest.raises(InputError):
            zw.write(name, b"2")
