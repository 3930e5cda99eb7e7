"""A CVAT task backup dropped into an inbox of the default config comes out as a mask zip.

The default rule's ``auto`` action decides by content: a zip whose directory holds
``task.json`` + ``annotations.json`` is annotations, so it is exported, not imported as
masks. A backup CVAT itself cannot export fails with the track and frames named.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CORPUS
from tests.daemon.conftest import files

TRACKS = CORPUS / "tracks"
GOOD = TRACKS / "random_s101_11_ima" / "input" / "backup.zip"
FAILS = TRACKS / "random_s101_02_ima_err-mask_jobs_2jobs-ov0" / "input" / "backup.zip"


@pytest.mark.skipif(not (GOOD.is_file() and FAILS.is_file()),
                    reason=f"CVAT track corpus not found at {TRACKS} (set SMASKD_CORPUS)")
def test_backups_dropped_into_the_default_inbox(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(GOOD, inbox / "task_11.zip")
    shutil.copy(FAILS, inbox / "task_02.zip")
    d = daemon_factory(None, "--once").start()  # no config: the embedded default
    assert d.wait(120) == 65, d.lines[-5:]

    assert files(tmp_path / "outbox") == ["task_02.log.jsonl", "task_11.log.jsonl",
                                          "task_11.zip"]
    with zipfile.ZipFile(tmp_path / "outbox" / "task_11.zip") as zf:
        names = zf.namelist()
    assert "labelmap.txt" in names
    assert any(n.startswith("SegmentationClass/cam_a/") and n.endswith(".png") for n in names)
    assert files(inbox / "done") == ["task_11.zip"]

    assert files(inbox / "failed") == ["task_02.zip", "task_02.zip.error.json"]
    report = json.loads((inbox / "failed" / "task_02.zip.error.json").read_text())
    error = report["error"]
    assert error["type"] == "TrackError", error
    assert "frame 0 followed by a keyframe at frame 3" in error["message"], error
    assert error["where"].startswith("task_02.zip"), error
    assert any("annotations.json[0].tracks[0] (label 'sign')" in n for n in error["notes"]), error
