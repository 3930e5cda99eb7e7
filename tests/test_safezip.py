"""safezip: hostile archives are refused by name before anything is decoded."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smaskd.errors import InputError, SmaskdError, UnsafeArchiveError
from smaskd.safezip import MAX_ENTRIES, SafeZip


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]],
             compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names on purpose
        with zipfile.ZipFile(buf, "w", compression) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def open_bytes(data: bytes, **kw) -> SafeZip:
    return SafeZip(io.BytesIO(data), **kw)


def test_reads_members_in_place() -> None:
    data = make_zip([("a/labelmap.txt", b"x:1,2,3::\n"), ("a/b/c.png", b"png")])
    with open_bytes(data) as zf:
        assert zf.names == ["a/labelmap.txt", "a/b/c.png"]
        assert zf.read("a/b/c.png") == b"png"
        assert "a/b/c.png" in zf and "nope" not in zf


def test_folder_entries_are_not_files() -> None:
    data = make_zip([("top/", b""), ("top/x.txt", b"1")])
    with open_bytes(data) as zf:
        assert zf.names == ["top/x.txt"]


@pytest.mark.parametrize("name,reason", [
    ("/etc/passwd", "absolute"),
    ("../evil.txt", "'..'"),
    ("a/../../evil.txt", "'..'"),
    ("a\\b.txt", "backslash"),
    ("C:/win.txt", "drive letter"),
    ("c:evil", "drive letter"),
    ("a//b.txt", "empty or '.'"),
    ("./a.txt", "empty or '.'"),
    ("a\x01b", "control character"),
])
def test_unsafe_names(name: str, reason: str) -> None:
    data = make_zip([("ok.txt", b"1"), (name, b"x")])
    with pytest.raises(UnsafeArchiveError) as exc:
        open_bytes(data)
    assert reason in str(exc.value)
    assert repr(name) in str(exc.value)  # names the entry


def test_symlink_is_refused() -> None:
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    data = make_zip([(info, b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        open_bytes(data)


def test_duplicates_and_case_collisions() -> None:
    with pytest.raises(UnsafeArchiveError, match="duplicate name"):
        open_bytes(make_zip([("a.png", b"1"), ("a.png", b"2")]))
    with pytest.raises(UnsafeArchiveError, match="when case is ignored") as exc:
        open_bytes(make_zip([("Dir/A.png", b"1"), ("dir/a.png", b"2")]))
    assert "'dir/a.png'" in str(exc.value)


def test_too_many_entries() -> None:
    data = make_zip([(f"f{i}", b"") for i in range(1001)])
    with pytest.raises(UnsafeArchiveError, match="1001 entries, more than the limit of 1000"):
        open_bytes(data, max_entries=1000)
    assert MAX_ENTRIES >= 2 * 100_000 + 3  # an export of 100,000 images opens


def test_total_size_limit() -> None:
    data = make_zip([("a", b"x" * 600), ("b", b"y" * 600)])
    with pytest.raises(UnsafeArchiveError, match="expands to more than 1000 bytes") as exc:
        open_bytes(data, max_total=1000)
    assert "'b'" in str(exc.value)


def _patch_central(data: bytes, index: int, **fields: int) -> bytes:
    """Rewrite fields of the ``index``-th central directory record (sizes, offset)."""
    pos = -1
    for _ in range(index + 1):
        pos = data.index(b"PK\x01\x02", pos + 1)
    buf = bytearray(data)
    offsets = {"compress_size": 20, "file_size": 24, "header_offset": 42}
    for key, value in fields.items():
        struct.pack_into("<L", buf, pos + offsets[key], value)
    return bytes(buf)


def test_declared_two_gib_is_refused() -> None:
    data = _patch_central(make_zip([("big", b"x" * 100)]), 0, file_size=(2 << 30) + 1)
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        open_bytes(data)


def test_compression_ratio_limit() -> None:
    data = make_zip([("bomb", b"\0" * (4 << 20))], zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeArchiveError, match="compression ratio") as exc:
        open_bytes(data)
    assert "'bomb'" in str(exc.value)


def test_overlapping_entries_are_refused() -> None:
    data = make_zip([("a", b"A" * 100), ("b", b"B" * 100)])
    data = _patch_central(data, 1, header_offset=0)
    with pytest.raises(UnsafeArchiveError, match="overlaps") as exc:
        open_bytes(data)
    assert "'a'" in str(exc.value) or "'b'" in str(exc.value)


@pytest.mark.parametrize("data", [b"", b"hello world", b"PK\x03\x04" + b"\0" * 40])
def test_not_a_zip(data: bytes) -> None:
    with pytest.raises(InputError) as exc:
        open_bytes(data)
    assert not isinstance(exc.value, UnsafeArchiveError)


def test_truncated_zip() -> None:
    data = make_zip([("a", b"A" * 1000), ("b", b"B" * 1000)])
    with pytest.raises(InputError):
        open_bytes(data[: len(data) // 2])


def test_corrupt_member_data_is_input_error() -> None:
    payload = random.Random(0).randbytes(2000)
    data = bytearray(make_zip([("a.txt", payload)], zipfile.ZIP_DEFLATED))
    data[100:120] = b"\xff" * 20  # inside the member data: CRC or deflate error
    with open_bytes(bytes(data)) as zf, pytest.raises(InputError) as exc:
        zf.read("a.txt")
    assert "'a.txt'" in str(exc.value)


def test_per_member_cap() -> None:
    with open_bytes(make_zip([("a", b"x" * 100)])) as zf:
        with pytest.raises(InputError, match="over the limit of 10"):
            zf.read("a", limit=10)
        assert zf.read("a", limit=100) == b"x" * 100
        with pytest.raises(InputError, match="no such entry"):
            zf.read("b")


def test_path_source_and_close(tmp_path) -> None:
    p = tmp_path / "x.zip"
    p.write_bytes(make_zip([("a", b"1")]))
    with SafeZip(p) as zf:
        assert zf.read("a") == b"1"
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"no zip here")
    with pytest.raises(InputError, match="not a zip"):
        SafeZip(bad)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_smaskd_errors(data: bytes) -> None:
    try:
        with open_bytes(data) as zf:
            for n in zf.names:
                zf.read(n)
    except SmaskdError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=22, max_size=400), st.integers(0, 399), st.binary(min_size=1, max_size=8))
def test_mutated_zips_only_raise_smaskd_errors(seed: bytes, pos: int, patch: bytes) -> None:
    base = bytearray(make_zip([("a.txt", seed), ("d/b.png", seed[::-1])], zipfile.ZIP_DEFLATED))
    pos %= len(base)
    base[pos:pos + len(patch)] = patch
    try:
        with open_bytes(bytes(base)) as zf:
            for n in zf.names:
                zf.read(n)
    except SmaskdError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5))
def test_random_member_names(names: list[str]) -> None:
    try:
        data = make_zip([(n, b"x") for n in names])
    except (ValueError, UnicodeEncodeError, IndexError):
        return  # zipfile itself refuses to write it
    try:
        with open_bytes(data) as zf:
            for n in zf.names:
                assert ".." not in n.split("/") and not n.startswith("/") and "\\" not in n
                zf.read(n)
    except UnsafeArchiveError:
        pass


def _agrees_with_zipfile(data: bytes) -> None:
    """SafeZip reads its own directory: the names and bytes must be zipfile's."""
    with zipfile.ZipFile(io.BytesIO(data)) as ref, open_bytes(data) as zf:
        files = [i.filename for i in ref.infolist() if not i.is_dir()]
        assert zf.names == files
        for n in files:
            assert zf.read(n) == ref.read(n) and zf.size(n) == ref.getinfo(n).file_size


