"""atomic_writer: all or nothing, and the mode a plain open() would have given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smaskd.atomicio import atomic_writer


@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640)])
def test_result_mode_follows_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_writer(tmp_path / "out.zip") as fh:
            fh.write(b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "out.zip").stat().st_mode & 0o777 == expected


def test_explicit_mode_wins(tmp_path: Path) -> None:
    with atomic_writer(tmp_path / "out.json", mode=0o640) as fh:
        fh.write(b"{}")
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o640


def test_failure_leaves_neither_result_nor_temp(tmp_path: Path) -> None:
    (tmp_path / "out.zip").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(tmp_path / "out.zip") as fh:
            fh.write(b"half")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["out.zip"]
    assert (tmp_path / "out.zip").read_bytes() == b"old"
