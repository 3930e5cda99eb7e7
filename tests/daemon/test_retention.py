"""Issue 17 retention: done/ inputs, outbox job logs and journal rows of finished jobs are
pruned by age and by count, by the running daemon, and nothing else is ever removed (results,
other files, hidden names, sub-folders, symlinks and what they point at, rows of jobs still
under way)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows

DAY = 86400


def _drop(inbox: Path, name: str, mtime: float | None = None) -> None:
    tmp = inbox.parent / f".{name}"
    tmp.write_bytes(coco_bytes())
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, inbox / name)


def _age(path: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(path, (then, then), follow_symlinks=False)


def _logs(outbox: Path) -> list[str]:
    return [n for n in files(outbox) if n.endswith(".log.jsonl")]


def _finished(tmp_path: Path) -> list[str]:
    return sorted(r["name"] for r in journal_rows(tmp_path / "state")
                  if r["state"] in ("done", "failed", "lost"))


def test_max_age_prunes_old_inputs_logs_and_rows_and_nothing_else(tmp_path: Path,
                                                                   daemon_factory) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    for name in ("a.json", "b.json", "c.json"):
        _drop(inbox, name)
    first = daemon_factory(base_config(tmp_path), "--once")
    first.start()
    assert first.wait() == 0
    done = inbox / "done"
    assert files(done) == ["a.json", "b.json", "c.json"]
    # a and b are 40 days old, c is new; beside them, old things retention must not touch
    for path in (done / "a.json", done / "b.json", outbox / "a.log.jsonl", outbox / "b.log.jsonl",
                 outbox / "a.zip"):
        _age(path, 40)
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (done / "sub").mkdir()
    (done / "sub" / "old.json").write_text("{}")
    (done / ".hidden.json").write_text("{}")
    (done / "link.json").symlink_to(outside)
    (outbox / "notes.txt").write_text("mine")
    (outbox / "x.log.jsonl.txt").write_text("not a log")
    for path in (outside, done / "sub" / "old.json", done / ".hidden.json", done / "link.json",
                 outbox / "notes.txt", outbox / "x.log.jsonl.txt"):
        _age(path, 40)
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite")
    with db:
        old = time.time() - 40 * DAY
        db.execute("UPDATE jobs SET updated = ? WHERE name IN ('a.json', 'b.json')", (old,))
        db.execute("INSERT INTO jobs (job_id, host_id, inbox, name, claim_path, state, created, "
                   "updated) VALUES ('j-under-way', 'otherhost', 'in', 'busy.json', '/x', "
                   "'running', ?, ?)", (old, old))
    db.close()

    retention = {key: {"max_age": "30d"} for key in ("done", "logs", "journal")}
    d = daemon_factory(base_config(tmp_path, retention=retention))
    d.start()
    d.wait_for(lambda: files(done) == [".hidden.json", "c.json", "link.json"]
               and _logs(outbox) == ["c.log.jsonl"]
               and _finished(tmp_path) == ["c.json"], 30, "old entries pruned")
    assert d.stop() == 0
    assert outside.exists() and (done / "sub" / "old.json").exists()
    assert files(outbox) == ["a.zip", "b.zip", "c.log.jsonl", "c.zip", "notes.txt",
                             "x.log.jsonl.txt"]
    assert [r["job_id"] for r in journal_rows(tmp_path / "state") if r["state"] == "running"] \
        == ["j-under-way"]  # a job under way keeps its row, however old
    assert {e.get("what") or e.get("folder") for e in d.events("retention.pruned")} == \
        {"journal", str(done), str(outbox)}


def test_max_count_keeps_the_newest(tmp_path: Path, daemon_factory) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    retention = {"every": "0.5s", **{key: {"max_count": 1} for key in ("done", "logs", "journal")}}
    d = daemon_factory(base_config(tmp_path, retention=retention))
    d.start()
    d.wait_ready()
    now = time.time()
    for i, name in enumerate(("a.json", "b.json", "c.json")):
        _drop(inbox, name, mtime=now - (3 - i) * DAY)  # c is the newest input
    d.wait_for(lambda: len(d.events("job.done")) == 3, 30, "three jobs done")
    d.wait_for(lambda: files(inbox / "done") == ["c.json"] and len(_logs(outbox)) == 1
               and len(_finished(tmp_path)) == 1, 30, "all but the newest pruned")
    assert d.stop() == 0
    assert [n for n in files(outbox) if n.endswith(".zip")] == ["a.zip", "b.zip", "c.zip"]


def test_keep_tree_logs_in_sub_folders_are_pruned_through_descriptors(tmp_path: Path,
                                                                      daemon_factory) -> None:
    """A keep_tree rule publishes logs into sub-folders (projA/a.log.jsonl): they are pruned
    too, and only they (results, other files, the folders themselves, a symlinked folder's
    target and hidden folders stay)."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (inbox / "projA" / "deep").mkdir(parents=True)
    (inbox / "projB").mkdir()
    for rel in ("projA/a.json", "projA/deep/d.json", "projB/b.json"):
        (inbox / rel).write_bytes(coco_bytes())
    config = base_config(tmp_path)
    config["inboxes"][0]["recursive"] = True
    config["rules"][0]["keep_tree"] = True
    first = daemon_factory(config, "--once")
    first.start()
    assert first.wait() == 0
    old = [outbox / "projA" / "a.log.jsonl", outbox / "projA" / "deep" / "d.log.jsonl",
           outbox / "projA" / "a.zip"]
    assert _logs(outbox / "projA") == ["a.log.jsonl"] and _logs(outbox / "projB") == ["b.log.jsonl"]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.log.jsonl").write_text("{}\n")
    (outbox / "projA" / "link").symlink_to(outside)
    (outbox / ".hidden").mkdir()
    (outbox / ".hidden" / "h.log.jsonl").write_text("{}\n")
    (outbox / "projA" / "notes.txt").write_text("mine")
    for path in (*old, outside / "o.log.jsonl", outbox / ".hidden" / "h.log.jsonl",
                 outbox / "projA" / "notes.txt"):
        _age(path, 40)
    config["retention"] = {"logs": {"max_age": "30d"}}
    d = daemon_factory(config)
    d.start()
    d.wait_for(lambda: _logs(outbox / "projA") == [] and _logs(outbox / "projA" / "deep") == [],
               30, "old logs in sub-folders pruned")  # before: never (top level only)
    assert d.stop() == 0
    assert files(outbox / "projA") == ["a.zip", "link", "notes.txt"]
    assert files(outbox / "projA" / "deep") == ["d.zip"]
    assert files(outbox / "projB") == ["b.log.jsonl", "b.zip"]
    assert (outside / "o.log.jsonl").exists() and (outbox / ".hidden" / "h.log.jsonl").exists()
