"""Deterministic benchmark data: the same synthetic scene as COCO instances and Datumaro JSON.

    python benchmarks/generate.py --images 200 --size 640x480 --objects 10 --out DIR [--seed 1]

Writes ``DIR/datumaro.json`` (the golden-corpus schema: one file, every item names its
``subset``), ``DIR/coco.json`` (COCO instances) and ``DIR/labelmap.txt`` (CVAT's
``make_colormap`` form, ``background:0,0,0::`` first). Each image gets K objects, drawn
from a fixed mix:

=================  ==========================================  ==================================
kind               Datumaro JSON                               COCO
=================  ==========================================  ==================================
polygon (40 %)     ``polygon``                                 one ring
two-part (15 %)    two ``polygon`` with the same ``group``     two rings in one annotation
box (20 %)         ``bbox`` ``[x, y, w, h]``, rotation 0       ``bbox`` with ``segmentation: []``
ellipse (10 %)     ``ellipse`` ``points=[x1, y1, x2, y2]``     a 32-point polygon (COCO has none)
mask (15 %)        ``mask`` full-frame compressed RLE string   RLE ``{counts: str, size}``
=================  ==========================================  ==================================

Annotations are in CVAT order (stably sorted by ``z_order``). Items are split 80/20 into
subsets ``train`` and ``val`` (unique ids across subsets). Same seed → same bytes.
Only numpy and pycocotools are needed (both are smaskd dependencies).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

LABELS = [
    ("person", (220, 20, 60)),
    ("car", (0, 0, 142)),
    ("road", (128, 64, 128)),
    ("tree", (107, 142, 35)),
    ("sky", (70, 130, 180)),
    ("building", (70, 70, 70)),
    ("bicycle", (119, 11, 32)),
    ("sign", (220, 220, 0)),
]
KINDS = [("polygon", 40), ("two_part", 15), ("bbox", 20), ("ellipse", 10), ("mask", 15)]


def _pick_kind(rng: random.Random) -> str:
    r = rng.uniform(0, sum(w for _, w in KINDS))
    for name, w in KINDS:
        if r < w:
            return name
        r -= w
    return KINDS[-1][0]


def _star(rng: random.Random, cx: float, cy: float, radius: float) -> list[float]:
    """A star-shaped (simple) polygon around (cx, cy); 2-decimal coordinates."""
    n = rng.randint(6, 24)
    angles = sorted(rng.uniform(0, 2 * math.pi) for _ in range(n))
    pts: list[float] = []
    for a in angles:
        r = radius * rng.uniform(0.45, 1.0)
        pts += [round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)]
    return pts


def _ring_bbox(pts: list[float]) -> list[float]:
    xs, ys = pts[0::2], pts[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _union_bbox(boxes: list[list[float]]) -> list[float]:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def _blob_rle(rng: random.Random, w: int, h: int, cx: float, cy: float, radius: float) -> dict:
    """A brush-like blob: a few overlapping discs minus one hole, as a full-frame RLE."""
    r = max(2, int(radius))
    x0, y0 = max(0, int(cx) - r), max(0, int(cy) - r)
    x1, y1 = min(w, int(cx) + r + 1), min(h, int(cy) + r + 1)
    full = np.zeros((h, w), dtype=np.uint8, order="F")
    if x1 > x0 and y1 > y0:
        yy, xx = np.mgrid[y0:y1, x0:x1]
        crop = np.zeros(yy.shape, dtype=bool)
        for _ in range(rng.randint(2, 5)):
            dx, dy = rng.uniform(-0.5, 0.5) * r, rng.uniform(-0.5, 0.5) * r
            rr = rng.uniform(0.3, 0.6) * r
            crop |= (xx - cx - dx) ** 2 + (yy - cy - dy) ** 2 <= rr * rr
        hr = rng.uniform(0.05, 0.15) * r
        crop &= (xx - cx) ** 2 + (yy - cy) ** 2 > hr * hr  # a hole
        full[y0:y1, x0:x1] = crop
    rle = mask_utils.encode(full)
    return {"counts": rle["counts"].decode("ascii"), "size": [h, w]}


def _quarter(v: float) -> float:
    return round(v * 4) / 4


def generate(images: int, width: int, height: int, objects: int, seed: int = 1):
    """Yield (item_dm, coco_image, coco_annotations) per image; deterministic."""
    rng = random.Random(seed)
    ann_id = 0
    for i in range(images):
        item_id = f"img_{i:06d}"
        subset = "val" if i % 5 == 4 else "train"
        dm_anns: list[dict] = []
        coco_anns: list[dict] = []
        group = 0
        for _ in range(objects):
            kind = _pick_kind(rng)
            label = rng.randrange(len(LABELS))
            z = rng.choice([-1, 0, 0, 1, 2])
            radius = rng.uniform(0.03, 0.18) * min(width, height)
            cx = rng.uniform(-0.05, 1.05) * width
            cy = rng.uniform(-0.05, 1.05) * height
            base = {"attributes": {"occluded": False}, "label_id": label, "z_order": z}
            ann_id += 1
            coco = {"id": ann_id, "image_id": i + 1, "category_id": label + 1, "iscrowd": 0}
            if kind == "polygon":
                pts = _star(rng, cx, cy, radius)
                dm_anns.append({**base, "type": "polygon", "group": 0, "points": pts})
                coco.update(segmentation=[pts], bbox=_union_bbox([_ring_bbox(pts)]))
            elif kind == "two_part":
                group += 1
                p1 = _star(rng, cx, cy, radius * 0.6)
                ox, oy = rng.uniform(-2, 2) * radius, rng.uniform(-2, 2) * radius
                p2 = _star(rng, cx + ox, cy + oy, radius * 0.5)
                for pts in (p1, p2):
                    dm_anns.append({**base, "type": "polygon", "group": group, "points": pts})
                coco.update(segmentation=[p1, p2],
                            bbox=_union_bbox([_ring_bbox(p1), _ring_bbox(p2)]))
            elif kind == "bbox":
                bw, bh = round(radius * rng.uniform(0.8, 2.0), 2), round(radius * rng.uniform(0.8, 2.0), 2)
                x, y = round(cx - bw / 2, 2), round(cy - bh / 2, 2)
                dm_anns.append({**base, "type": "bbox", "group": 0, "bbox": [x, y, bw, bh],
                                "attributes": {"occluded": False, "rotation": 0.0}})
                coco.update(segmentation=[], bbox=[x, y, bw, bh])
            elif kind == "ellipse":
                rx, ry = _quarter(radius * rng.uniform(0.5, 1.0)), _quarter(radius * rng.uniform(0.5, 1.0))
                qx, qy = _quarter(cx), _quarter(cy)
                rot = rng.choice([0.0, 0.0, 15.0, 30.0, 45.0, 90.0])
                dm_anns.append({**base, "type": "ellipse", "group": 0,
                                "points": [qx - rx, qy - ry, qx + rx, qy + ry],
                                "attributes": {"occluded": False, "rotation": rot}})
                t = math.radians(rot)
                pts = []
                for k in range(32):
                    a = 2 * math.pi * k / 32
                    ex, ey = rx * math.cos(a), ry * math.sin(a)
                    pts += [round(qx + ex * math.cos(t) - ey * math.sin(t), 2),
                            round(qy + ex * math.sin(t) + ey * math.cos(t), 2)]
                coco.update(segmentation=[pts], bbox=_union_bbox([_ring_bbox(pts)]))
            else:
                rle = _blob_rle(rng, width, height, cx, cy, radius)
                dm_anns.append({**base, "type": "mask", "group": 0, "rle": rle})
                enc = {"counts": rle["counts"].encode("ascii"), "size": rle["size"]}
                coco.update(segmentation=rle,
                            bbox=[float(v) for v in mask_utils.toBbox(enc)])
            coco["area"] = round(coco["bbox"][2] * coco["bbox"][3], 2)
            coco_anns.append(coco)
        dm_anns.sort(key=lambda a: a["z_order"])  # stable: CVAT's order
        for n, a in enumerate(dm_anns, 1):
            a["id"] = n
        item = {"id": item_id, "subset": subset, "annotations": dm_anns,
                "image": {"path": item_id + ".jpg", "size": [height, width]}}
        image = {"id": i + 1, "file_name": item_id + ".jpg", "width": width, "height": height}
        yield item, image, coco_anns


def _stream_list(f, objs) -> None:
    """Write a JSON list one element at a time (bounded memory for large N)."""
    f.write("[")
    for n, obj in enumerate(objs):
        if n:
            f.write(",\n")
        json.dump(obj, f, separators=(",", ":"))
    f.write("]")


def write_dataset(out: Path, images: int, width: int, height: int, objects: int, seed: int = 1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    categories = {
        "label": {"labels": [{"name": n, "parent": "", "attributes": []} for n, _ in LABELS],
                  "attributes": ["occluded"]},
        "mask": {"colormap": [{"label_id": i, "r": c[0], "g": c[1], "b": c[2]}
                              for i, (_, c) in enumerate(LABELS)]},
    }
    infos = {"generator": "smaskd benchmarks/generate.py", "seed": seed, "images": images,
             "size": [width, height], "objects": objects}
    coco_images: list[dict] = []
    coco_tmp = out / "coco_annotations.part"
    with open(out / "datumaro.json", "w", encoding="utf-8") as fd, \
            open(coco_tmp, "w", encoding="utf-8") as fa:
        fd.write('{"dm_format_version":"1.0","infos":' + json.dumps(infos)
                 + ',"categories":' + json.dumps(categories) + ',"items":')
        first = True

        def items():
            nonlocal first
            for item, image, anns in generate(images, width, height, objects, seed):
                coco_images.append(image)
                for a in anns:
                    fa.write(("" if first else ",\n") + json.dumps(a, separators=(",", ":")))
                    first = False
                yield item

        _stream_list(fd, items())
        fd.write("}\n")
    with open(out / "coco.json", "w", encoding="utf-8") as fc:
        fc.write('{"info":' + json.dumps(infos) + ',"licenses":[],"categories":'
                 + json.dumps([{"id": i + 1, "name": n, "supercategory": ""}
                               for i, (n, _) in enumerate(LABELS)])
                 + ',"images":' + json.dumps(coco_images, separators=(",", ":"))
                 + ',"annotations":[')
        with open(coco_tmp, encoding="utf-8") as fa:
            while chunk := fa.read(1 << 20):
                fc.write(chunk)
        fc.write("]}\n")
    coco_tmp.unlink()
    with open(out / "labelmap.txt", "w", encoding="utf-8") as fl:
        fl.write("background:0,0,0::\n")
        for n, c in LABELS:
            fl.write(f"{n}:{c[0]},{c[1]},{c[2]}::\n")
    return infos


def _size(s: str) -> tuple[int, int]:
    w, _, h = s.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", type=_size, default=(640, 480), help="WxH, e.g. 640x480")
    ap.add_argument("--objects", type=int, default=10, help="objects per image")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    w, h = args.size
    write_dataset(args.out, args.images, w, h, args.objects, args.seed)
    print(f"wrote {args.out}/datumaro.json, coco.json, labelmap.txt "
          f"({args.images} images {w}x{h}, {args.objects} objects each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
