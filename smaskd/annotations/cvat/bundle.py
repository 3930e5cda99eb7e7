"""A CVAT task bundle (the four REST payloads of one task) → the model, as CVAT exports it.

What CVAT's task export does, and so what this reader does (``bindings.py``, ``formats/``):

* **Frames.** One item per task frame ``0 .. meta.size - 1`` that is not in
  ``meta.deleted_frames``. Image task (``task.mode == "annotation"``): the item id is the
  frame's ``meta.frames[i].name`` without its extension (sub-folders kept), its size that
  frame's. Video task (``"interpolation"``): ``frame_%06d`` of ``start_frame + i * step``
  (``step`` from ``frame_filter`` ``step=N``), every frame the size of ``meta.frames[0]``.
  Subset: always ``default`` (CVAT's task export ignores ``task.subset``).
* **Labels.** ``make_colormap``: every label in id order, sublabels (skeleton points)
  included, colour from ``#rrggbb``; the exporter prepends ``background`` as usual.
* **Shapes per frame.** Plain shapes of that frame in the bundle's order, then every track's
  shape on that frame in track order (:mod:`.tracks`); the painter's stable sort by z_order
  makes CVAT's paint order. Rectangles become ``Box(x0, y0, x1 - x0, y1 - y0, rotation)``
  (Datumaro's ``Bbox``); ellipses keep CVAT's centre (``cx, cy, right x, top y``) so its
  rounding is CVAT's; masks are CVAT's RLE (runs over the inclusive box ``left..right``
  row by row, starting with a background run, then ``left, top, right, bottom``).
* **Shapes that paint nothing.** Polylines, points and skeletons are kept as ``NonMask``:
  a frame holding only those is not listed. A skeleton track's shape is dropped on frames
  where all its elements are outside (CVAT's ``to_shapes``). Tags are ``NonMask("tag")``.
  2-D cuboids are dropped, as CVAT's converter drops them (no annotation at all).
* **A mask box past the frame.** CVAT's ``convert_mask`` writes every run pixel into a
  frame-sized array: past the right or bottom edge it crashes (IndexError), above or left of
  the frame it wraps around to the other side. smaskd clips the mask to the frame and warns
  (once per shape or track), naming the shape and the frame: the pixels inside the frame are
  the ones the annotator drew there.

Items are built when asked for (:class:`~smaskd.annotations.rebuilt.RebuiltItems`): the
dataset holds the bundle's shapes and keyframes, not the expanded tracks.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Any

import numpy as np

from smaskd.annotations.cvat.tracks import Key, Timeline, Track, TrackError, interpolate_points
from smaskd.annotations.jsonload import (
    At,
    expect_dict,
    expect_int,
    expect_list,
    expect_number,
    expect_numbers,
    expect_str,
)
from smaskd.errors import InputError
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

__all__ = ["BUNDLE_KEYS", "bundle_to_dataset", "is_bundle"]

BUNDLE_KEYS = ("task", "meta", "labels", "annotations")
_PAINTED = {"rectangle", "polygon", "ellipse", "mask"}
_NON_MASK = {"polyline", "points", "skeleton"}
_KNOWN = sorted(_PAINTED | _NON_MASK | {"cuboid"})
_STEP = re.compile(r"^\s*step\s*=\s*(\d+)\s*$")


def is_bundle(doc: Any) -> bool:
    """A task bundle: the four keys, ``annotations`` an object (extra keys are allowed)."""
    return (
        isinstance(doc, dict)
        and all(k in doc for k in BUNDLE_KEYS)
        and isinstance(doc.get("annotations"), dict)
        and isinstance(doc.get("meta"), dict)
    )


# --- labels ------------------------------------------------------------------------------


def _hex_color(value: Any, at: At) -> tuple[int, int, int] | None:
    if value in (None, ""):
        return None
    text = expect_str(value, at)
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", text):
        raise at.error(f"expected a colour '#rrggbb', got {text!r}")
    return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def _labels(value: Any, root: At) -> tuple[list[Label], dict[int, int]]:
    """``make_colormap``'s labels (id order, sublabels included) and label id → index."""
    at = root.key("labels")
    if isinstance(value, dict) and "results" in value:  # the whole paginated page
        if value.get("next"):
            raise at.key("next").error(
                "the labels page is not the last one (next is set): save every label, e.g. "
                "with cvat-sdk's task.get_labels(), which follows the pages")
        at = at.key("results")
        value = value["results"]
    found: dict[int, tuple[str, tuple[int, int, int] | None]] = {}

    def add(entry: Any, where: At) -> None:
        entry = expect_dict(entry, where)
        label_id = expect_int(entry.get("id"), where.key("id"))
        name = expect_str(entry.get("name"), where.key("name"))
        found[label_id] = (name, _hex_color(entry.get("color"), where.key("color")))
        for j, sub in enumerate(expect_list(entry.get("sublabels") or [], where.key("sublabels"))):
            add(sub, where.key("sublabels").index(j))

    for i, entry in enumerate(expect_list(value, at)):
        add(entry, at.index(i))
    labels: list[Label] = []
    index_of_name: dict[str, int] = {}
    index_of: dict[int, int] = {}
    for label_id in sorted(found):
        name, color = found[label_id]
        if name in index_of_name:  # make_colormap is a dict by name: the later colour wins
            labels[index_of_name[name]] = Label(name, color)
        else:
            index_of_name[name] = len(labels)
            labels.append(Label(name, color))
        index_of[label_id] = index_of_name[name]
    return labels, index_of


