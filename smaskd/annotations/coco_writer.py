"""``Dataset`` (from a mask zip) → COCO instances JSON.

Layout::

    {"info": {"description", "background_label"?: {"name", "color"}}, "licenses": [],
     "categories":  [{"id": 1.., "name", "color": [r, g, b] | null, "supercategory": ""}],
     "images":      [{"id": 1.., "file_name", "width", "height", "subset",
                      "max_instance_id"?}],
     "annotations": [{"id": 1.., "image_id", "category_id", "segmentation", "area", "bbox",
                      "iscrowd": 0, "attributes": {"instance_id"}}]}

Decisions:

* Categories are the labels in labelmap order **without the background label** (COCO has
  no background class), numbered 1..N. Labels never used are kept: a COCO → mask export
  needs them to rebuild the same ``labelmap.txt``. The background's name and colour go in
  ``info.background_label`` instead, so an export paints it in its own colour.
* Nothing is lost on the way back (:mod:`smaskd.annotations.coco` reads it): ``subset``
  names each image's subset, ``attributes.instance_id`` is the SegmentationObject id, and
  ``max_instance_id`` (on images whose masks had instance ids) the largest id the item's
  masks used, visible or not. Reserved ids (placeholders) are not written: a COCO tool
  would count an annotation without pixels; the reader makes them again from the ids.
* ``file_name`` is the item id plus the image's extension when the zip has the image
  (``JPEGImages/<id>.jpg``), else ``<id>.png``; ``subset`` is an extra field.
* ``segmentation`` is a full-frame RLE with the compressed ``counts`` string pycocotools
  writes (``iscrowd`` stays 0: these are instances, not crowds), or with ``polygons=True``
  CVAT's polygons of the mask. ``area`` is the pixel count (RLE) or the pycocotools area of
  the polygons; ``bbox`` is ``[x, y, w, h]`` of the pixels (RLE) or of the points (polygons).
* An item without a known size (no mask, no readable image) gets ``width``/``height`` null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycocotools import mask as _coco

from smaskd.annotations.writers import (
    WriteStats,
    check_mask,
    file_name,
    is_real,
    mask_polygons,
)
from smaskd.geometry.rle import bitmap_rle
from smaskd.model import Dataset, Item, Label, resolve_background

__all__ = [
    "coco_assemble",
    "coco_categories",
    "coco_document",
    "coco_image",
    "coco_info",
    "coco_item_annotations",
    "file_name",
    "max_instance_id",
]


def _pixel_bbox(rle: dict) -> list[int]:
    x, y, w, h = _coco.toBbox({"counts": rle["counts"].encode("ascii"), "size": rle["size"]})
    return [int(x), int(y), int(w), int(h)]


def _points_bbox(polys: list[list[int]]) -> list[int]:
    xs = [v for p in polys for v in p[0::2]]
    ys = [v for p in polys for v in p[1::2]]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def coco_categories(labels: list[Label]) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """COCO categories (every label but the background) and label index → category id."""
    background = resolve_background(labels)
    cat_of: dict[int, int] = {}
    categories = []
    for i, lab in enumerate(labels):
        if i == background:
            continue
        cat_of[i] = len(categories) + 1
        categories.append({
            "id": cat_of[i], "name": lab.name,
            "color": list(lab.color) if lab.color is not None else None,
            "supercategory": "",
        })
    return categories, cat_of


def coco_item_annotations(item: Item, cat_of: dict[int, int], polygons: bool,
                          stats: WriteStats) -> list[dict[str, Any]]:
    """One item's COCO annotations, without ``id`` and ``image_id`` (numbered by the caller)."""
    entries: list[dict[str, Any]] = []
    h, w = item.height, item.width
    for ann in item.annotations:
        mask = check_mask(ann, item)
        if not is_real(ann):
            stats.skipped_placeholders += 1
            continue
        if ann.label not in cat_of:  # background/None never becomes a COCO annotation
            continue
        entry: dict[str, Any] = {"category_id": cat_of[ann.label]}
        if polygons:
            polys = mask_polygons(ann, item, stats).polygons
            if not polys:
                continue
            rles = _coco.frPyObjects([[float(v) for v in p] for p in polys], h, w)
            entry["segmentation"] = polys
            entry["area"] = int(_coco.area(_coco.merge(rles)))
            entry["bbox"] = _points_bbox(polys)
        else:
            rle = bitmap_rle(mask, h, w)  # type: ignore[arg-type]
            entry["segmentation"] = rle
            entry["area"] = int(mask.bitmap.sum())
            entry["bbox"] = _pixel_bbox(rle)
        entry["iscrowd"] = 0
        entry["attributes"] = {"instance_id": ann.group}
        entries.append(entry)
        stats.instances += 1
    return entries


def max_instance_id(item: Item) -> int:
    """The largest instance id of the item's masks, placeholders included (0: none)."""
    return max((ann.group for ann in item.annotations), default=0)


def coco_image(image_id: int, item: Item, max_id: int = 0) -> dict[str, Any]:
    """The ``images`` entry of an item; ``max_id`` from :func:`max_instance_id`."""
    entry: dict[str, Any] = {"id": image_id, "file_name": file_name(item), "width": item.width,
                             "height": item.height, "subset": item.subset}
    if max_id:
        entry["max_instance_id"] = max_id
    return entry


def coco_info(labels: list[Label], source_format: str) -> dict[str, Any]:
    """``info``: what made the file, and the background label COCO has no category for."""
    info: dict[str, Any] = {"description": f"imported by smaskd from {source_format or 'masks'}"}
    background = resolve_background(labels)
    if background is not None:
        lab = labels[background]
        info["background_label"] = {
            "name": lab.name, "color": list(lab.color) if lab.color is not None else None}
    return info


def coco_assemble(labels: list[Label], source_format: str,
                  rows: Iterable[tuple[Item, list[dict[str, Any]]]],
                  stats: WriteStats) -> dict[str, Any]:
    """The document from ``(item, its annotations)`` in item order; numbers both."""
    categories, _ = coco_categories(labels)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    unsized = 0
    for image_id, (item, entries) in enumerate(rows, start=1):
        stats.items += 1
        unsized += item.height is None
        images.append(coco_image(image_id, item, max_instance_id(item)))
        for entry in entries:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **entry})
    if unsized:
        stats.warnings.append(f"{unsized} image(s) have no mask and no readable image: their "
                              "width and height are null")
    return {
        "info": coco_info(labels, source_format),
        "licenses": [],
        "categories": categories,
        "images": images,
        "annotations": annotations,
    }


def coco_document(dataset: Dataset, polygons: bool = False) -> tuple[dict[str, Any], WriteStats]:
    stats = WriteStats()
    _, cat_of = coco_categories(dataset.labels)
    rows = ((item, coco_item_annotations(item, cat_of, polygons, stats))
            for item in dataset.items)
    return coco_assemble(dataset.labels, dataset.source_format, rows, stats), stats
