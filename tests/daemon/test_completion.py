"""Completion signals (issue 11 case 1, issue 16 point 1): a file is complete when its writer
is done, not when a prefix parses.

Real daemon, real writers: a writer that holds a JSON open and stalls at ``}``/``]``
boundaries, a file renamed in from a temp name, a writer whose descriptor follows the claimed
inode into the claim folder, a writer that never finishes. Nothing is mocked; inotify or the
polling observer (for "written in place" on shares) is the real one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.daemon.conftest import base_config, coco, coco_bytes, files

SETTLE = 0.3
#: For the inotify tests: the signals reach the daemon through watchdog's event thread, which
#: can lag ~0.5 s (it holds the first half of every rename, the daemon's own heartbeat
#: included, up to 0.5 s to pair it), and more on a loaded machine: at load 10+ on 2 cores a
#: lag past a 1 s settle let a scan claim a file whose IN_MODIFY was still in flight (the
#: claim-time check then sends it back to waiting, which these tests count as a failure).
#: So settle is 2 s here, and the writers stall 1.5× settle: longer than settle (plus a
#: rescan) by a second, so a daemon that judged by settle alone would still claim them.
INOTIFY_SETTLE = 2.0
STALL = 1.5 * INOTIFY_SETTLE
#: Deadlines for what must happen: generous, since a wait ends as soon as it happens.
DEADLINE = 90


def _doc() -> bytes:
    """A valid COCO file, indented, so many prefixes end in ``}`` or ``]``."""
    doc = coco("cat")
    doc["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0,
                               "area": 4.0, "bbox": [0, 0, 2, 2],
                               "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]})
    return json.dumps(doc, indent=2).encode()


def _cuts(data: bytes, n: int) -> list[int]:
    """``n`` places where the prefix ends in ``}`` or ``]`` (and is not the whole file)."""
    ends = [i + 1 for i, b in enumerate(data[:-1]) if b in b"}]"]
    step = max(1, len(ends) // (n + 1))
    return ends[step::step][:n]


def _config(tmp: Path, **inbox: object) -> dict:
    config = base_config(tmp)
    config["inboxes"][0].update({"settle": f"{SETTLE}s", **inbox})
    return config


def _events(d, name: str, job_input: str) -> list[dict]:
    return [e for e in d.events(name) if e.get("input") == job_input]


def test_writer_holding_the_file_open_through_stalls_at_brackets_gives_one_result(
        tmp_path: Path, daemon_factory) -> None:
    """inotify: written since its last close-after-write means still being written; stalls
    of 1.5× settle right after a ``}`` or ``]`` never get it claimed, by the events nor by the
    full rescans (every 0.2 s here) that run during the stalls."""
    d = daemon_factory(_config(tmp_path, settle=f"{INOTIFY_SETTLE}s", rescan="0.2s")).start()
    d.wait_ready()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    data = _doc()
    cuts = _cuts(data, 3)
    assert all(data[c - 1:c] in (b"}", b"]") for c in cuts)
    with open(inbox / "slow.json", "wb") as fh:
        start = 0
        for cut in cuts:
            fh.write(data[start:cut])
            fh.flush()
            start = cut
            time.sleep(STALL)  # the prefix looks complete, stable for longer than settle
            assert (inbox / "slow.json").exists(), "claimed while its writer held it open"
        fh.write(data[start:])
    d.wait_for(lambda: _events(d, "job.done", "slow.json"), DEADLINE, "job.done")
    assert files(inbox / "failed") == []
    assert files(outbox) == ["slow.log.jsonl", "slow.zip"]
    claimed = _events(d, "job.claimed", "slow.json")
    assert len(claimed) == 1 and claimed[0]["complete"] == "settled"
    assert _events(d, "job.incomplete", "slow.json") == []
    assert len(d.events("inbox.scan")) > len(_cuts(data, 3))  # rescans ran meanwhile


def test_renamed_in_file_is_claimed_without_waiting_settle(tmp_path: Path,
                                                           daemon_factory) -> None:
    """inotify: a rename into the inbox (from a temp name inside it, or from outside) is the
    writer saying "done". With settle at one hour, a claim at all shows settle was skipped."""
    d = daemon_factory(_config(tmp_path, settle="1h")).start()
    d.wait_ready()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    staging = tmp_path / "staging"
    staging.mkdir()
    (inbox / ".inside.json.tmp").write_bytes(coco_bytes("a"))
    os.rename(inbox / ".inside.json.tmp", inbox / "inside.json")
    (staging / "outside.json").write_bytes(coco_bytes("b"))
    os.rename(staging / "outside.json", inbox / "outside.json")
    (inbox / "inplace.json").write_bytes(coco_bytes("c"))  # written in place: settle applies
    d.wait_for(lambda: {"inside.zip", "outside.zip"} <= set(files(outbox)), DEADLINE,
               "both results")
    for name in ("inside.json", "outside.json"):
        [claimed] = _events(d, "job.claimed", name)
        assert claimed["complete"] == "renamed in"
    assert _events(d, "job.claimed", "inplace.json") == []
    assert (inbox / "inplace.json").exists()


def test_renamed_in_file_that_does_not_parse_is_a_real_error(tmp_path: Path,
                                                             daemon_factory) -> None:
    """A renamed-in file is complete: a JSON cut short fails at once, it is not waited for."""
    d = daemon_factory(_config(tmp_path, settle="1h", grace="1h")).start()
    d.wait_ready()
    inbox = tmp_path / "inbox"
    (tmp_path / "cut.json").write_bytes(_doc()[: _cuts(_doc(), 1)[0]])
    os.rename(tmp_path / "cut.json", inbox / "cut.json")
    report = inbox / "failed" / "cut.json.error.json"
    d.wait_for(report.exists, DEADLINE, "the failure report")
    error = json.loads(report.read_text())["error"]
    assert error["type"] == "IncompleteInputError" and "invalid JSON" in error["message"]
    assert _events(d, "job.incomplete", "cut.json") == []


def test_input_appended_after_the_claim_goes_back_to_waiting_and_completes(
        tmp_path: Path, daemon_factory) -> None:
    """Written in place on a polling inbox: settle is a guess. The writer stalls past
    settle at a ``}``, the file is claimed, the writer's descriptor follows the inode into
    the claim folder and writes the rest: the job waits there, then converts once."""
    d = daemon_factory(_config(tmp_path, observer="polling", grace="1m")).start()
    d.wait_ready()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    data = _doc()
    cut = _cuts(data, 1)[0]
    with open(inbox / "grow.json", "wb") as fh:
        fh.write(data[:cut])
        fh.flush()
        d.wait_for(lambda: _events(d, "job.claimed", "grow.json"), DEADLINE, "the claim")
        d.wait_for(lambda: _events(d, "job.incomplete", "grow.json"), DEADLINE, "job.incomplete")
        fh.write(data[cut:])
    [done] = d.wait_for(lambda: _events(d, "job.done", "grow.json"), DEADLINE, "job.done")
    assert files(inbox / "failed") == []
    assert files(outbox) == ["grow.log.jsonl", "grow.zip"]
    assert len(_events(d, "job.claimed", "grow.json")) == 1
    assert done["attempts"] == 1  # the run on the unfinished file was given back


def test_input_that_never_completes_fails_as_incomplete_after_grace(tmp_path: Path,
                                                                     daemon_factory) -> None:
    """A writer that died half way: the file stops changing while it still ends before its
    JSON does. It fails with "incomplete after <grace>", not with a parse error."""
    d = daemon_factory(_config(tmp_path, observer="polling", grace="2s")).start()
    d.wait_ready()
    inbox = tmp_path / "inbox"
    data = _doc()
    (inbox / "dead.json").write_bytes(data[: _cuts(data, 1)[0]])
    report = inbox / "failed" / "dead.json.error.json"
    d.wait_for(report.exists, DEADLINE, "the failure report")
    error = json.loads(report.read_text())["error"]
    assert error["type"] == "IncompleteInput", error
    assert error["message"].startswith("incomplete after 2s"), error
    assert _events(d, "job.incomplete", "dead.json")


def test_a_file_renamed_while_its_writer_still_writes_waits_for_the_close(
        tmp_path: Path, daemon_factory) -> None:
    """inotify: a writer that renames its temp file into place and then goes on writing
    through its descriptor carries "still being written" over to the new name."""
    d = daemon_factory(_config(tmp_path, settle=f"{INOTIFY_SETTLE}s")).start()
    d.wait_ready()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    data = _doc()
    cut = _cuts(data, 1)[0]
    with open(inbox / ".early.json.tmp", "wb") as fh:
        fh.write(data[:cut])
        fh.flush()
        os.rename(inbox / ".early.json.tmp", inbox / "early.json")
        time.sleep(STALL)
        assert (inbox / "early.json").exists(), "claimed while its writer held it open"
        fh.write(data[cut:])
    d.wait_for(lambda: _events(d, "job.done", "early.json"), DEADLINE, "job.done")
    assert files(inbox / "failed") == [] and "early.zip" in files(outbox)
    [claimed] = _events(d, "job.claimed", "early.json")
    assert claimed["complete"] == "settled"  # after the close, not "renamed in"
