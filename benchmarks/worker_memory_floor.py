"""The smallest ``worker_memory`` (RLIMIT_AS) with which a worker converts a tiny file.

Why: below it every job fails with a memory error and good inputs land in failed/, so
``check-config`` refuses such a value (``config.MIN_WORKER_MEMORY``). The figure is address
space, not resident memory: the interpreter, numpy, OpenCV and their thread pools map far more
than they touch. Run: ``python benchmarks/worker_memory_floor.py`` (a binary search over real
``smaskd run --once`` runs on a tiny COCO export and a tiny mask import; ~1 minute).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

COCO = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 6}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 15.0,
                         "bbox": [1, 1, 5, 3], "segmentation": [[1, 1, 6, 1, 6, 4, 1, 4]]}],
        "categories": [{"id": 1, "name": "cat"}]}


def works(limit_mib: int, tmp: Path, mask_zip: bytes) -> bool:
    root = Path(tempfile.mkdtemp(dir=tmp))
    (root / "inbox").mkdir()
    (root / "inbox" / "a.json").write_text(json.dumps(COCO))
    (root / "inbox" / "m.zip").write_bytes(mask_zip)
    config = {"state_dir": str(root / "state"), "host_id": "m", "workers": 1,
              "worker_memory": f"{limit_mib}MiB",
              "inboxes": [{"name": "in", "path": str(root / "inbox"), "settle": "0s"}],
              "rules": [{"name": "auto", "outbox": str(root / "out")}]}
    (root / "c.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "smaskd", "run", "--once", "-c",
                          str(root / "c.yaml")], capture_output=True, text=True, timeout=300)
    return run.returncode == 0


def main() -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "a.json").write_text(json.dumps(COCO))
        subprocess.run([sys.executable, "-m", "smaskd", "export", str(tmp / "a.json"), "-o",
                        str(tmp / "m.zip")], check=True, capture_output=True)
        mask_zip = (tmp / "m.zip").read_bytes()
        low, high = 64, 4096  # MiB: fails, works
        assert works(high, tmp, mask_zip), "the default must work"
        while high - low > 8:
            mid = (low + high) // 2
            if works(mid, tmp, mask_zip):
                high = mid
            else:
                low = mid
            print(f"  {mid} MiB: {'ok' if high == mid else 'fails'}", flush=True)
        print(f"smallest worker_memory that converts: {high} MiB (fails at {low} MiB)")


if __name__ == "__main__":
    main()
