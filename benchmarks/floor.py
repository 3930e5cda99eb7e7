"""The cv2-only floor: the least work any exporter/importer of these files must do.

    python benchmarks/floor.py export datumaro.json out.zip
    python benchmarks/floor.py import out.zip

export: ``json.load``; per item, two uint8 index canvases (class, instance) painted in the
given (z) order with ``cv2.fillPoly`` (polygons, boxes), ``cv2.ellipse`` and a pycocotools
RLE decode for masks; a 256-entry colour LUT; ``cv2.imencode('.png')``; PNG bytes stored
(ZIP_STORED) into the zip with a labelmap and list files. No CVAT-exact rounding, no
validation, no per-shape full-frame masks: it is a lower bound, not a conforming exporter.
import: per PNG pair ``cv2.imdecode`` and a vectorised colour → index lookup, then a
per-instance pixel count (``np.bincount``) so every pixel is really used.
Prints one JSON line with counts.
"""

from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def voc_colormap(n: int = 256) -> np.ndarray:
    """Pascal VOC's bit-interleaved palette (index → RGB)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def _pts(flat: list[float]) -> np.ndarray:
    return np.round(np.asarray(flat, dtype=np.float64).reshape(-1, 2)).astype(np.int32)


def do_export(src: Path, out_zip: Path) -> dict:
    with open(src, encoding="utf-8") as f:
        doc = json.load(f)
    labels = doc["categories"]["label"]["labels"]
    colors = {c["label_id"]: (c["r"], c["g"], c["b"]) for c in doc["categories"]["mask"]["colormap"]}
    names = sorted(["background"] + [lab["name"] for lab in labels])
    cls_index = {n: i for i, n in enumerate(names)}
    label_to_cls = np.array([cls_index[lab["name"]] for lab in labels], dtype=np.uint8)
    cls_lut = np.zeros((256, 3), dtype=np.uint8)  # BGR for cv2
    for i, lab in enumerate(labels):
        cls_lut[label_to_cls[i]] = colors[i][::-1]
    inst_lut = voc_colormap()[:, ::-1].copy()
    cls_lut3 = cls_lut.reshape(256, 1, 3)
    inst_lut3 = np.ascontiguousarray(inst_lut.reshape(256, 1, 3))
    lists: dict[str, list[str]] = {}
    n_inst = 0
    with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_STORED) as z:
        for item in doc["items"]:
            h, w = item["image"]["size"]
            cls = np.zeros((h, w), dtype=np.uint8)
            inst = np.zeros((h, w), dtype=np.uint8)
            groups: dict[int, int] = {}
            next_id = 0
            for ann in item["annotations"]:
                t = ann["type"]
                if t not in ("polygon", "bbox", "ellipse", "mask"):
                    continue
                g = ann.get("group") or 0
                if g and g in groups:
                    iid = groups[g]
                else:
                    next_id += 1
                    iid = next_id & 0xFF
                    if g:
                        groups[g] = iid
                c = int(label_to_cls[ann["label_id"]])
                if t == "polygon":
                    p = [_pts(ann["points"])]
                    cv2.fillPoly(cls, p, c)
                    cv2.fillPoly(inst, p, iid)
                elif t == "bbox":
                    x, y, bw, bh = ann["bbox"]
                    p = [_pts([x, y, x + bw, y, x + bw, y + bh, x, y + bh])]
                    cv2.fillPoly(cls, p, c)
                    cv2.fillPoly(inst, p, iid)
                elif t == "ellipse":
                    x1, y1, x2, y2 = ann["points"]
                    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                    rot = (ann.get("attributes") or {}).get("rotation", 0.0)
                    args = ((round(cx), round(cy)), (round(x2 - cx), round(cy - y1)), rot, 0, 360)
                    cv2.ellipse(cls, *args, c, -1)
                    cv2.ellipse(inst, *args, iid, -1)
                else:
                    rle = ann["rle"]
                    enc = {"counts": rle["counts"].encode("ascii"), "size": rle["size"]}
                    x, y, bw, bh = (int(v) for v in mask_utils.toBbox(enc))
                    if bw and bh:  # paint only inside the mask's box
                        m = mask_utils.decode(enc)[y:y + bh, x:x + bw].view(bool)
                        np.copyto(cls[y:y + bh, x:x + bw], c, where=m)
                        np.copyto(inst[y:y + bh, x:x + bw], iid, where=m)
            n_inst += next_id
            _, png_c = cv2.imencode(".png", cv2.LUT(cv2.merge([cls, cls, cls]), cls_lut3))
            _, png_i = cv2.imencode(".png", cv2.LUT(cv2.merge([inst, inst, inst]), inst_lut3))
            z.writestr(f"SegmentationClass/{item['id']}.png", png_c.tobytes())
            z.writestr(f"SegmentationObject/{item['id']}.png", png_i.tobytes())
            lists.setdefault(item.get("subset") or "default", []).append(item["id"])
        for subset, ids in lists.items():
            z.writestr(f"ImageSets/Segmentation/{subset}.txt", "".join(i + "\n" for i in ids))
        lm = "# label:color_rgb:parts:actions\n"
        for n in names:
            rgb = (0, 0, 0) if n == "background" else colors[[lab["name"] for lab in labels].index(n)]
            lm += f"{n}:{rgb[0]},{rgb[1]},{rgb[2]}::\n"
        z.writestr("labelmap.txt", lm)
    return {"items": len(doc["items"]), "instances": n_inst}


def _pack(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 (H, W, 3) → RGB packed as one uint32 per pixel."""
    rgbx = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA)  # (H, W, 4), alpha 255
    v = rgbx.view(np.uint32)[..., 0]  # little endian: 0xAABBGGRR
    v = v.byteswap() >> 8  # 0xRRGGBBAA >> 8 = 0x00RRGGBB
    return v


def do_import(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as z:
        lm = z.read("labelmap.txt").decode("utf-8").splitlines()
        cls_colors = []
        for line in lm:
            if line.strip() and not line.startswith("#"):
                r, g, b = (int(v) for v in line.split(":")[1].split(","))
                cls_colors.append((r << 16) | (g << 8) | b)
        # 2**24-entry colour → index tables (16 MiB each): one gather per pixel.
        cls_lut = np.full(1 << 24, 255, dtype=np.uint8)
        cls_lut[np.array(cls_colors, dtype=np.uint32)] = np.arange(len(cls_colors), dtype=np.uint8)
        inst_rgb = voc_colormap().astype(np.uint32)
        inst_lut = np.zeros(1 << 24, dtype=np.uint8)
        inst_lut[(inst_rgb[:, 0] << 16) | (inst_rgb[:, 1] << 8) | inst_rgb[:, 2]] = np.arange(256)
        items = instances = pixels = 0
        for name in z.namelist():
            if not name.startswith("SegmentationClass/"):
                continue
            obj = "SegmentationObject/" + name[len("SegmentationClass/"):]
            c = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_COLOR)
            o = cv2.imdecode(np.frombuffer(z.read(obj), np.uint8), cv2.IMREAD_COLOR)
            ci = cls_lut[_pack(c)]
            oi = inst_lut[_pack(o)]
            counts = np.bincount(oi.ravel(), minlength=256)
            instances += int(np.count_nonzero(counts[1:]))
            pixels += int(np.count_nonzero(ci))
            items += 1
    return {"items": items, "instances": instances, "class_pixels": pixels}


def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    if len(argv) == 3 and argv[0] == "export":
        res = do_export(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 2 and argv[0] == "import":
        res = do_import(Path(argv[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    res["total_s"] = time.perf_counter() - t0
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
