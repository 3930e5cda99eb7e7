"""``Dataset`` → annotation JSON bytes: the one entry point import uses (``write_annotations``).

Both writers share the decisions that matter to a user:

* masks are written from the cropped bitmaps the mask loader made; a full frame is only
  materialised for one annotation at a time, to encode its RLE;
* ``polygons=True`` converts each mask with CVAT's own method
  (:mod:`smaskd.smask.polygons`), so the points equal CVAT's "convert masks to polygons";
  components CVAT's method loses are counted in a warning, never dropped silently;
* placeholders (reserved instance ids with no pixels, see
  :func:`smaskd.smask.instances.is_placeholder`) go only where they can be read back
  (Datumaro JSON, so a re-export renumbers nothing); COCO has no place for them;
* JSON is UTF-8 with ``ensure_ascii=False`` and never NaN.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
from pycocotools import mask as _coco

from smaskd.errors import InputError
from smaskd.model import Annotation, BitmapMask, Dataset, Item
from smaskd.smask.instances import is_placeholder
from smaskd.smask.polygons import MaskPolygons, bitmap_to_polygons

__all__ = [
    "FORMATS",
    "WriteStats",
    "bitmap_rle",
    "check_mask",
    "dump_json",
    "dumps",
    "full_frame",
    "is_real",
    "mask_polygons",
    "write_annotations",
]

FORMATS = ("coco", "datumaro")


@dataclass(slots=True)
class WriteStats:
    """What a writer wrote; ``warnings`` are for the job log."""

    items: int = 0
    instances: int = 0
    polygons: int = 0
    lost_components: int = 0
    lost_instances: int = 0
    skipped_placeholders: int = 0
    warnings: list[str] = field(default_factory=list)

    def finish(self) -> "WriteStats":
        if self.lost_components:
            whole = (f"; {self.lost_instances} instance(s) lost every polygon and were left out"
                     if self.lost_instances else "")
            self.warnings.append(
                f"{self.lost_components} mask component(s) 1-2 px wide or single pixels gave no "
                f"polygon (CVAT's mask-to-polygon method drops them){whole}"
            )
        return self


def full_frame(mask: BitmapMask, height: int, width: int) -> np.ndarray:
    """The bitmap pasted on an empty ``height x width`` uint8 frame (clipped)."""
    frame = np.zeros((height, width), dtype=np.uint8)
    bm = np.asarray(mask.bitmap, dtype=bool)
    r0, c0 = max(mask.top, 0), max(mask.left, 0)
    r1, c1 = min(mask.top + bm.shape[0], height), min(mask.left + bm.shape[1], width)
    if r0 < r1 and c0 < c1:
        frame[r0:r1, c0:c1] = bm[r0 - mask.top:r1 - mask.top, c0 - mask.left:c1 - mask.left]
    return frame


def bitmap_rle(mask: BitmapMask, height: int, width: int) -> dict:
    """Compressed full-frame COCO RLE of a cropped bitmap, in O(crop columns x height).

    Only the frame columns the crop spans are materialised; the empty columns on either side
    just lengthen the first and last run of zeros.
    """
    bm = np.asarray(mask.bitmap, dtype=bool)
    c0, c1 = max(mask.left, 0), min(mask.left + bm.shape[1], width)
    r0, r1 = max(mask.top, 0), min(mask.top + bm.shape[0], height)
    if c0 >= c1 or r0 >= r1:
        counts = [height * width]
    else:
        band = np.zeros((height, c1 - c0), dtype=np.uint8)
        band[r0:r1] = bm[r0 - mask.top:r1 - mask.top, c0 - mask.left:c1 - mask.left]
        flat = band.ravel(order="F")
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate(([0], edges, [flat.size]))
        runs = np.diff(bounds).tolist()
        if flat[0]:
            runs.insert(0, 0)
        runs[0] += c0 * height
        trailing = (width - c1) * height
        if len(runs) % 2 == 0:  # ends inside the mask: trailing zeros are a new run, if any
            if trailing:
                runs.append(trailing)
        else:
            runs[-1] += trailing
        counts = runs
    rle = _coco.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"counts": rle["counts"].decode("ascii"), "size": [height, width]}


def mask_polygons(ann: Annotation, item: Item, stats: WriteStats) -> MaskPolygons:
    """CVAT's polygons of one mask annotation, with the losses added to ``stats``."""
    assert isinstance(ann.shape, BitmapMask) and item.height and item.width
    result = bitmap_to_polygons(ann.shape, item.height, item.width)
    stats.lost_components += result.lost
    if not result.polygons:
        stats.lost_instances += 1
    stats.polygons += len(result.polygons)
    return result


def check_mask(ann: Annotation, item: Item) -> BitmapMask:
    if not isinstance(ann.shape, BitmapMask) or item.height is None or item.width is None:
        raise InputError(
            f"annotation {ann.id} is a {type(ann.shape).__name__}; only masks loaded from a "
            "mask zip (with a frame size) can be written",
            f"item {item.id!r} (subset {item.subset!r})",
        )
    return ann.shape


def dumps(value: Any) -> str:
    """The JSON text every writer writes (compact, UTF-8 as is, never NaN)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as e:  # NaN/inf cannot happen with our integer data; say so if it does
        raise InputError(f"cannot write JSON: {e}") from None


def dump_json(doc: Any, out: BinaryIO) -> None:
    out.write(dumps(doc).encode("utf-8"))


def write_annotations(
    dataset: Dataset, out: BinaryIO, fmt: str = "coco", polygons: bool = False
) -> WriteStats:
    """Write ``dataset`` as COCO instances (default) or Datumaro JSON to ``out`` (binary)."""
    if fmt == "coco":
        from smaskd.annotations.coco_writer import coco_document

        doc, stats = coco_document(dataset, polygons)
    elif fmt == "datumaro":
        from smaskd.annotations.datumaro_writer import datumaro_document

        doc, stats = datumaro_document(dataset, polygons)
    else:
        raise InputError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    dump_json(doc, out)
    return stats.finish()


def is_real(ann: Annotation) -> bool:
    """Annotations that carry pixels (not placeholders)."""
    return not is_placeholder(ann)
