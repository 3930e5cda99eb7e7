"""Datumaro 1.13 itself loads our ``--format datumaro`` output, with the same masks.

Datumaro is never a dependency of smaskd: it lives in its own venv (``benchmarks/datumaro_env.py``
makes one at ``benchmarks/.work/dm-venv``; ``SMASKD_DATUMARO_PYTHON`` may name another
interpreter). Without one this module is skipped, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from smaskd.geometry.rle import decode_rle
from tests.conftest import GOLDEN, golden_cases, run_cli

REPO = Path(__file__).resolve().parents[2]
DM_PYTHON = Path(os.environ.get("SMASKD_DATUMARO_PYTHON",
                                REPO / "benchmarks" / ".work" / "dm-venv" / "bin" / "python"))

# Runs inside Datumaro's venv: prints, per item, (label name, group, mask pixel count).
_LOADER = """
import json, sys
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset
ds = Dataset.import_from(sys.argv[1], "datumaro")
names = [l.name for l in ds.categories()[AnnotationType.label]]
items = {}
for item in ds:
    items[item.id] = [[names[a.label], a.group, int((a.image > 0).sum())]
                      for a in item.annotations if a.type == AnnotationType.mask]
print(json.dumps({"labels": names, "items": items}))
"""


def _datumaro_available() -> bool:
    if not DM_PYTHON.exists():
        return False
    probe = subprocess.run([str(DM_PYTHON), "-c", "import datumaro"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _datumaro_available(),
    reason=f"Datumaro not installed at {DM_PYTHON} (run benchmarks/datumaro_env.py "
           "or set SMASKD_DATUMARO_PYTHON)",
)

# One subset per case keeps item ids unique when Datumaro reads the file as one subset.
CASES = [c for c in golden_cases("s") if c.startswith(("s01a", "s07a", "s08a", "s11a", "s19a"))]


@pytest.mark.parametrize("case", CASES)
def test_datumaro_loads_our_json_with_the_same_masks(tmp_path: Path, case: str) -> None:
    out = tmp_path / "default.json"
    done = run_cli("import", GOLDEN / case / "expected" / "export.zip", "-o", out,
                   "--format", "datumaro")
    assert done.returncode == 0, done.stderr
    ours = json.loads(out.read_text())
    loaded = subprocess.run([str(DM_PYTHON), "-c", _LOADER, str(out)], capture_output=True,
                            text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    theirs = json.loads(loaded.stdout)

    names = [lab["name"] for lab in ours["categories"]["label"]["labels"]]
    assert theirs["labels"] == names
    assert set(theirs["items"]) == {item["id"] for item in ours["items"]}
    for item in ours["items"]:
        want = Counter((names[a["label_id"]], a["group"], _pixels(a["rle"]))
                       for a in item["annotations"] if a["type"] == "mask")
        got = Counter(tuple(entry) for entry in theirs["items"][item["id"]])
        assert got == want, item["id"]


def _pixels(rle: dict) -> int:
    h, w = rle["size"]
    return int(decode_rle(rle["counts"], h, w, "rle").sum())
