"""on_conflict × on_success with real drops: which version stays, which input may go.

Issue 11 cases 3 and 4. ``fake_convert`` copies the input to the result, so the bytes in the
outbox say which drop was published; ``worker_sleep:sha256=<prefix>`` slows one version of a
name down without touching the other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.daemon.conftest import base_config, coco, files


def _version(tag: str) -> bytes:
    return json.dumps({**coco(), "info": {"version": tag}}).encode()


def _replace_daemon(tmp_path: Path, daemon_factory, slow: bytes, seconds: int, **rule):
    """A daemon with one ``replace`` rule whose worker sleeps on the ``slow`` content."""
    prefix = hashlib.sha256(slow).hexdigest()[:16]
    config = base_config(tmp_path, rules=[{"name": "r", "outbox": str(tmp_path / "outbox"),
                                           "on_conflict": "replace", **rule}])
    env = {"SMASKD_FAULT": f"fake_convert,worker_sleep:sha256={prefix}:{seconds}"}
    d = daemon_factory(config, env=env).start()
    d.wait_ready()
    return d


def test_replace_keeps_the_newest_drop_whatever_finishes_first(tmp_path: Path,
                                                              daemon_factory) -> None:
    """v1 (slow) dropped, v2 (fast) dropped a second later under the same name: v2 stays,
    v1's late result is not published over it, both inputs end in done/ with a log each."""
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    v1, v2 = _version("v1"), _version("v2")
    d = _replace_daemon(tmp_path, daemon_factory, v1, 4)
    (inbox / "x.json").write_bytes(v1)
    d.wait_for(lambda: d.events("job.started"), 30, "v1 running (its worker sleeps 4 s)")
    (inbox / "x.json").write_bytes(v2)
    d.wait_for(lambda: len(d.events("job.done")) >= 2, 60, "both versions done")
    assert d.stop() == 0
    assert (box / "x.zip").read_bytes() == v2, "the older drop overwrote the newer one"
    done = d.events("job.done")
    assert [e.get("skip_reason") for e in done] == [None, "superseded"], done
    assert files(box) == ["x-1.log.jsonl", "x.log.jsonl", "x.zip"]
    assert "output.superseded" in (box / "x-1.log.jsonl").read_text()
    assert files(inbox / "done") == ["x-1.json", "x.json"] and files(inbox / "failed") == []


def test_replace_publishes_a_later_drop_that_finishes_later(tmp_path: Path,
                                                           daemon_factory) -> None:
    """The ordinary order still replaces: v1 fast, v2 slow → v2 replaces v1's result."""
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    v1, v2 = _version("v1"), _version("v2")
    d = _replace_daemon(tmp_path, daemon_factory, v2, 2, on_success="delete")
    (inbox / "x.json").write_bytes(v1)
    d.wait_for(lambda: d.events("job.done"), 30, "v1 done")
    (inbox / "x.json").write_bytes(v2)
    d.wait_for(lambda: len(d.events("job.done")) >= 2, 60, "v2 done")
    assert d.stop() == 0
    assert (box / "x.zip").read_bytes() == v2
    assert files(box) == ["x.log.jsonl", "x.zip"]
    assert files(inbox / "done") == [] and files(inbox) == []


def test_skip_with_delete_never_deletes_a_different_version(tmp_path: Path,
                                                           daemon_factory) -> None:
    """``skip`` + ``on_success: delete``: a second drop of the same bytes is skipped and
    deleted (nothing is lost); a drop of other bytes under that name is skipped and kept in
    done/ (its content is nowhere else); the published result is never touched."""
    inbox, box = tmp_path / "inbox", tmp_path / "outbox"
    a, b = _version("a"), _version("b")
    config = base_config(tmp_path, rules=[{"name": "r", "outbox": str(box),
                                           "on_conflict": "skip", "on_success": "delete"}])
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert"}).start()
    d.wait_ready()
    for n, data in enumerate((a, a, b), start=1):
        (inbox / "x.json").write_bytes(data)
        d.wait_for(lambda n=n: len(d.events("job.done")) >= n, 30, f"drop {n} done")
    assert d.stop() == 0
    assert (inbox / "done" / "x.json").read_bytes() == b, "a different version was deleted"
    done = d.events("job.done")
    assert [e["skipped"] for e in done] == [False, True, True]
    assert [e.get("input_kept") for e in done] == [None, None, True]
    assert (box / "x.zip").read_bytes() == a
    assert files(inbox / "done") == ["x.json"] and files(inbox) == []
    assert files(box) == ["x-1.log.jsonl", "x-2.log.jsonl", "x.log.jsonl", "x.zip"]
