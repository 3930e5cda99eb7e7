"""The one-shot CLI as a user meets it: real processes, exit codes, messages, no partial output."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

from tests.conftest import GOLDEN, needs_corpus, run_cli

SUMMARY = re.compile(r"^(export|import): .+: (\d+) items?, (\d+) instances?, (\d+) labels?, "
                     r"(\d+) warnings?$")


def _coco(tmp_path: Path, **image: object) -> Path:
    doc = {"images": [{"id": 1, "file_name": "frame_1.png", "width": 8, "height": 6, **image}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                            "bbox": [1, 1, 4, 3], "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]}],
           "categories": [{"id": 1, "name": "car"}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    return path


def _only(folder: Path, *names: str) -> None:
    """Nothing else in the folder: no partial output, no temp file left behind."""
    assert sorted(os.listdir(folder)) == sorted(names)


def test_export_then_import_print_one_line_summaries(tmp_path: Path) -> None:
    src = _coco(tmp_path)
    done = run_cli("export", src, "-o", tmp_path / "out.zip")
    assert done.returncode == 0, done.stderr
    m = SUMMARY.match(done.stdout.strip())
    # 1 item, 1 instance, 2 labels (background, car), 1 warning: COCO gives no colours
    assert m and m.group(1) == "export" and m.groups()[1:] == ("1", "1", "2", "1"), done.stdout
    assert "warning:" in done.stderr and "'car'" in done.stderr, done.stderr
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert "SegmentationClass/frame_1.png" in zf.namelist()

    back = run_cli("import", tmp_path / "out.zip", "-o", tmp_path / "back.json")
    assert back.returncode == 0, back.stderr
    m = SUMMARY.match(back.stdout.strip())
    assert m and m.group(1) == "import" and m.group(3) == "1", back.stdout
    doc = json.loads((tmp_path / "back.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["car"]
    _only(tmp_path, "in.json", "out.zip", "back.json")


def test_bad_json_exits_65_naming_file_and_place_without_output(tmp_path: Path) -> None:
    src = _coco(tmp_path, width="wide")
    done = run_cli("export", src, "-o", tmp_path / "out.zip")
    assert done.returncode == 65
    assert "in.json" in done.stderr and "images[0].width" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    _only(tmp_path, "in.json")


def test_bad_zip_exits_65_without_output(tmp_path: Path) -> None:
    (tmp_path / "in.zip").write_bytes(b"PK\x03\x04 not really a zip")
    done = run_cli("import", tmp_path / "in.zip", "-o", tmp_path / "out.json")
    assert done.returncode == 65 and "in.zip" in done.stderr, done.stderr
    _only(tmp_path, "in.zip")


def test_missing_input_is_66_and_missing_output_folder_74(tmp_path: Path) -> None:
    missing = run_cli("export", tmp_path / "nope.json", "-o", tmp_path / "out.zip")
    assert missing.returncode == 66 and str(tmp_path / "nope.json") in missing.stderr
    src = _coco(tmp_path)
    no_folder = run_cli("export", src, "-o", tmp_path / "absent" / "out.zip")
    assert no_folder.returncode == 74
    assert f"output folder {tmp_path / 'absent'} does not exist" in no_folder.stderr
    _only(tmp_path, "in.json")


def test_wrong_forced_format_is_refused(tmp_path: Path) -> None:
    done = run_cli("export", _coco(tmp_path), "-o", tmp_path / "out.zip", "--from", "datumaro")
    assert done.returncode == 65 and "coco" in done.stderr.lower(), done.stderr
    _only(tmp_path, "in.json")


@needs_corpus
def test_data_loss_is_refused_by_default_and_accepted_with_compat_cvat(tmp_path: Path) -> None:
    case = GOLDEN / "s11a_black_label" / "input"
    args = (case / "annotations.json", "--labelmap", case / "labelmap.txt")
    refused = run_cli("export", args[0], "-o", tmp_path / "out.zip", *args[1:])
    assert refused.returncode == 65
    assert "--compat cvat" in refused.stderr and "black" in refused.stderr, refused.stderr
    assert not (tmp_path / "out.zip").exists() and os.listdir(tmp_path) == []
    accepted = run_cli("export", args[0], "-o", tmp_path / "out.zip", *args[1:], "--compat", "cvat")
    assert accepted.returncode == 0, accepted.stderr
    assert SUMMARY.match(accepted.stdout.strip())
