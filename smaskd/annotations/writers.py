"""What both JSON writers (COCO, Datumaro) share; :mod:`smaskd.annotations.write` picks one.

The writers import this module and never the other way round. The shared decisions:

* masks are written from the cropped bitmaps the mask loader made; a full frame is only
  materialised for one annotation at a time, to encode its RLE;
* ``polygons=True`` converts each mask with CVAT's own method
  (:mod:`smaskd.geometry.polygons`), so the points equal CVAT's "convert masks to polygons";
  components CVAT's method loses are counted in a warning, never dropped silently;
* placeholders (reserved instance ids with no pixels, see
  :func:`smaskd.geometry.instances.is_placeholder`) go only where they can be read back
  (Datumaro JSON, so a re-export renumbers nothing); COCO has no place for them;
* JSON is UTF-8 with ``ensure_ascii=False`` and never NaN.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from smaskd.errors import InputError
from smaskd.geometry.instances import is_placeholder
from smaskd.geometry.polygons import MaskPolygons, bitmap_to_polygons
from smaskd.model import Annotation, BitmapMask, Item

__all__ = [
    "WriteStats",
    "check_mask",
    "dump_json",
    "dumps",
    "file_name",
    "is_real",
    "mask_polygons",
]


def file_name(item: Item) -> str:
    """The image file an item names in both writers: its own extension, else ``.png``."""
    ext = posixpath.splitext(item.image_path)[1] if item.image_path else ""
    return item.id + (ext or ".png")


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


def is_real(ann: Annotation) -> bool:
    """Annotations that carry pixels (not placeholders)."""
    return not is_placeholder(ann)
