"""COCO instances JSON (and COCO *results* lists) → the model.

Format, as pycocotools and Datumaro read it::

    {"images":      [{"id", "file_name", "width", "height", ...}],
     "categories":  [{"id", "name", "color"?: [r, g, b] | "#rrggbb", ...}],
     "annotations": [{"id", "image_id", "category_id", "iscrowd", "bbox": [x, y, w, h],
                      "segmentation": [[x1, y1, ...], ...]            # polygon rings, or
                                    | {"counts": [...] | "<str>", "size": [h, w]},  # RLE
                      "attributes"?: {...}}]}                          # CVAT adds these

Decisions, each because a user would otherwise lose or misplace data:

* Item id = ``file_name`` without its extension, sub-folders kept (what CVAT and Datumaro do).
* Labels are ordered by category id; ids need not be contiguous (``1, 2, 4``) and are mapped
  by id, never by position.
* Several polygon rings are **one** instance: they become several ``Polygon`` annotations that
  share one group. Every COCO annotation gets its own group, numbered 1, 2, ... per item in
  file order, because CVAT's instance merge paints ungrouped shapes before grouped ones; giving
  every annotation a group keeps COCO's drawing order (later on top = later in the file).
  The COCO annotation id is kept as ``Annotation.id``; it cannot be the group because 0 is a
  valid COCO id and group 0 means "no group".
* An empty segmentation with a bbox is a ``Box`` (with ``attributes.rotation`` when CVAT wrote
  one), never an invented polygon.
* Subsets: ``images[].subset`` (smaskd writes it), else the file name's
  (``instances_<s>.json``, ``person_keypoints_<s>.json``, ``stuff_<s>.json``), else
  ``default``. Items are keyed by (subset, id): one id may be in two subsets.
* What smaskd's own COCO carries for a lossless round trip, and what is honoured when present
  (third-party files without it read as before): ``attributes.instance_id`` (> 0) is the
  annotation's group, so a re-export numbers SegmentationObject as the original zip did;
  annotations without one take the ids after the largest, in file order. ``images[].
  max_instance_id`` and ids missing below the largest are reserved with empty masks on the
  background label (as the mask loader reserves them). ``info.background_label``
  (``{"name", "color"}``) is the label COCO has no category for; it is added first, so an
  export paints the background in its colour.
* A *results* list (top level ``[...]``, as detectors and ``loadRes`` use) is supported: items
  are named by ``image_id``, labels by ``category_id`` (the file has no names), frame sizes come
  from the RLE ``size``; an image with only polygons or boxes has no size and is refused.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

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
    RGB,
    Annotation,
    Box,
    Dataset,
    Item,
    Label,
    Polygon,
    RleMask,
    resolve_background,
)

__all__ = [
    "MAX_INSTANCE_ID",
    "append_coco_annotation",
    "coco_reserved_ids",
    "finish_coco_item",
    "coco_annotation_image",
    "coco_image",
    "coco_images",
    "coco_labels",
    "is_id",
    "parse_color",
    "read_coco",
    "subset_from_coco_name",
]

_T = TypeVar("_T")

_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6})")
_SUBSET_NAME = re.compile(r"(?:instances|person_keypoints|stuff)_(.+)\.json", re.IGNORECASE)

#: The largest instance id a mask zip can hold (16-bit SegmentationObject).
MAX_INSTANCE_ID = 65535
#: Ids are reserved (empty masks made) only up to this one: an export's SegmentationObject
#: is coloured with the 256-colour VOC palette, so no id above it can be reproduced, and a
#: few bytes of JSON must not make tens of thousands of annotations.
_RESERVED_UP_TO = 255


def subset_from_coco_name(name: str) -> str:
    """``instances_train.json`` → ``train`` (COCO's and Datumaro's naming; also
    ``person_keypoints_<s>.json`` and ``stuff_<s>.json``); else ``default``."""
    m = _SUBSET_NAME.fullmatch(posixpath.basename(name))
    return m.group(1) if m else "default"


def parse_color(value: Any, at: At) -> RGB:
    """``[r, g, b]`` or ``"#rrggbb"`` → an RGB tuple."""
    if isinstance(value, str):
        m = _HEX_COLOR.fullmatch(value.strip())
        if not m:
            raise at.error(f"expected a colour '#rrggbb', got {value!r}")
        h = m.group(1)
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    items = expect_list(value, at)
    if len(items) != 3:
        raise at.error(f"expected a colour [r, g, b], got {len(items)} values")
    r, g, b = (expect_int(v, at.index(i), 0, 255) for i, v in enumerate(items))
    return (r, g, b)


def is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _shapes(ann: dict, at: At) -> list[Box | Polygon | RleMask]:
    """The shapes of one COCO annotation: polygon rings, one RLE, or its bbox."""
    seg = ann.get("segmentation")
    seg_at = at.key("segmentation")
    if isinstance(seg, dict):
        return [parse_rle(seg, seg_at)]
    if seg is not None:
        rings = expect_list(seg, seg_at)
        if rings and not isinstance(rings[0], list):
            raise seg_at.error("expected a list of polygons [[x1, y1, ...], ...] or an RLE object")
        if rings:
            return [
                Polygon(expect_numbers(r, seg_at.index(i), multiple_of=2, minimum=6))
                for i, r in enumerate(rings)
            ]
    if ann.get("bbox") is None:
        raise at.error("annotation has neither a segmentation nor a bbox")
    x, y, w, h = expect_numbers(ann["bbox"], at.key("bbox"), count=4)
    rotation = 0.0
    attrs = ann.get("attributes")
    if isinstance(attrs, dict) and attrs.get("rotation") is not None:
        rotation = expect_number(attrs["rotation"], at.key("attributes").key("rotation"))
    return [Box(x, y, w, h, rotation)]


def _instance_id(attrs: dict, at: At) -> int:
    """``attributes.instance_id`` (smaskd writes it), 0 when absent: no id to honour."""
    value = attrs.get("instance_id")
    if value is None:
        return 0
    return expect_int(value, at.key("attributes").key("instance_id"), 0, MAX_INSTANCE_ID)


def _attributes(ann: dict, at: At) -> dict:
    attrs = dict(expect_dict(ann.get("attributes") or {}, at.key("attributes")))
    attrs.pop("rotation", None)  # now Box.rotation
    attrs.pop("instance_id", None)  # now the group
    if ann.get("iscrowd") is not None:
        crowd = ann["iscrowd"]
        if isinstance(crowd, bool):
            crowd = int(crowd)
        attrs["is_crowd"] = bool(expect_int(crowd, at.key("iscrowd"), 0, 1))
    if ann.get("score") is not None:
        attrs["score"] = expect_number(ann["score"], at.key("score"))
    return attrs


def _append(item: Item, ann: dict, label: int, at: At) -> None:
    """Add one COCO annotation to ``item`` as one instance (one new group)."""
    ann_id = ann.get("id", 0)
    ann_id = expect_int(ann_id, at.key("id")) if ann_id is not None else 0
    at = at.within(f"item {item.id!r}, annotation id {ann_id}")
    shapes = _shapes(ann, at)
    raw_attrs = ann.get("attributes")
    instance_id = _instance_id(raw_attrs, at) if isinstance(raw_attrs, dict) else 0
    attrs = _attributes(ann, at)
    # Without an id, a placeholder unique in the item (negative), numbered by finish_coco_item
    # after the item's largest id once every annotation is in; all groups come from here.
    group = instance_id or -(len(item.annotations) + 1)
    for shape in shapes:
        if (
            isinstance(shape, RleMask)
            and item.height is not None
            and ((shape.height, shape.width) != (item.height, item.width))
        ):
            raise (
                at.key("segmentation")
                .key("size")
                .error(
                    f"RLE size {shape.height}x{shape.width} differs from the image size "
                    f"{item.height}x{item.width} (h x w)"
                )
            )
        item.annotations.append(Annotation(shape, label, 0, group, ann_id, dict(attrs)))


def _background_label(doc: dict, root: At) -> Label | None:
    """``info.background_label`` = ``{"name", "color"}`` (smaskd writes it), else None."""
    info = doc.get("info")
    if not isinstance(info, dict) or info.get("background_label") is None:
        return None
    at = root.key("info").key("background_label")
    entry = expect_dict(info["background_label"], at)
    name = expect_str(entry.get("name"), at.key("name"))
    color = parse_color(entry["color"], at.key("color")) if entry.get("color") is not None else None
    return Label(name, color)


def coco_labels(doc: dict, root: At) -> tuple[list[Label], dict[Any, int]]:
    """The labels (``info.background_label`` first, then categories by id), cat id → index."""
    cats_at = root.key("categories")
    entries = []
    for i, cat in enumerate(expect_list(doc.get("categories", []), cats_at)):
        at = cats_at.index(i)
        cat = expect_dict(cat, at)
        cat_id = expect_int(cat.get("id"), at.key("id"))
        name = expect_str(cat.get("name"), at.key("name"))
        color = parse_color(cat["color"], at.key("color")) if cat.get("color") is not None else None
        entries.append((cat_id, name, color, at))
    entries.sort(key=lambda e: e[0])
    labels: list[Label] = []
    index: dict[Any, int] = {}
    names: set[str] = set()
    background = _background_label(doc, root)
    if background is not None and all(e[1] != background.name for e in entries):
        labels.append(background)  # a category of that name (an edited file) is the label
    for cat_id, name, color, at in entries:
        if cat_id in index:
            raise at.key("id").error(f"duplicate category id {cat_id}")
        if name in names:
            raise at.key("name").error(f"duplicate category name {name!r}")
        index[cat_id] = len(labels)
        names.add(name)
        labels.append(Label(name, color))
    return labels, index


def coco_image(img: Any, at: At, subset: str) -> tuple[Any, Item]:
    """One ``images`` entry → (its id, an ``Item`` without annotations).

    ``subset`` is the file's (from its name); the entry's own ``subset`` wins.
    """
    img = expect_dict(img, at)
    if img.get("subset") is not None:
        subset = expect_str(img["subset"], at.key("subset"))
        if not subset:
            raise at.key("subset").error("empty subset name")
    image_id = img.get("id")
    if not is_id(image_id):
        raise at.key("id").error("expected an integer or string image id")
    file_name = expect_str(img.get("file_name"), at.key("file_name"))
    item_id = posixpath.splitext(file_name)[0]
    if not item_id:
        raise at.key("file_name").error("empty file name")
    height = (
        expect_int(img["height"], at.key("height"), 1)
        if img.get("height") is not None
        else None
    )
    width = (
        expect_int(img["width"], at.key("width"), 1) if img.get("width") is not None else None
    )
    if (height is None) != (width is None):
        raise at.error("image has only one of width and height")
    if height is not None and width is not None:
        check_frame_size(height, width, at)
    coco_reserved_ids(img, at)  # checked here, with the rest of the entry
    return image_id, Item(item_id, subset, height, width, [], file_name)


def coco_images(entries: Iterable[Any], root: At, subset: str) -> Iterator[tuple[Any, Item]]:
    """The ``images`` entries in order, each checked, duplicate ids and item ids refused."""
    images_at = root.key("images")
    ids: set[Any] = set()
    keys: set[tuple[str, str]] = set()
    for i, img in enumerate(entries):
        at = images_at.index(i)
        image_id, item = coco_image(img, at, subset)
        if image_id in ids:
            raise at.key("id").error(f"duplicate image id {image_id!r}")
        if (item.subset, item.id) in keys:
            raise at.key("file_name").error(
                f"two images map to the same item id {item.id!r} in subset {item.subset!r}")
        ids.add(image_id)
        keys.add((item.subset, item.id))
        yield image_id, item


def coco_reserved_ids(img: Any, at: At) -> int:
    """``images[].max_instance_id`` (smaskd writes it): ids 1..n the item's masks used, 0 if
    absent. It keeps an item whose instances all vanished (a PNG pair of background only)."""
    value = img.get("max_instance_id") if isinstance(img, dict) else None
    if value is None:
        return 0
    return expect_int(value, at.key("max_instance_id"), 0, MAX_INSTANCE_ID)


def finish_coco_item(item: Item, reserved: int, background: int | None) -> Item:
    """Number the annotations that had no instance id, and reserve the unused ids.

    Annotations without ``attributes.instance_id`` take the ids after the largest given (or
    reserved) one, in file order: a file without ids reads as before, 1, 2, ... Ids below
    the largest that no annotation uses become empty masks on the background label, as the
    mask loader makes them, so an export numbers the instances as the original zip did.
    """
    given = {a.group for a in item.annotations if a.group > 0}
    top = max(max(given, default=0), reserved)
    unnumbered: dict[int, int] = {}
    for ann in item.annotations:
        if ann.group < 0:
            ann.group = unnumbered.setdefault(ann.group, top + len(unnumbered) + 1)
    if background is not None and item.height is not None and item.width is not None:
        empty = RleMask((item.height * item.width,), item.height, item.width)
        item.annotations.extend(Annotation(empty, background, 0, i)
                                for i in range(1, min(top, _RESERVED_UP_TO) + 1)
                                if i not in given)
    return item


def coco_annotation_image(ann: Any, at: At, images: Mapping[Any, _T]) -> tuple[dict, _T]:
    """An ``annotations`` entry as a dict, and what ``images`` holds for its ``image_id``."""
    ann = expect_dict(ann, at)
    image = images.get(ann.get("image_id")) if is_id(ann.get("image_id")) else None
    if image is None:
        raise at.key("image_id").error(f"no image with id {ann.get('image_id')!r}")
    return ann, image


def append_coco_annotation(item: Item, ann: dict, label_of: dict[Any, int], at: At) -> None:
    """Add one annotation (checked by :func:`coco_annotation_image`) to its item."""
    cat_id = ann.get("category_id")
    if not is_id(cat_id) or cat_id not in label_of:
        raise at.key("category_id").error(f"no category with id {cat_id!r}")
    _append(item, ann, label_of[cat_id], at)


def read_coco(doc: Any, source: str, subset: str = "default") -> Dataset:
    """A parsed COCO instances object (or results list) → ``Dataset``."""
    if isinstance(doc, list):
        return _read_results(doc, At(source))
    root = At(source)
    doc = expect_dict(doc, root)
    labels, label_of = coco_labels(doc, root)
    images_at = root.key("images")
    images = expect_list(doc.get("images"), images_at)
    by_image = dict(coco_images(images, root, subset))
    anns_at = root.key("annotations")
    for i, ann in enumerate(expect_list(doc.get("annotations", []), anns_at)):
        at = anns_at.index(i)
        ann, item = coco_annotation_image(ann, at, by_image)
        append_coco_annotation(item, ann, label_of, at)
    background = resolve_background(labels)
    items = [finish_coco_item(item, coco_reserved_ids(img, images_at.index(i)), background)
             for i, (img, item) in enumerate(zip(images, by_image.values()))]
    return Dataset(labels, items, "coco")


def _read_results(doc: list, root: At) -> Dataset:
    """A COCO results list: ``[{"image_id", "category_id", "segmentation"|"bbox", "score"}]``."""
    entries = []
    cat_ids: set[int] = set()
    for i, ann in enumerate(doc):
        at = root.index(i)
        ann = expect_dict(ann, at)
        image_id = ann.get("image_id")
        if not is_id(image_id):
            raise at.key("image_id").error("expected an integer or string image id")
        cat_ids.add(expect_int(ann.get("category_id"), at.key("category_id")))
        entries.append((image_id, ann, at))
    labels = [Label(str(c)) for c in sorted(cat_ids)]
    label_of = {c: i for i, c in enumerate(sorted(cat_ids))}
    items: dict[Any, Item] = {}
    for image_id, ann, at in entries:
        item = items.get(image_id)
        if item is None:
            item = items[image_id] = Item(str(image_id))
        seg = ann.get("segmentation")
        if isinstance(seg, dict) and item.height is None:
            rle = parse_rle(seg, at.key("segmentation"))
            item.height, item.width = rle.height, rle.width
        _append(item, ann, label_of[ann["category_id"]], at)
    for item in items.values():
        finish_coco_item(item, 0, None)
        if item.height is None:
            raise root.error(
                f"COCO results list: image {item.id} has only polygons or boxes, and a results "
                "list gives frame sizes only through RLE masks; use a COCO instances file"
            )
    warning = (
        "COCO results list: there are no category names or image files; items are named "
        "by image_id and labels by category_id"
    )
    return Dataset(labels, list(items.values()), "coco-results", [warning])
