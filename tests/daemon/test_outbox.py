"""Publishing: keep-both names, replace, skip, and never writing through a planted symlink."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smaskd.daemon.outbox import move_input, pick_names, publish, staging_path, write_staging


def test_pick_names(tmp_path: Path) -> None:
    assert pick_names(tmp_path, "a", [".zip", ".log.jsonl"], "rename") == "a"
    (tmp_path / "a.log.jsonl").write_text("")
    assert pick_names(tmp_path, "a", [".zip", ".log.jsonl"], "rename") == "a-1"
    assert pick_names(tmp_path, "a", [".zip", ".log.jsonl"], "replace") == "a"
    assert pick_names(tmp_path, "a", [".zip"], "skip") == "a"
    (tmp_path / "a.zip").write_text("")
    assert pick_names(tmp_path, "a", [".zip"], "skip") is None


def test_publish_keep_both_never_clobbers(tmp_path: Path) -> None:
    staging = staging_path(tmp_path, "job", ".zip")
    write_staging(staging, b"new", 0o640)
    (tmp_path / "a.zip").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        publish(staging, tmp_path / "a.zip", replace=False)
    assert (tmp_path / "a.zip").read_bytes() == b"old"
    publish(staging, tmp_path / "a.zip", replace=True)
    assert (tmp_path / "a.zip").read_bytes() == b"new" and not staging.exists()
    assert (tmp_path / "a.zip").stat().st_mode & 0o777 == 0o640


def test_publish_after_a_crash_between_link_and_unlink(tmp_path: Path) -> None:
    staging = staging_path(tmp_path, "job", ".zip")
    write_staging(staging, b"x", 0o640)
    os.link(staging, tmp_path / "a.zip")
    publish(staging, tmp_path / "a.zip", replace=False)  # recognised as the same file
    assert not staging.exists() and (tmp_path / "a.zip").read_bytes() == b"x"


def test_symlinks_in_the_outbox_are_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    box = tmp_path / "box"
    box.mkdir()
    staging = staging_path(box, "job", ".zip")
    os.symlink(victim, box / "a.zip")
    write_staging(staging, b"evil", 0o640)  # a leftover/planted staging name is unlinked first
    publish(staging, box / "a.zip", replace=True)  # rename replaces the link itself
    assert victim.read_bytes() == b"precious" and not (box / "a.zip").is_symlink()


def test_move_input_keeps_both_and_moves_symlinks_themselves(tmp_path: Path) -> None:
    done = tmp_path / "done"
    (tmp_path / "x1").write_text("1")
    (tmp_path / "x2").write_text("2")
    assert move_input(tmp_path / "x1", done, "a.json").name == "a.json"
    assert move_input(tmp_path / "x2", done, "a.json").name == "a-1.json"
    os.symlink("/etc/passwd", tmp_path / "ln")
    moved = move_input(tmp_path / "ln", done, "ln.json")
    assert moved.is_symlink() and os.readlink(moved) == "/etc/passwd"
