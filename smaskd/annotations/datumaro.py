"""Datumaro JSON (``annotations/<subset>.json``) → the model.

Format, as Datumaro's ``datumaro`` reader and CVAT's "Datumaro 1.0" export write it::

    {"dm_format_version"?: "1.0", "infos"|"info": {...},
     "categories": {"label": {"labels": [{"name", "parent", "attributes"}], "attributes"},
                    "mask":  {"colormap": [{"label_id", "r", "g", "b"}]}, ...},
     "items": [{"id", "subset"?, "image"?: {"path", "size": [h, w]},
                "annotations": [{"id", "type", "attributes", "group", "label_id",
                                 "z_order", <geometry>}]}]}

Geometry by ``type``: ``polygon``/``polyline``/``points``/``ellipse`` use flat ``points``
(an ellipse's are its bounding box ``x1, y1, x2, y2``); ``bbox`` uses ``bbox`` = ``x, y, w, h``;
``mask`` uses ``rle`` = COCO RLE ``{counts, size: [h, w]}``; ``label`` is a tag.
``attributes.rotation`` (degrees) rotates boxes and ellipses.

Decisions:

* Numbers are kept exactly as parsed and annotations exactly in file order: CVAT breaks
  z_order ties by that order, so reordering would change pixels.
* ``label_id`` may be null (an unlabelled shape, label ``None``). A ``label_id`` outside the
  label list is an ``InputError`` naming the item and annotation: Datumaro would carry a label
  that names nothing, and dropping the shape silently would lose data.
* Types that never reach the masks (``label``, ``polyline``, ``points``, ``skeleton``,
  ``caption``, cuboids, ...) are kept as ``NonMask``: they still decide whether an item is
  listed (FORMAT.md §4.8). An unknown type is an error, not a silent skip.
* A mask RLE whose size differs from the item's image size is kept, with a warning: the
  painter decides (Datumaro's own fixture has a 2x3 mask on a 10x6 image).
* Subset: the item's own ``subset`` field (one-file-for-all-subsets, as the golden vectors
  use), else the one the caller derived from the file name, else ``default``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from smaskd.annotations.fields import check_frame_size, parse_rle
from smaskd.annotations.jsonload import (
    At,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_numbers,
    expect_str,
)
from smaskd.model import (
    Annotation,
    Box,
    Dataset,
    Ellipse,
    Item,
    Label,
    NonMask,
    Polygon,
    RleMask,
    Shape,
)

__all__ = ["datumaro_item", "datumaro_items", "read_datumaro"]

#: Datumaro annotation types that are kept but never painted; value = NonMask.kind.
_NON_MASK = {
    "label": "tag",
    "polyline": "polyline",
    "points": "points",
    "skeleton": "skeleton",
    "caption": "caption",
    "cuboid_3d": "cuboid_3d",
    "cuboid_2d": "cuboid_2d",
    "hash_key": "hash_key",
    "feature_vector": "feature_vector",
}
_KNOWN = sorted({"polygon", "bbox", "ellipse", "mask", *_NON_MASK})


def _labels(doc: dict, root: At) -> list[Label]:
    cats_at = root.key("categories")
    cats = expect_dict(doc.get("categories") or {}, cats_at)
    label_at = cats_at.key("label")
    label_cat = expect_dict(cats.get("label") or {}, label_at)
    labels_at = label_at.key("labels")
    names: list[str] = []
    for i, entry in enumerate(expect_list(label_cat.get("labels") or [], labels_at)):
        at = labels_at.index(i)
        name = expect_str(expect_dict(entry, at).get("name"), at.key("name"))
        if name in names:
            raise at.key("name").error(f"duplicate label name {name!r}")
        names.append(name)
    colors: dict[int, tuple[int, int, int]] = {}
    mask_at = cats_at.key("mask")
    cmap_at = mask_at.key("colormap")
    cmap = expect_dict(cats.get("mask") or {}, mask_at).get("colormap") or []
    for i, entry in enumerate(expect_list(cmap, cmap_at)):
        at = cmap_at.index(i)
        entry = expect_dict(entry, at)
        label_id = expect_int(entry.get("label_id"), at.key("label_id"), 0)
        if label_id >= len(names):
            raise at.key("label_id").error(
                f"colormap names label_id {label_id}, but there are only {len(names)} labels"
            )
        colors[label_id] = tuple(  # type: ignore[assignment]
            expect_int(entry.get(c), at.key(c), 0, 255) for c in "rgb"
        )
    return [Label(name, colors.get(i)) for i, name in enumerate(names)]


def _rotation(attrs: dict, at: At) -> float:
    value = attrs.get("rotation")
    return 0.0 if value is None else expect_number(value, at.key("attributes").key("rotation"))


def _shape(kind: str, ann: dict, attrs: dict, at: At) -> Shape:
    if kind == "polygon":
        return Polygon(
            expect_numbers(ann.get("points"), at.key("points"), multiple_of=2, minimum=6)
        )
    if kind == "bbox":
        x, y, w, h = expect_numbers(ann.get("bbox"), at.key("bbox"), count=4)
        return Box(x, y, w, h, _rotation(attrs, at))
    if kind == "ellipse":
        x1, y1, x2, y2 = expect_numbers(ann.get("points"), at.key("points"), count=4)
        return Ellipse(x1, y1, x2, y2, _rotation(attrs, at))
    if kind == "mask":
        return parse_rle(ann.get("rle"), at.key("rle"))
    if kind in ("polyline", "points"):
        return NonMask(
            _NON_MASK[kind], expect_numbers(ann.get("points"), at.key("points"), multiple_of=2)
        )
    if kind in _NON_MASK:
        return NonMask(_NON_MASK[kind])
    raise at.key("type").error(f"unsupported annotation type {kind!r}; known: {', '.join(_KNOWN)}")


def _annotation(ann: Any, at: At, n_labels: int) -> Annotation:
    ann = expect_dict(ann, at)
    ann_id = expect_int(ann["id"], at.key("id")) if ann.get("id") is not None else 0
    at = at.within(f"annotation id {ann_id}")
    kind = expect_str(ann.get("type"), at.key("type"))
    attrs = dict(expect_dict(ann.get("attributes") or {}, at.key("attributes")))
    label = None
    if ann.get("label_id") is not None:
        label = expect_int(ann["label_id"], at.key("label_id"), 0)
        if label >= n_labels:
            raise at.key("label_id").error(
                f"label_id {label} is out of range: the file declares {n_labels} labels "
                f"(ids 0..{n_labels - 1})"
            )
    group = expect_int(ann["group"], at.key("group"), 0) if ann.get("group") is not None else 0
    z_order = expect_int(ann["z_order"], at.key("z_order")) if ann.get("z_order") is not None else 0
    shape = _shape(kind, ann, attrs, at)
    if isinstance(shape, (Box, Ellipse)):
        attrs.pop("rotation", None)  # now part of the shape
    return Annotation(shape, label, z_order, group, ann_id, attrs)


def _item(entry: Any, at: At, default_subset: str, n_labels: int, warnings: list[str]) -> Item:
    entry = expect_dict(entry, at)
    raw_id = entry.get("id")
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        raw_id = str(raw_id)
    item_id = expect_str(raw_id, at.key("id"))
    if not item_id:
        raise at.key("id").error("empty item id")
    at = at.within(f"item {item_id!r}")
    subset = default_subset
    if entry.get("subset") is not None:
        subset = expect_str(entry["subset"], at.key("subset")) or default_subset
    height = width = None
    path = None
    image = entry.get("image")
    if image is not None:
        image_at = at.key("image")
        image = expect_dict(image, image_at)
        if image.get("path") is not None:
            path = expect_str(image["path"], image_at.key("path"))
        if image.get("size") is not None:
            size_at = image_at.key("size")
            size = expect_list(image["size"], size_at)
            if len(size) != 2:
                raise size_at.error(f"expected [height, width], got {len(size)} values")
            height = expect_int(size[0], size_at.index(0), 1)
            width = expect_int(size[1], size_at.index(1), 1)
            check_frame_size(height, width, size_at)
    item = Item(item_id, subset, height, width, [], path)
    anns_at = at.key("annotations")
    for i, ann in enumerate(expect_list(entry.get("annotations") or [], anns_at)):
        a = _annotation(ann, anns_at.index(i), n_labels)
        shape = a.shape
        if (
            isinstance(shape, RleMask)
            and height is not None
            and ((shape.height, shape.width) != (height, width))
        ):
            warnings.append(
                f"{anns_at.index(i).within(f'annotation id {a.id}')}: mask RLE size "
                f"{shape.height}x{shape.width} differs from the image size {height}x{width} (h x w)"
            )
        item.annotations.append(a)
    return item


def read_datumaro(doc: Any, source: str, default_subset: str = "default") -> Dataset:
    """A parsed Datumaro JSON document → ``Dataset`` (items and annotations in file order)."""
    root = At(source)
    doc = expect_dict(doc, root)
    labels = _labels(doc, root)
    warnings: list[str] = []
    entries = expect_list(doc.get("items"), root.key("items"))
    items = list(datumaro_items(entries, source, default_subset, len(labels), warnings))
    return Dataset(labels, items, "datumaro", warnings)


def datumaro_items(entries: Iterable[Any], source: str, default_subset: str, n_labels: int,
                   warnings: list[str]) -> Iterator[Item]:
    """The ``items`` entries → ``Item``s, one at a time (entries may be parsed lazily)."""
    seen: set[tuple[str, str]] = set()
    items_at = At(source).key("items")
    for i, entry in enumerate(entries):
        item = datumaro_item(entry, source, i, default_subset, n_labels, warnings)
        if (item.subset, item.id) in seen:
            raise (
                items_at.index(i)
                .key("id")
                .error(f"item {item.id!r} appears twice in subset {item.subset!r}")
            )
        seen.add((item.subset, item.id))
        yield item


def datumaro_item(entry: Any, source: str, index: int, default_subset: str, n_labels: int,
                  warnings: list[str]) -> Item:
    """``items[index]`` → ``Item``; what :func:`datumaro_items` checks per item, no more.

    For readers that parse an item again after the whole list has been checked once.
    """
    return _item(entry, At(source).key("items").index(index), default_subset, n_labels, warnings)
