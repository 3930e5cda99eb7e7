"""CVAT's own files dropped into the daemon: a task bundle and CVAT export zips are
annotations (exported to a mask zip), a mask zip is masks (imported), decided by content:
the zip's directory, never its name. ``smaskd route`` and rules' ``kind`` say the same."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import yaml

from tests.annotations.cvat.corpus import TRACKS, needs_tracks
from tests.conftest import run_cli
from tests.daemon.conftest import files
from tests.smask.test_export_golden import assert_same_archive

CASE = TRACKS / "hand_s01_rect_rotation"


def _export_zip(path: Path) -> Path:
    """CVAT's "Datumaro 1.0" layout: annotations/default.json beside images/."""
    doc = {"categories": {"label": {"labels": [{"name": "car"}]}},
           "items": [{"id": "a", "image": {"size": [4, 6]}, "annotations": [
               {"id": 1, "type": "bbox", "bbox": [1, 1, 2, 2], "label_id": 0}]}]}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("annotations/default.json", json.dumps(doc))
        z.writestr("images/default/a.jpg", b"not decoded")
    return path


@needs_tracks
def test_default_config_exports_bundles_and_export_zips_imports_mask_zips(tmp_path, daemon_factory):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(CASE / "input" / "scene.json", inbox / "task21.json")
    _export_zip(inbox / "dm_export.zip")
    shutil.copy(CASE / "expected" / "mask.zip", inbox / "masks.zip")
    d = daemon_factory(None, "--once").start()
    assert d.wait(120) == 0, d.stderr()
    out = tmp_path / "outbox"
    assert files(out) == ["dm_export.log.jsonl", "dm_export.zip", "masks.json",
                          "masks.log.jsonl", "task21.log.jsonl", "task21.zip"]
    # the default (lossless) mode writes the same pixels, lists and labelmap as CVAT
    assert_same_archive((out / "task21.zip").read_bytes(),
                        (CASE / "expected" / "mask.zip").read_bytes())
    assert json.loads((out / "masks.json").read_text())["images"]
    assert files(inbox / "done") == ["dm_export.zip", "masks.zip", "task21.json"]


def test_rule_kind_and_route_decide_a_zip_by_its_directory(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    export = _export_zip(inbox / "labelmap.txt.zip")  # the name says nothing
    masks = inbox / "annotations.zip"
    with zipfile.ZipFile(masks, "w") as z:
        z.writestr("labelmap.txt", "background:0,0,0::\n")
        z.writestr("ImageSets/Segmentation/default.txt", "")
    backup = inbox / "backup.zip"
    with zipfile.ZipFile(backup, "w") as z:
        z.writestr("task.json", "{}")
        z.writestr("annotations.json", "[]")
    config = {
        "state_dir": str(tmp_path / "state"),
        "inboxes": [{"name": "in", "path": str(inbox)}],
        "rules": [
            {"name": "masks", "match": {"kind": "masks"}, "action": "import",
             "outbox": str(tmp_path / "m")},
            {"name": "ann", "match": {"kind": "annotations"}, "action": "export",
             "outbox": str(tmp_path / "a")},
        ],
    }
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = run_cli("route", "-c", cfg, export, masks, backup)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "rule ann" in lines[0] and "rule masks" in lines[1] and "rule ann" in lines[2]

    config["rules"] = [{"name": "auto", "action": "auto", "outbox": str(tmp_path / "o")}]
    cfg.write_text(yaml.safe_dump(config))
    lines = run_cli("route", "-c", cfg, export, masks, backup).stdout.splitlines()
    assert "action auto (export)" in lines[0]
    assert "action auto (import)" in lines[1]
    assert "action auto (export)" in lines[2]
