"""Edge inputs through the real daemon: a self-extracting mask zip is a zip, and the
config's per-item limits reach the workers (an item over them fails naming the limit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.daemon.conftest import base_config, coco, files


def _mask_zip(tmp_path: Path) -> bytes:
    src = tmp_path / "src.json"
    src.write_text(json.dumps(coco("cat", 40, 30)))
    subprocess.run([sys.executable, "-m", "smaskd", "export", str(src), "-o",
                    str(tmp_path / "src.zip")], check=True, capture_output=True)
    return (tmp_path / "src.zip").read_bytes()


def test_self_extracting_zip_and_config_limits(tmp_path: Path, daemon_factory) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    stub = b"MZ" + bytes(4094)  # what an executable's self-extractor stub starts like
    sfx = stub + _mask_zip(tmp_path)
    crowd = coco("cat", 40, 30)
    crowd["annotations"] = [dict(crowd["annotations"][0], id=i) for i in (1, 2, 3)]

    d = daemon_factory(base_config(tmp_path, max_instances=2)).start()
    d.wait_ready(60)
    (inbox / "sfx.zip").write_bytes(sfx)
    (inbox / "crowd.json").write_text(json.dumps(crowd))
    d.wait_for(lambda: (inbox / "done" / "sfx.zip").exists()
               and (inbox / "failed" / "crowd.json.error.json").exists(), 90,
               "sfx.zip converted and crowd.json failed")
    assert d.stop() == 0

    assert "sfx.json" in files(outbox)
    doc = json.loads((outbox / "sfx.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["cat"] and doc["annotations"]
    error = json.loads((inbox / "failed" / "crowd.json.error.json").read_text())["error"]
    assert error["class"] != "internal", error
    assert "more than 2 mask shapes" in error["message"] and "limit is 2" in error["message"]
    assert "max_instances" in error["message"], error
