"""LabelMe JSON (one image per file) → the model.

Format, as labelme 4.x/5.x writes it::

    {"version": "5.7.0", "flags": {}, "imagePath": "img.jpg", "imageData": <base64> | null,
     "imageHeight": 450, "imageWidth": 560,
     "shapes": [{"label", "points": [[x, y], ...], "group_id": int | null,
                 "shape_type": "polygon" | "rectangle" | "circle" | "mask" | "line"
                               | "linestrip" | "point" | "points",
                 "mask"?: <base64 PNG> | null, "flags", "description"?}]}

Mapping, following labelme's own ``shapes_to_label`` where it defines one:

* ``polygon`` (also a missing ``shape_type``, as labelme 3 wrote) → ``Polygon``;
  ``rectangle`` = two opposite corners in any order → ``Box``; ``circle`` = centre and a point on
  the circle → the ``Ellipse`` of its bounding box (radius computed as labelme does);
  ``mask`` = a base64 PNG → ``BitmapMask`` whose top-left is ``points[0]`` truncated to
  integers (labelme's ``astype(int)``), its extent the bitmap's own;
  ``line``/``linestrip`` → ``NonMask("polyline")``, ``point``/``points`` → ``NonMask("points")``
  (kept, never painted: CVAT's exporter does not paint them either).
* An instance is (label, group_id), as in labelme: shapes with the same label **and** the same
  non-null ``group_id`` share one group; ``null`` is an instance of its own. Every area shape
  gets a group (1, 2, ... by first appearance), because CVAT's instance merge paints ungrouped
  shapes before grouped ones; numbering them all keeps labelme's order (later on top).
* Item id = the ``imagePath`` base name without extension (Windows separators too), else the
  JSON file's own name. ``imageData`` is never decoded: only the masks need pixels.
* Labels in order of first appearance. ``__ignore__`` is read as an ordinary label, with a
  warning: whether it is void is the exporter's decision (via the labelmap).
"""

from __future__ import annotations

import base64
import binascii
import math
import posixpath
from typing import Any

import numpy as np

from smaskd.annotations.fields import check_frame_size
from smaskd.annotations.jsonload import (
    At,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_str,
)
from smaskd.model import (
    Annotation,
    BitmapMask,
    Box,
    Dataset,
    Ellipse,
    Item,
    Label,
    NonMask,
    Polygon,
    Shape,
)

__all__ = ["read_labelme"]

_POINT_COUNTS = {"rectangle": 2, "circle": 2, "mask": 2, "line": 2, "point": 1}
_MIN_POINTS = {"polygon": 3, "linestrip": 2, "points": 1}
_NON_MASK = {"line": "polyline", "linestrip": "polyline", "point": "points", "points": "points"}
_KNOWN = sorted({*_POINT_COUNTS, *_MIN_POINTS})


def _points(value: Any, at: At) -> list[tuple[float, float]]:
    pairs = []
    for i, p in enumerate(expect_list(value, at)):
        p_at = at.index(i)
        p = expect_list(p, p_at)
        if len(p) != 2:
            raise p_at.error(f"expected a point [x, y], got {len(p)} values")
        pairs.append((expect_number(p[0], p_at.index(0)), expect_number(p[1], p_at.index(1))))
    return pairs


def _bitmap(value: Any, at: At) -> np.ndarray:
    from smaskd.pngio import decode_png  # cv2 loads only for files that have masks

    data = expect_str(value, at)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise at.error("mask is not valid base64") from None
    img = decode_png(raw, str(at))
    return img.any(axis=2) if img.ndim == 3 else img != 0