def test_archive_comment_and_bytes_before_the_archive() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", b"alpha" * 50)
        z.writestr("d/", b"")
        z.writestr("d/b.png", b"beta")
        z.comment = b"a comment"
    _agrees_with_zipfile(buf.getvalue())
    _agrees_with_zipfile(b"#!/bin/sh\nexec unzip \"$0\"\n" + buf.getvalue())  # self-extractor


def test_zip64_end_record_and_extra_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    # zipfile writes the zip64 forms past these limits; lowered, a small archive has them all
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 10)
    data = make_zip([("a.txt", b"x" * 100), ("b/c.png", b"y" * 50)], zipfile.ZIP_DEFLATED)
    monkeypatch.undo()
    assert b"PK\x06\x06" in data and b"\xff\xff\xff\xff" in data
    _agrees_with_zipfile(data)


def test_more_records_than_the_end_record_declares() -> None:
    data = bytearray(make_zip([(f"f{i}", b"") for i in range(5)]))
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 1, 1)  # entries on this disk, in all
    with pytest.raises(UnsafeArchiveError, match="more than 3 entries"):
        open_bytes(bytes(data), max_entries=3)


def test_lookups_are_exact_and_folded_lookups_give_the_real_name() -> None:
    with open_bytes(make_zip([("Dir/A.PNG", b"1"), ("e/", b"")])) as zf:
        assert "Dir/A.PNG" in zf and "dir/a.png" not in zf and "Dir/A.png" not in zf
        assert zf.find_folded("dir/a.png") == "Dir/A.PNG"
        assert zf.find_folded("E") is None  # a folder is not a file
        with pytest.raises(InputError, match="no such entry"):
            zf.read("dir/a.png")
