"""Output modes, the daemon's umask, and symlinks planted where the daemon writes.

Issue point 8: every published file (result, log, error report) gets ``file_mode`` exactly,
whatever the umask; folders the daemon creates follow ``umask``; moved inputs keep their own
mode. A symlink at an output name, at a staging name, or in place of done/ or failed/ is
never written through: its target stays byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_published_files_get_file_mode_whatever_the_umask(tmp_path: Path, daemon_factory) -> None:
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    (inbox / "good.json").write_bytes(coco_bytes())
    (inbox / "bad.json").write_text('{"images": [}')
    os.chmod(inbox / "good.json", 0o600)
    os.chmod(inbox / "bad.json", 0o664)
    config = base_config(tmp_path, file_mode="0604", umask="0077")
    d = daemon_factory(config, "--once").start()
    assert d.wait(90) == 65
    for path in (box / "good.zip", box / "good.log.jsonl", box / "bad.log.jsonl",
                 inbox / "failed" / "bad.json.error.json"):
        assert _mode(path) == 0o604, f"{path.name}: {oct(_mode(path))}"
    # folders the daemon created follow its umask (0077 → 0700)
    for folder in (box, inbox / "done", inbox / "failed"):
        assert _mode(folder) == 0o700, f"{folder}: {oct(_mode(folder))}"
    # inputs are moved, not rewritten: they keep their own mode
    assert _mode(inbox / "done" / "good.json") == 0o600
    assert _mode(inbox / "failed" / "bad.json") == 0o664
    assert [n for n in os.listdir(box) if n.startswith(".")] == []  # no staging left


def test_defaults_are_0640_and_umask_0027(tmp_path: Path, daemon_factory) -> None:
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    (inbox / "a.json").write_bytes(coco_bytes())
    config = base_config(tmp_path)
    assert "file_mode" not in config and "umask" not in config
    d = daemon_factory(config, "--once").start()
    assert d.wait(90) == 0
    assert _mode(box / "a.zip") == 0o640 and _mode(box / "a.log.jsonl") == 0o640
    assert _mode(box) == 0o750 and _mode(inbox / "done") == 0o750
    assert _mode(tmp_path / "state" / "status.json") == 0o640


@pytest.mark.parametrize("on_conflict", ["rename", "replace", "skip"])
def test_symlinks_at_output_names_are_never_written_through(tmp_path: Path, daemon_factory,
                                                            on_conflict: str) -> None:
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    box.mkdir()
    victim, victim_log = tmp_path / "victim.bin", tmp_path / "victim.log"
    victim.write_bytes(b"precious")
    victim_log.write_bytes(b"precious log")
    os.symlink(victim, box / "a.zip")
    os.symlink(victim_log, box / "a.log.jsonl")
    (inbox / "a.json").write_bytes(coco_bytes())
    config = base_config(tmp_path, rules=[{"name": "r", "action": "export", "outbox": str(box),
                                           "on_conflict": on_conflict}])
    d = daemon_factory(config, "--once", env={"SMASKD_FAULT": "fake_convert"}).start()
    assert d.wait(90) == 0
    assert victim.read_bytes() == b"precious" and victim_log.read_bytes() == b"precious log"
    if on_conflict == "rename":  # keep both: the links stay, the outputs take new names
        assert files(box) == ["a-1.log.jsonl", "a-1.zip", "a.log.jsonl", "a.zip"]
        assert os.readlink(box / "a.zip") == str(victim)
        assert os.readlink(box / "a.log.jsonl") == str(victim_log)
    elif on_conflict == "replace":  # the link itself is replaced, never its target
        assert files(box) == ["a.log.jsonl", "a.zip"]
        assert not (box / "a.zip").is_symlink() and not (box / "a.log.jsonl").is_symlink()
        assert (box / "a.zip").read_bytes() == coco_bytes()  # fake_convert copies the input
    else:  # skip: the result is not published, its log goes beside under a free name
        assert files(box) == ["a-1.log.jsonl", "a.log.jsonl", "a.zip"]
        assert os.readlink(box / "a.zip") == str(victim)
    assert files(inbox / "done") == ["a.json"]


def test_symlink_planted_at_the_staging_names(tmp_path: Path, daemon_factory) -> None:
    """Someone who can write the outbox watches for a job id and plants links at the hidden
    staging names while the worker runs (real conversion, no fake): the worker's result and
    the daemon's log replace the links; the targets are untouched."""
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious")
    config = base_config(tmp_path, rules=[{"name": "r", "action": "export", "outbox": str(box)}])
    d = daemon_factory(config, env={"SMASKD_FAULT": "worker_sleep:d.json:4"}).start()
    d.wait_ready()
    (inbox / "d.json").write_bytes(coco_bytes())
    started = d.wait_for(lambda: [e for e in d.events("job.started") if e["input"] == "d.json"],
                         30, "d.json started")
    job_id = started[0]["job_id"]
    for suffix in (".zip", ".log.jsonl"):
        os.symlink(victim, box / f".smaskd-{job_id}{suffix}")
    d.wait_for(lambda: d.events("job.done") or d.events("job.failed"), 60, "d.json finished")
    assert d.stop() == 0
    assert d.events("job.done"), d.events("job.failed")
    assert victim.read_bytes() == b"precious"
    assert files(box) == ["d.log.jsonl", "d.zip"]
    assert not (box / "d.zip").is_symlink()
    with zipfile.ZipFile(box / "d.zip") as zf:
        assert zf.testzip() is None and zf.namelist()
    last = json.loads((box / "d.log.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "job.done"


def test_done_and_failed_replaced_by_symlinks_are_refused(tmp_path: Path, daemon_factory) -> None:
    """done/ and failed/ sit in the inbox, where anyone who drops files can swap them for
    symlinks (to ``~/.ssh``, say). Inputs are never moved through them: the job waits,
    STATUS says why, and it completes once the folders are real again."""
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    inbox.mkdir()
    config = base_config(tmp_path, fault_backoff="1s", unmatched="fail",
                         rules=[{"name": "json", "match": {"glob": "*.json"}, "action": "export",
                                 "outbox": str(box)}])
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}).start()
    d.wait_ready()
    for name in ("done", "failed"):
        (inbox / name).rmdir()
        os.symlink(elsewhere, inbox / name)
    (inbox / "e.json").write_bytes(coco_bytes())
    (inbox / "notes.txt").write_text("no rule matches me")
    d.wait_for(lambda: len(d.events("job.waiting")) >= 2, 30, "both jobs waiting")
    line = d.wait_for(lambda: next((x for x in d.notify.lines() if "done folder" in x
                                    and "failed folder" in x), None), 30, "STATUS names both")
    assert "is a symlink" in line
    assert list(elsewhere.iterdir()) == []
    assert files(box) == ["e.log.jsonl", "e.zip"]  # the output is published; only the move waits
    for name in ("done", "failed"):
        (inbox / name).unlink()
    d.wait_for(lambda: d.events("job.done") and d.events("job.failed"), 30, "both finished")
    assert d.stop() == 0
    assert list(elsewhere.iterdir()) == []
    assert not (inbox / "done").is_symlink() and files(inbox / "done") == ["e.json"]
    assert files(inbox / "failed") == ["notes.log.jsonl", "notes.txt", "notes.txt.error.json"]
    assert files(box) == ["e.log.jsonl", "e.zip"]
    assert {r["state"] for r in journal_rows(tmp_path / "state")} == {"done", "failed"}


def test_folder_helpers_refuse_symlinks_and_never_create_parents(tmp_path: Path) -> None:
    import errno

    from smaskd.daemon.outbox import move_input, real_folder

    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(victim, tmp_path / "done")
    (tmp_path / "input").write_text("x")
    for call in (lambda: move_input(tmp_path / "input", tmp_path / "done", "a.json"),
                 lambda: real_folder(tmp_path / "done")):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ELOOP and info.value.filename == str(tmp_path / "done")
    assert list(victim.iterdir()) == [] and (tmp_path / "input").exists()
    with pytest.raises(FileNotFoundError):  # an unmounted share: no local copy is built
        real_folder(tmp_path / "share" / "inbox" / "done")
    assert not (tmp_path / "share").exists()
    moved = move_input(tmp_path / "input", tmp_path / "real", "a.json")
    assert moved == tmp_path / "real" / "a.json" and moved.read_text() == "x"
