"""What a result is called in the outbox: Windows-safe names, and a folder at the output name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smaskd.daemon.names import published_stem, windows_safe
from tests.daemon.conftest import base_config, coco_bytes, files


@pytest.mark.parametrize("stem,safe", [
    ("NUL", "NUL_"), ("nul", "nul_"), ("COM1", "COM1_"), ("lpt9", "lpt9_"),
    ("Com\u00b9", "Com\u00b9_"),
    ("CON.tar", "CON_.tar"), ("aux .x", "aux _.x"), ("CONOUT$", "CONOUT$_"),
    ("a:b", "a_b"), ("star*q?", "star_q_"), ('<"x">|', "__x___"), ("x\\y", "x_y"),
    ("tab\there", "tab_here"), ("dot.", "dot_"), ("sp  ", "sp__"), ("a. .", "a___"),
    ("CONSOLE", "CONSOLE"), ("COM10", "COM10"), ("plain name-1", "plain name-1"), ("", "_"),
])
def test_windows_safe_mapping(stem: str, safe: str) -> None:
    assert windows_safe(stem) == safe


def test_published_stem_maps_the_stem_not_the_suffix() -> None:
    assert published_stem("NUL.json") == "NUL_"
    assert published_stem("a:b.json") == "a_b"
    assert published_stem("trailing..json") == "trailing_"
    assert published_stem("ok.json") == "ok"


def test_windows_unsafe_inputs_are_published_under_safe_names(tmp_path: Path,
                                                              daemon_factory) -> None:
    """Issue 12 case 9: ``NUL.zip``, ``COM1.zip``, ``a:b.zip``, ``star*q?.zip``, a trailing dot
    or space and a backslash were published as-is; ``a:b`` and ``a?b`` map to one name and
    go through ``on_conflict`` (rename: keep both) like any pair."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    inputs = ["NUL.json", "com1.json", "a:b.json", "a?b.json", "star*q?.json", "dot..json",
              "space .json", "back\\slash.json"]
    for name in inputs:
        (inbox / name).write_bytes(coco_bytes())
    d = daemon_factory(base_config(tmp_path)).start()
    d.wait_ready()
    d.wait_for(lambda: len(d.events("job.done")) >= len(inputs), 90, "every job done")
    assert d.stop() == 0
    zips = [n for n in files(outbox) if n.endswith(".zip")]
    assert sorted(zips) == sorted(["NUL_.zip", "com1_.zip", "a_b.zip", "a_b-1.zip", "star_q_.zip",
                                   "dot_.zip", "space_.zip", "back_slash.zip"])
    bad = set('<>:"\\|?*')
    assert not any(bad & set(n) for n in files(outbox))
    # the job log keeps the original name
    done = {e["input"]: e for e in d.events("job.done")}
    assert set(done) == set(inputs)
    assert done["NUL.json"]["outputs"] == ["NUL_.zip"]
    log = [json.loads(x) for x in (outbox / "NUL_.log.jsonl").read_text().splitlines()]
    assert log[-1]["input"] == "NUL.json"
    assert any(e["event"] == "output.name_mapped" and e["stem"] == "NUL_" for e in log)
    assert sorted(files(inbox / "done")) == sorted(inputs)  # inputs keep their own names


def test_a_folder_at_the_output_name_with_replace_keeps_both(tmp_path: Path,
                                                              daemon_factory) -> None:
    """Issue 12 case 6: a directory at the output name with ``on_conflict: replace`` parked the
    job in ``publishing`` forever (rename over a directory fails). It is never removed: the
    result is published under the keep-both name and the log says which path was in the way."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    (outbox / "a.zip").mkdir()
    (outbox / "a.zip" / "keep.txt").write_text("someone's data")
    config = base_config(tmp_path)
    config["rules"][0]["on_conflict"] = "replace"
    (inbox / "a.json").write_bytes(coco_bytes())
    d = daemon_factory(config).start()
    d.wait_ready()
    done = d.wait_for(lambda: d.events("job.done"), 60, "job.done")
    assert d.stop() == 0
    assert done[0]["outputs"] == ["a-1.zip"]
    assert (outbox / "a.zip" / "keep.txt").read_text() == "someone's data"
    assert (outbox / "a-1.zip").is_file() and (outbox / "a-1.log.jsonl").is_file()
    kept = d.events("output.kept_both")
    assert kept and kept[0]["path"] == str(outbox / "a.zip")
    assert files(inbox / "done") == ["a.json"]


def test_failure_reports_of_windows_unsafe_inputs_have_safe_names(tmp_path: Path,
                                                                  daemon_factory) -> None:
    """``failed/<input>.error.json`` was named after the raw input (``NUL.json.error.json``,
    ``a:b?.json.error.json``); the report is now mapped like a published name, the input keeps
    its own name beside it and the report says which input it is about."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    inputs = {"NUL.json": "NUL_.json.error.json", "a:b?.json": "a_b_.json.error.json"}
    for name in inputs:
        (inbox / name).write_bytes(b'{"not": "annotations"}')  # complete, of no format
    d = daemon_factory(base_config(tmp_path)).start()
    d.wait_ready()
    d.wait_for(lambda: len(d.events("job.failed")) >= len(inputs), 60, "both jobs failed")
    assert d.stop() == 0
    failed = inbox / "failed"
    assert files(failed) == sorted([*inputs, *inputs.values()])
    for name, report in inputs.items():
        assert json.loads((failed / report).read_text())["input"] == name


def test_failure_reports_of_inputs_mapping_to_one_name_are_both_kept(tmp_path: Path,
                                                                      daemon_factory) -> None:
    """``a:b.json`` and ``a?b.json`` keep their own names in failed/ but both map to the report
    ``a_b.json.error.json``: the second job's report takes the keep-both name instead of
    overwriting the first (a re-run of one job reusing its own report: test_crash's
    ``after_fail_report``)."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    inputs = ["a:b.json", "a?b.json"]
    for name in inputs:
        (inbox / name).write_bytes(b'{"not": "annotations"}')
    d = daemon_factory(base_config(tmp_path), "--once").start()
    assert d.wait(60) == 65, d.lines[-5:]
    failed = inbox / "failed"
    reports = ["a_b-1.json.error.json", "a_b.json.error.json"]
    assert files(failed) == sorted([*inputs, *reports])  # before: one report, overwritten
    assert sorted(json.loads((failed / r).read_text())["input"] for r in reports) == inputs
