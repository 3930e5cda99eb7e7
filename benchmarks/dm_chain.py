"""CVAT's Segmentation-mask export and import chain, run with upstream Datumaro.

Executed by the Datumaro venv's python (``benchmarks/.work/dm-venv``), never by smaskd's:

    dm-venv/bin/python benchmarks/dm_chain.py export datumaro.json labelmap.txt out.zip
    dm-venv/bin/python benchmarks/dm_chain.py import out.zip

export (CVAT ``mask.py::_export``, FORMAT.md §1.1 / §4):
  1. read the one-file Datumaro JSON and split it into ``annotations/<subset>.json``;
     ellipses become full-frame RLE masks drawn with ``cv2.ellipse`` exactly as CVAT's
     ``EllipsesToMasks.convert_ellipse`` does (CVAT never hands Datumaro an ellipse);
  2. ``Dataset.import_from(dir, 'datumaro')``;
  3. transforms ``polygons_to_masks``, ``boxes_to_masks``, ``merge_instance_segments``;
  4. ``export(dir, 'voc_segmentation', save_images=False, apply_colormap=True,
     label_map={name: [rgb, [], []]})`` with ``background`` (0,0,0) as CVAT's make_colormap;
  5. zip the folder as CVAT's ``make_zip_archive`` (files only, ZIP_STORED).
import (CVAT ``mask.py::_import``, without the masks→polygons step):
  unzip to a temp dir, ``Dataset.import_from(dir, 'voc_segmentation')``, and touch every
  mask's ``.image`` so the PNGs are really decoded.

Prints one JSON line with counts and per-phase timings.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def _ellipse_to_mask(ann: dict, h: int, w: int) -> dict:
    """CVAT's ``EllipsesToMasks.convert_ellipse`` on Datumaro's ``[x1, y1, x2, y2]`` form."""
    x1, y1, x2, y2 = ann["points"]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    right_x, top_y = x2, y1
    rotation = (ann.get("attributes") or {}).get("rotation", 0.0)
    mat = np.zeros((h, w), dtype=np.uint8)
    cv2.ellipse(mat, (int(round(cx)), int(round(cy))),
                (int(round(right_x - cx)), int(round(cy - top_y))),
                rotation, 0, 360, 255, thickness=-1)
    rle = mask_utils.encode(np.asfortranarray(mat))
    out = {k: v for k, v in ann.items() if k != "points"}
    out["type"] = "mask"
    out["rle"] = {"counts": rle["counts"].decode("ascii"), "size": [h, w]}
    return out


def _read_labelmap(path: Path) -> "OrderedDict[str, list]":
    """``name:r,g,b::`` lines (CVAT make_colormap) → Datumaro's label_map dict."""
    label_map: OrderedDict[str, list] = OrderedDict()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, color, _parts, _actions = line.split(":")
        label_map[name] = [tuple(int(c) for c in color.split(",")), [], []]
    return label_map


def split_json(src: Path, dst_dir: Path) -> int:
    """The golden one-file JSON → ``dst_dir/annotations/<subset>.json``; returns item count."""
    with open(src, encoding="utf-8") as f:
        doc = json.load(f)
    subsets: dict[str, list] = {}
    for item in doc["items"]:
        h, w = item["image"]["size"]
        anns = [(_ellipse_to_mask(a, h, w) if a["type"] == "ellipse" else a)
                for a in item["annotations"]]
        subsets.setdefault(item.get("subset") or "default", []).append(
            {"id": item["id"], "annotations": anns, "image": item["image"]})
    ann_dir = dst_dir / "annotations"
    ann_dir.mkdir(parents=True)
    for name, items in subsets.items():
        with open(ann_dir / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump({"dm_format_version": doc.get("dm_format_version", "1.0"),
                       "infos": doc.get("infos", {}), "categories": doc["categories"],
                       "items": items}, f)
    return len(doc["items"])


def make_zip_archive(src_dir: Path, dst: Path) -> None:
    with zipfile.ZipFile(dst, "w") as z:  # ZIP_STORED, files only, as CVAT
        for root, _dirs, files in os.walk(src_dir):
            for name in files:
                p = os.path.join(root, name)
                z.write(p, os.path.relpath(p, src_dir))


def do_export(src: Path, labelmap: Path, out_zip: Path) -> dict:
    from datumaro.components.dataset import Dataset

    t = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dm-export-") as tmp:
        tmp = Path(tmp)
        n_items = split_json(src, tmp / "src")
        t["split_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        ds = Dataset.import_from(str(tmp / "src"), "datumaro")
        ds.transform("polygons_to_masks")
        ds.transform("boxes_to_masks")
        ds.transform("merge_instance_segments")
        ds.export(str(tmp / "out"), "voc_segmentation", save_media=False,
                  apply_colormap=True, label_map=_read_labelmap(labelmap))
        t["datumaro_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        make_zip_archive(tmp / "out", out_zip)
        t["zip_s"] = time.perf_counter() - t2
    return {"items": n_items, **t}


def do_import(zip_path: Path) -> dict:
    from datumaro.components.annotation import Mask
    from datumaro.components.dataset import Dataset

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dm-import-") as tmp:
        with zipfile.ZipFile(zip_path) as z:
            z.extractall(tmp)
        t_unzip = time.perf_counter() - t0
        ds = Dataset.import_from(tmp, "voc_segmentation")
        items = masks = pixels = 0
        for item in ds:
            items += 1
            for ann in item.annotations:
                if isinstance(ann, Mask):
                    masks += 1
                    pixels += int(np.count_nonzero(ann.image))
    return {"items": items, "masks": masks, "mask_pixels": pixels, "unzip_s": t_unzip,
            "total_s": time.perf_counter() - t0}


def main(argv: list[str]) -> int:
    import datumaro

    if len(argv) == 4 and argv[0] == "export":
        res = do_export(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    elif len(argv) == 2 and argv[0] == "import":
        res = do_import(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    res["datumaro"] = datumaro.__version__
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