# --- frames ------------------------------------------------------------------------------


class _Frames:
    """Task frame → item id and size, and which frames are deleted."""

    def __init__(self, task: dict, meta: dict, root: At) -> None:
        t_at, m_at = root.key("task"), root.key("meta")
        mode = task.get("mode")
        if mode not in ("annotation", "interpolation"):
            raise t_at.key("mode").error(
                f"expected 'annotation' (images) or 'interpolation' (video), got {mode!r}: the "
                "mode decides how items are named")
        self.video = mode == "interpolation"
        self.size = expect_int(meta.get("size"), m_at.key("size"), 0)
        # CVAT's task export gives its items no subset (only a project export does), so a
        # task's ``subset`` field does not reach the list file: always ``default``.
        self.subset = "default"
        deleted = expect_list(meta.get("deleted_frames") or [], m_at.key("deleted_frames"))
        self.deleted = frozenset(
            expect_int(v, m_at.key("deleted_frames").index(i), 0) for i, v in enumerate(deleted))
        frames = expect_list(meta.get("frames"), m_at.key("frames"))
        sizes: list[tuple[str, int, int]] = []
        for i, f in enumerate(frames):
            f_at = m_at.key("frames").index(i)
            f = expect_dict(f, f_at)
            sizes.append((expect_str(f.get("name"), f_at.key("name")),
                          expect_int(f.get("height"), f_at.key("height"), 1),
                          expect_int(f.get("width"), f_at.key("width"), 1)))
        if self.video:
            if not sizes:
                raise m_at.key("frames").error("a video task's meta names no frame (no size)")
            self.start = expect_int(meta.get("start_frame") or 0, m_at.key("start_frame"), 0)
            ff = meta.get("frame_filter") or ""
            match = _STEP.match(expect_str(ff, m_at.key("frame_filter"))) if ff else None
            if ff and not match:
                raise m_at.key("frame_filter").error(f"expected 'step=N' or nothing, got {ff!r}")
            self.step = int(match.group(1)) if match else 1
            if self.step < 1:
                raise m_at.key("frame_filter").error("step must be at least 1")
        elif len(sizes) != self.size:
            raise m_at.key("frames").error(
                f"an image task lists one frame per image: meta.size is {self.size} but "
                f"meta.frames has {len(sizes)}")
        self._sizes = sizes

    def included(self, frame: int) -> bool:
        return 0 <= frame < self.size and frame not in self.deleted

    def item_id(self, frame: int) -> str:
        if self.video:
            return f"frame_{self.start + frame * self.step:06d}"
        return posixpath.splitext(self._sizes[frame][0])[0]

    def hw(self, frame: int) -> tuple[int, int]:
        _, h, w = self._sizes[0 if self.video else frame]
        return h, w