def _shape(kind: str, shape: dict, pts: list[tuple[float, float]], at: At) -> Shape:
    if kind == "polygon":
        return Polygon(tuple(v for p in pts for v in p))
    if kind == "rectangle":
        (x1, y1), (x2, y2) = pts
        x, w = (x1, x2 - x1) if x1 <= x2 else (x2, x1 - x2)
        y, h = (y1, y2 - y1) if y1 <= y2 else (y2, y1 - y2)
        return Box(x, y, w, h)
    if kind == "circle":
        (cx, cy), (px, py) = pts
        r = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)  # labelme's own formula, bit for bit
        return Ellipse(cx - r, cy - r, cx + r, cy + r)
    if kind == "mask":
        bitmap = _bitmap(shape.get("mask"), at.key("mask"))
        return BitmapMask(int(pts[0][0]), int(pts[0][1]), bitmap)
    return NonMask(_NON_MASK[kind], tuple(v for p in pts for v in p))


def read_labelme(doc: Any, source: str, fallback_id: str) -> Dataset:
    """A parsed LabelMe document → a one-item ``Dataset``.

    ``fallback_id`` names the item when ``imagePath`` is missing (the JSON file's stem).
    """
    root = At(source)
    doc = expect_dict(doc, root)
    image_path = None
    if doc.get("imagePath") is not None:
        image_path = expect_str(doc["imagePath"], root.key("imagePath"))
    base = posixpath.basename((image_path or "").replace("\\", "/"))
    item_id = posixpath.splitext(base)[0] or fallback_id
    height = width = None
    if doc.get("imageHeight") is not None or doc.get("imageWidth") is not None:
        height = expect_int(doc.get("imageHeight"), root.key("imageHeight"), 1)
        width = expect_int(doc.get("imageWidth"), root.key("imageWidth"), 1)
        check_frame_size(height, width, root)
    item = Item(item_id, "default", height, width, [], image_path)
    labels: dict[str, int] = {}
    groups: dict[tuple[str, int], int] = {}
    next_group = 1
    shapes_at = root.key("shapes")
    for i, shape in enumerate(expect_list(doc.get("shapes"), shapes_at)):
        at = shapes_at.index(i).within(f"item {item_id!r}, shape {i + 1}")
        shape = expect_dict(shape, at)
        label = expect_str(shape.get("label"), at.key("label"))
        kind = shape.get("shape_type")
        kind = "polygon" if kind is None else expect_str(kind, at.key("shape_type"))
        if kind not in _KNOWN:
            raise at.key("shape_type").error(
                f"unsupported shape_type {kind!r}; known: {', '.join(_KNOWN)}"
            )
        pts = _points(shape.get("points"), at.key("points"))
        if kind in _POINT_COUNTS and len(pts) != _POINT_COUNTS[kind]:
            raise at.key("points").error(
                f"a {kind} needs {_POINT_COUNTS[kind]} points, got {len(pts)}"
            )
        if kind in _MIN_POINTS and len(pts) < _MIN_POINTS[kind]:
            raise at.key("points").error(
                f"a {kind} needs at least {_MIN_POINTS[kind]} points, got {len(pts)}"
            )
        geometry = _shape(kind, shape, pts, at)
        group_id = shape.get("group_id")
        if group_id is not None:
            key = (label, expect_int(group_id, at.key("group_id")))
            if key not in groups:
                groups[key] = next_group
                next_group += 1
            group = groups[key]
        elif isinstance(geometry, NonMask):
            group = 0
        else:
            group = next_group
            next_group += 1
        attrs: dict = {}
        if isinstance(shape.get("flags"), dict) and shape["flags"]:
            attrs["flags"] = shape["flags"]
        if isinstance(shape.get("description"), str) and shape["description"]:
            attrs["description"] = shape["description"]
        label_index = labels.setdefault(label, len(labels))
        item.annotations.append(Annotation(geometry, label_index, 0, group, i + 1, attrs))
    warnings = []
    if "__ignore__" in labels:
        warnings.append(
            f"{source}: label '__ignore__' is labelme's ignore region; it is read as an ordinary "
            "label (Segmentation mask has no void value; the labelmap decides how it is painted)"
        )
    return Dataset([Label(name) for name in labels], [item], "labelme", warnings)
