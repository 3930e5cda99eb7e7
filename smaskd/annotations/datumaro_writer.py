"""``Dataset`` (from a mask zip) → one Datumaro JSON file (format version 1.0).

Datumaro 1.x loads it as it stands (``dm_format_version`` first, within the first KiB, as
its version sniffer wants) and smaskd's own Datumaro reader reads it back, so a mask zip →
Datumaro JSON → mask zip round trip reproduces the zip:

* every label is kept, background included, in labelmap order, with its colour in
  ``categories.mask.colormap`` (labels without a colour have no entry, as in Datumaro);
* a mask annotation is ``{"type": "mask", "rle": {"counts": <compressed str>, "size":
  [h, w]}, "label_id", "group": <instance id>, "z_order": 0, "id", "attributes"}``;
  placeholders (reserved instance ids) are written as empty masks on the background label;
* with ``polygons=True`` each polygon of an instance is its own ``polygon`` annotation
  sharing the instance's ``group`` (as CVAT's transform makes them);
* every item names its ``subset`` (all subsets live in this one file).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from smaskd.annotations.writers import (
    WriteStats,
    check_mask,
    file_name,
    is_real,
    mask_polygons,
)
from smaskd.geometry.rle import bitmap_rle
from smaskd.model import Dataset, Item, Label

__all__ = ["datumaro_assemble", "datumaro_document", "datumaro_item"]


def datumaro_item(item: Item, polygons: bool, stats: WriteStats) -> dict[str, Any]:
    """One item's entry of ``items``."""
    anns: list[dict[str, Any]] = []
    for ann in item.annotations:
        mask = check_mask(ann, item)
        h, w = item.height, item.width
        base = {"attributes": dict(ann.attributes), "group": ann.group,
                "label_id": ann.label, "z_order": ann.z_order}
        if polygons:
            if not is_real(ann):
                continue
            polys = mask_polygons(ann, item, stats).polygons
            for poly in polys:
                anns.append({"id": len(anns) + 1, "type": "polygon",
                             "points": [float(v) for v in poly], **base})
            stats.instances += bool(polys)
        else:
            rle = bitmap_rle(mask, h, w)  # type: ignore[arg-type]
            anns.append({"id": len(anns) + 1, "type": "mask", "rle": rle, **base})
            stats.instances += is_real(ann)
    entry: dict[str, Any] = {"id": item.id, "subset": item.subset, "annotations": anns}
    image: dict[str, Any] = {"path": file_name(item)}
    if item.height is not None and item.width is not None:
        image["size"] = [item.height, item.width]
    entry["image"] = image
    return entry


def datumaro_assemble(labels: list[Label], source_format: str,
                      items: Iterable[dict[str, Any]], stats: WriteStats) -> dict[str, Any]:
    """The document from the item entries, in order."""
    entries = []
    for entry in items:
        stats.items += 1
        entries.append(entry)
    label_entries = [{"name": lab.name, "parent": "", "attributes": []} for lab in labels]
    colormap = [{"label_id": i, "r": lab.color[0], "g": lab.color[1], "b": lab.color[2]}
                for i, lab in enumerate(labels) if lab.color is not None]
    return {
        "dm_format_version": "1.0",
        "infos": {"source": source_format or "segmentation_mask"},
        "categories": {
            "label": {"labels": label_entries, "attributes": [], "label_groups": []},
            "mask": {"colormap": colormap},
        },
        "items": entries,
    }


def datumaro_document(
    dataset: Dataset, polygons: bool = False
) -> tuple[dict[str, Any], WriteStats]:
    stats = WriteStats()
    items = (datumaro_item(item, polygons, stats) for item in dataset.items)
    return datumaro_assemble(dataset.labels, dataset.source_format, items, stats), stats