# --- shapes ------------------------------------------------------------------------------


def _key(shape: Any, at: At) -> Key:
    shape = expect_dict(shape, at)
    kind = expect_str(shape.get("type"), at.key("type"))
    if kind not in _KNOWN:
        raise at.key("type").error(f"unknown shape type {kind!r}; known: {', '.join(_KNOWN)}")
    if kind in ("rectangle", "ellipse"):
        points = expect_numbers(shape.get("points"), at.key("points"), count=4)
    elif kind == "polygon":
        points = expect_numbers(shape.get("points"), at.key("points"), multiple_of=2, minimum=6)
    elif kind == "mask":
        points = expect_numbers(shape.get("points"), at.key("points"), minimum=4)
    else:
        points = expect_numbers(shape.get("points") or [], at.key("points"))
    rotation = shape.get("rotation")
    rotation = 0.0 if rotation is None else float(expect_number(rotation, at.key("rotation")))
    z = shape.get("z_order")
    return Key(
        frame=expect_int(shape.get("frame"), at.key("frame"), 0),
        type=kind,
        points=tuple(float(v) for v in points),  # CVAT's serializer stores floats
        rotation=rotation,
        outside=bool(shape.get("outside", False)),
        z_order=0 if z is None else expect_int(z, at.key("z_order")),
        id=expect_int(shape["id"], at.key("id")) if shape.get("id") is not None else 0,
    )


def _label_index(value: Any, at: At, index_of: dict[int, int]) -> int:
    label_id = expect_int(value, at)
    if label_id not in index_of:
        raise at.error(f"label id {label_id} is not among the task's labels "
                       f"({', '.join(map(str, sorted(index_of)))})")
    return index_of[label_id]


def _track(entry: Any, at: At, index: int, index_of: dict[int, int]) -> Track:
    entry = expect_dict(entry, at)
    shapes = expect_list(entry.get("shapes"), at.key("shapes"))
    keys = [_key(s, at.key("shapes").index(j)) for j, s in enumerate(shapes)]
    group = entry.get("group")
    track = Track(
        index=index,
        id=expect_int(entry["id"], at.key("id")) if entry.get("id") is not None else index,
        label_id=expect_int(entry.get("label_id"), at.key("label_id")),
        group=0 if group is None else expect_int(group, at.key("group"), 0),
        frame=expect_int(entry.get("frame", min((k.frame for k in keys), default=0)),
                         at.key("frame"), 0),
        keys=keys,
    )
    _label_index(entry.get("label_id"), at.key("label_id"), index_of)
    elements = expect_list(entry.get("elements") or [], at.key("elements"))
    track.elements = [_track(e, at.key("elements").index(j), j, index_of)
                      for j, e in enumerate(elements)]
    return track


