"""Intake: ignore rules, stability on real files, "not ready" for incomplete zips/JSON."""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from smaskd.config import Inbox
from smaskd.daemon.intake import Intake, is_ignored, looks_complete, scan_inbox


@pytest.mark.parametrize("name", [".hidden.json", "a.json.tmp", "a.zip.part", "a.zip.AbCd.partial",
                                  "a.filepart", "a.crdownload", "~$report.json", ".a.json.swp",
                                  "a.swp", ".nfs000123", "A.TMP", "backup.json~"])
def test_temp_and_hidden_names_are_ignored(name: str) -> None:
    assert is_ignored(name)


@pytest.mark.parametrize("name", ["a.json", "masks.zip", "partial.json", "tmp.json"])
def test_ordinary_names_are_candidates(name: str) -> None:
    assert not is_ignored(name)


def test_extra_ignore_globs() -> None:
    assert is_ignored("README.md", ("readme*",)) and not is_ignored("a.json", ("readme*",))


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("labelmap.txt", "background:0,0,0::\n" * 50)
    return buf.getvalue()


def test_looks_complete(tmp_path: Path) -> None:
    data = _zip_bytes()
    (tmp_path / "whole.zip").write_bytes(data)
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.json").write_text('{"a": [1]}\n')
    (tmp_path / "cut.json").write_text('{"a": [1')
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "other.bin").write_bytes(b"\x00\x01")
    assert looks_complete(tmp_path / "whole.zip") and not looks_complete(tmp_path / "cut.zip")
    assert looks_complete(tmp_path / "whole.json") and not looks_complete(tmp_path / "cut.json")
    assert not looks_complete(tmp_path / "empty.json")
    assert looks_complete(tmp_path / "other.bin")
    os.symlink(tmp_path / "whole.json", tmp_path / "link.json")
    assert not looks_complete(tmp_path / "link.json")  # never followed


def test_scan_skips_own_folders_and_recurses_only_when_asked(tmp_path: Path) -> None:
    for sub in ("done", "failed", ".smaskd/processing/h", "sub"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "x.json").write_text("{}")
    (tmp_path / "top.json").write_text("{}")
    flat = Inbox("i", tmp_path)
    assert [c.rel for c in scan_inbox(flat)] == ["top.json"]
    deep = Inbox("i", tmp_path, recursive=True)
    assert sorted(c.rel for c in scan_inbox(deep)) == ["sub/x.json", "top.json"]


def test_stability_waits_for_settle_and_restarts_on_change(tmp_path: Path) -> None:
    intake = Intake(Inbox("i", tmp_path), settle=10.0)
    path = tmp_path / "a.json"
    path.write_text('{"a": 1}')
    ready, pending = intake.poll(now=100.0)
    assert (ready, pending) == ([], 1)
    assert intake.poll(now=105.0) == ([], 1)
    with open(path, "a") as fh:  # the writer appends: the clock starts again
        fh.write(" ")
    assert intake.poll(now=109.0) == ([], 1)
    assert intake.poll(now=115.0) == ([], 1)
    ready, pending = intake.poll(now=119.5)
    assert [c.rel for c in ready] == ["a.json"] and pending == 0


def test_startup_counts_old_files_as_settled(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text("{}")
    old = time.time() - 3600
    os.utime(path, (old, old))
    (tmp_path / "new.json").write_text("{}")
    intake = Intake(Inbox("i", tmp_path), settle=10.0)
    ready, pending = intake.poll(now=1.0, startup=True)
    assert [c.rel for c in ready] == ["old.json"] and pending == 1


def test_incomplete_zip_is_not_ready_until_grace(tmp_path: Path) -> None:
    data = _zip_bytes()
    path = tmp_path / "a.zip"
    path.write_bytes(data[:40])
    intake = Intake(Inbox("i", tmp_path, grace=30.0), settle=1.0)
    intake.poll(now=0.0)
    assert intake.poll(now=5.0) == ([], 1)  # stable but incomplete: waiting, not failed
    ready, _ = intake.poll(now=40.0)
    assert [c.rel for c in ready] == ["a.zip"]  # after grace it goes on (and fails in the core)


def test_left_files_are_not_offered_again_until_they_change(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("x")
    intake = Intake(Inbox("i", tmp_path), settle=0.0)
    intake.poll(now=0.0)
    ready, _ = intake.poll(now=1.0)
    intake.leave(ready[0])
    assert intake.poll(now=2.0) == ([], 0)
    path.write_text("xy")
    intake.poll(now=3.0)
    assert [c.rel for c in intake.poll(now=4.0)[0]] == ["a.txt"]


def test_between_listings_only_the_watched_files_are_looked_at(tmp_path: Path) -> None:
    """A file still settling or being written must not make every poll list the inbox: the
    partial poll re-checks the files it watches, and tells when one can next be ready."""
    intake = Intake(Inbox("i", tmp_path, grace=60.0), settle=1.0)
    (tmp_path / "part.json").write_text('{"images": [')  # incomplete
    (tmp_path / "a.json").write_text("{}")
    t0 = time.monotonic()
    ready, pending = intake.poll(t0)  # full: both seen, both settling
    assert ready == [] and pending == 2 and intake.next_due == t0 + 1.0
    (tmp_path / "b.json").write_text("{}")  # arrives with no listing in between
    ready, pending = intake.poll(t0 + 1.5, full=False)
    assert [c.rel for c in ready] == ["a.json"] and pending == 1  # b.json not listed
    assert t0 + 1.5 < intake.next_due <= t0 + 1.5 + 5.0  # part.json: look again later
    ready, _ = intake.poll(t0 + 3.0, full=True)
    assert "b.json" not in [c.rel for c in ready]  # seen now; settles from here
    assert "b.json" in {p.name for p in intake.seen}


def test_completion_signals_override_settle(tmp_path: Path) -> None:
    """Open for writing: never ready, however long; closed: settle from then; renamed in:
    ready at once, without the completeness guess (a prefix ending in ``}`` included)."""
    from smaskd.daemon.signals import Completion

    signals = Completion()
    intake = Intake(Inbox("i", tmp_path), settle=10.0, signals=signals)
    held, moved = tmp_path / "held.json", tmp_path / "moved.json"
    held.write_text('{"a": {"b": 1}')
    signals.modified(str(held))
    assert intake.poll(now=100.0) == ([], 1)
    assert intake.poll(now=100000.0) == ([], 1)
    signals.closed_after_write(str(held))
    assert intake.poll(now=100001.0) == ([], 1)
    moved.write_text('{"a": {"b": 1}')
    signals.moved(str(tmp_path / ".moved.json.tmp"), str(moved))
    ready, pending = intake.poll(now=100002.0)
    assert [(c.rel, c.moved_in) for c in ready] == [("moved.json", True)] and pending == 1
    signals.lost()  # an overflow: nothing known, both are judged by settle and their bytes
    ready, pending = intake.poll(now=100012.0)  # (which only look complete: unfinished.py)
    assert sorted((c.rel, c.moved_in) for c in ready) == [("held.json", False),
                                                          ("moved.json", False)]