def _mask_bitmap(points: tuple[float, ...]) -> tuple[int, int, np.ndarray]:
    """CVAT's mask RLE → (left, top, bitmap) exactly as ``CVATRleToCOCORle.convert_mask``."""
    counts = [max(math.trunc(v), 0) for v in points[:-4]]
    left, top, right = (math.trunc(v) for v in points[-4:-1])
    width = right - left + 1
    if width < 1:
        raise ValueError(f"mask box right {right} is left of its left {left}")
    total = sum(counts)
    rows = -(-total // width) if total else 0
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, starting with background
    flat = np.zeros(rows * width, dtype=bool)
    flat[:total] = np.repeat(values, counts)
    return left, top, flat.reshape(rows, width)


def _mask_outside(points: tuple[float, ...], hw: tuple[int, int]) -> bool:
    counts = sum(max(math.trunc(v), 0) for v in points[:-4])
    left, top, right = (math.trunc(v) for v in points[-4:-1])
    width = max(right - left + 1, 1)
    rows = -(-counts // width)
    return left < 0 or top < 0 or right >= hw[1] or top + rows > hw[0]


def _shape(kind: str, points: tuple[float, ...] | list[float], rotation: float,
           where: str) -> Shape | None:
    if kind == "rectangle":
        x0, y0, x1, y1 = points
        return Box(x0, y0, x1 - x0, y1 - y0, rotation)
    if kind == "ellipse":
        cx, cy, right_x, top_y = points
        rx, ry = right_x - cx, cy - top_y
        return Ellipse(cx - rx, top_y, right_x, cy + ry, rotation, center=(cx, cy))
    if kind == "polygon":
        return Polygon(tuple(points))
    if kind == "mask":
        try:
            left, top, bitmap = _mask_bitmap(tuple(points))
        except ValueError as e:
            raise InputError(f"invalid CVAT mask: {e}", where) from None
        return BitmapMask(left, top, bitmap)
    if kind in _NON_MASK:
        return NonMask(kind)
    return None  # 2-D cuboid: CVAT's converter makes no annotation of it


class _Builder:
    """Builds item ``i`` (the ``i``-th exported frame) on demand; picklable."""

    def __init__(self, frames: _Frames, plain: dict[int, list[tuple[int, int, Key, int]]],
                 tags: dict[int, list[tuple[int, int]]], tracks: list[Track],
                 index_of: dict[int, int], source: str) -> None:
        self.frames = frames
        self.order = [f for f in range(frames.size) if f not in frames.deleted]
        self.plain = plain
        self.tags = tags
        self.tracks = tracks
        self.index_of = index_of
        self.source = source
        deleted = frames.deleted.__contains__
        self.timelines = [Timeline(t, frames.size, deleted) for t in tracks]
        self.elements = [[Timeline(e, frames.size, deleted, include_outside=True)
                          for e in t.elements] for t in tracks]

    def __call__(self, i: int) -> Item:
        frame = self.order[i]
        h, w = self.frames.hw(frame)
        anns: list[Annotation] = []
        for label, group in self.tags.get(frame, ()):
            anns.append(Annotation(NonMask("tag"), label, 0, group))
        for label, group, key, n in self.plain.get(frame, ()):
            where = f"{self.source}: annotations.shapes[{n}] (shape id {key.id}, frame {frame})"
            shape = _shape(key.type, key.points, key.rotation, where)
            if shape is not None:
                anns.append(Annotation(shape, label, key.z_order, group, key.id))
        for t, timeline in enumerate(self.timelines):
            hit = timeline.at(frame)
            if hit is None:
                continue
            k0, k1 = hit
            track = self.tracks[t]
            if track.elements and self._all_elements_outside(t, frame):
                continue
            if k1 is None or k0.type not in _PAINTED:
                points, rotation = k0.points, k0.rotation
            else:
                points, rotation = interpolate_points(k0, k1, frame)
                if k0.type == "polygon" and len(points) < 6:
                    raise TrackError(
                        f"{track.describe()}: CVAT's interpolation between the keyframes at "
                        f"frames {k0.frame} and {k1.frame} gives frame {frame} a polygon of "
                        f"{len(points) // 2} point(s); Datumaro refuses polygons of fewer than "
                        "3 points, so CVAT's export of this task fails", self.source)
            where = f"{self.source}: {track.describe()}, frame {frame}"
            shape = _shape(k0.type, points, rotation, where)
            if shape is not None:
                anns.append(Annotation(shape, self.index_of[track.label_id], k0.z_order,
                                       track.group, track.id))
        return Item(self.frames.item_id(frame), self.frames.subset, h, w, anns)

    def _all_elements_outside(self, t: int, frame: int) -> bool:
        states = [hit[0].outside for tl in self.elements[t] if (hit := tl.at(frame)) is not None]
        return bool(states) and all(states)


def _mask_warnings(builder: _Builder, warnings: list[str]) -> None:
    """Warn once per mask shape/track whose box leaves a frame it is painted on (clipped)."""
    frames = builder.frames
    for frame, entries in builder.plain.items():
        for _, _, key, n in entries:
            if key.type == "mask" and _mask_outside(key.points, frames.hw(frame)):
                warnings.append(
                    f"{builder.source}: annotations.shapes[{n}] (shape id {key.id}, frame "
                    f"{frame}): mask box lies partly outside the {frames.hw(frame)[1]}x"
                    f"{frames.hw(frame)[0]} frame; clipped to the frame (CVAT's export fails "
                    "or wraps such a mask around)")
    for track, timeline in zip(builder.tracks, builder.timelines):
        for key in timeline.keys:
            if key.type != "mask" or key.outside:
                continue
            # a visible mask keyframe is the track's last (else CVAT's export fails): it is
            # painted from its frame to the task's end
            bad = [f for f in range(key.frame, frames.size)
                   if frames.included(f) and _mask_outside(key.points, frames.hw(f))]
            if bad:
                warnings.append(
                    f"{builder.source}: {track.describe()}: mask box (keyframe at frame "
                    f"{key.frame}) lies partly outside the frame on frame(s) "
                    f"{_frame_list(bad)}; clipped to the frame (CVAT's export fails or wraps "
                    "such a mask around)")


def _frame_list(frames: list[int]) -> str:
    shown = ", ".join(map(str, frames[:10]))
    return shown + (f" and {len(frames) - 10} more" if len(frames) > 10 else "")


def bundle_to_dataset(bundle: dict, source: str) -> Dataset:
    """A bundle dict → ``Dataset``; ``source`` names the file in errors.

    Raises ``InputError`` for a malformed bundle and :class:`~.tracks.TrackError` (an
    ``InputError``) where CVAT's own export of the task fails, naming the track and frames.
    """
    root = At(source)
    bundle = expect_dict(bundle, root)
    for key in BUNDLE_KEYS:
        if key not in bundle:
            raise root.error(f"a CVAT task bundle needs {', '.join(BUNDLE_KEYS)}; {key!r} is "
                             "missing")
    task = expect_dict(bundle["task"], root.key("task"))
    meta = expect_dict(bundle["meta"], root.key("meta"))
    labels, index_of = _labels(bundle["labels"], root)
    frames = _Frames(task, meta, root)
    ann_at = root.key("annotations")
    anns = expect_dict(bundle["annotations"], ann_at)

    plain: dict[int, list[tuple[int, int, Key, int]]] = {}
    shapes_at = ann_at.key("shapes")
    for n, entry in enumerate(expect_list(anns.get("shapes") or [], shapes_at)):
        at = shapes_at.index(n)
        key = _key(entry, at)
        label = _label_index(entry.get("label_id"), at.key("label_id"), index_of)
        group = entry.get("group")
        group = 0 if group is None else expect_int(group, at.key("group"), 0)
        if frames.included(key.frame):
            plain.setdefault(key.frame, []).append((label, group, key, n))  # type: ignore[arg-type]
    tags: dict[int, list[tuple[int, int]]] = {}
    tags_at = ann_at.key("tags")
    for n, entry in enumerate(expect_list(anns.get("tags") or [], tags_at)):
        at = tags_at.index(n)
        entry = expect_dict(entry, at)
        frame = expect_int(entry.get("frame"), at.key("frame"), 0)
        label = _label_index(entry.get("label_id"), at.key("label_id"), index_of)
        group = entry.get("group")
        if frames.included(frame):
            tags.setdefault(frame, []).append(
                (label, 0 if group is None else expect_int(group, at.key("group"), 0)))
    tracks_at = ann_at.key("tracks")
    tracks = [_track(t, tracks_at.index(n), n, index_of)
              for n, t in enumerate(expect_list(anns.get("tracks") or [], tracks_at))]
    try:
        builder = _Builder(frames, plain, tags, tracks, index_of, source)
    except TrackError as e:
        e.where = f"{source}: {e.where}" if e.where else source
        raise
    warnings: list[str] = []
    _mask_warnings(builder, warnings)
    # imported here: streamed imports detect, which imports this package
    from smaskd.annotations.rebuilt import RebuiltItems

    items = RebuiltItems(len(builder.order), builder, builder)
    return Dataset(labels, items, "cvat", warnings)  # type: ignore[arg-type]
