"""One job's annotations from a task backup, as CVAT holds them after restoring the backup.

A backup names labels and attributes by name; restoring it creates the labels again, then
stores each job's annotations (``put_job_data``) and, for every later read, loads them back
from the database (``JobAnnotation.init_from_db``). Both steps change the data, and the job
merge (:mod:`.merge`) sees only the result, so they are replayed here
(``cvat/apps/dataset_manager/task.py``, CVAT 2.14):

* names → ids: a label by its name, a skeleton's sublabel by its parent's name and its own,
  an attribute by its name within its label (:class:`LabelIds`);
* storing a track makes its frame agree with its first keyframe: a track that starts before
  it gets an outside copy of that keyframe at the track's frame (a skeleton's first keyframe
  is moved there instead); a keyframe before the track's frame moves the track's frame; a
  skeleton's element tracks start no later than the skeleton, and the skeleton no later than
  its earliest element;
* every track carries, under :data:`ORIGIN`, its place in the backup, until the reader drops
  it from the merged result;
* reading back: tags and shapes in frame order, tracks in the order stored, each track's
  keyframes in frame order (ties keep the stored order); skeleton shapes hold no points;
  every object gets the default of each attribute it lacks (a track keyframe: the previous
  keyframe's value, the first one the default); ids are numbered in storing order.

The input is validated on the way (types, known labels), each error naming its place
(``annotations.json[1].tracks[3].shapes[0].frame``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from smaskd.annotations.jsonload import (
    At,
    expect_dict,
    expect_int,
    expect_list,
    expect_numbers,
    expect_str,
)
from smaskd.errors import InputError

__all__ = ["ORIGIN", "Ids", "LabelIds", "restore_job"]

Obj = dict[str, Any]
#: Key of a restored track naming where the backup holds it (``b.zip:
#: annotations.json[1].tracks[0]``), for messages about merged tracks; the reader drops it.
ORIGIN = "_origin"

SHAPE_TYPES = frozenset({"rectangle", "polygon", "polyline", "points", "ellipse", "cuboid",
                         "mask", "skeleton"})


@dataclass(slots=True)
class _Label:
    id: int
    attributes: dict[str, int] = field(default_factory=dict)
    #: spec id → (mutable, default value), in creation order
    specs: dict[int, tuple[bool, str]] = field(default_factory=dict)


class LabelIds:
    """Label and attribute ids of a restored task, keyed by (parent name, name)."""

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], _Label] = {}
        self._by_id: dict[int, _Label] = {}

    def add_label(self, parent: str, name: str, label_id: int) -> None:
        label = _Label(label_id)
        self._labels[(parent, name)] = label
        self._by_id[label_id] = label

    def add_attribute(self, parent: str, name: str, attr: str, spec_id: int, mutable: bool,
                      default: str) -> None:
        label = self._labels[(parent, name)]
        label.attributes[attr] = spec_id
        label.specs[spec_id] = (mutable, default)

    def label(self, parent: str, name: str, at: At) -> int:
        found = self._labels.get((parent, name))
        if found is None:
            whose = f" (a sublabel of {parent!r})" if parent else ""
            raise InputError(f"label {name!r}{whose} is not one of the task's labels in "
                             "task.json", str(at))
        return found.id

    def spec(self, label_id: int, attr: str, at: At) -> int:
        spec = self._by_id[label_id].attributes.get(attr)
        if spec is None:
            raise InputError(f"attribute {attr!r} is not an attribute of this object's label "
                             "in task.json", str(at))
        return spec

    def defaults(self, label_id: int, mutable: bool | None) -> Iterator[tuple[int, str]]:
        """(spec id, default) of the label's attributes: all, or the (im)mutable ones."""
        for spec_id, (is_mutable, default) in self._by_id[label_id].specs.items():
            if mutable is None or is_mutable == mutable:
                yield spec_id, default


class Ids:
    """Database ids, one sequence per table, shared by all jobs of a task."""

    def __init__(self) -> None:
        self.tag = count(1)
        self.shape = count(1)
        self.track = count(1)
        self.tracked_shape = count(1)


def restore_job(doc: Any, labels: LabelIds, ids: Ids, at: At) -> dict:
    """A backup's job annotations → what CVAT's ``init_from_db`` returns for the job."""
    doc = expect_dict(doc, at)
    tags = [_tag(t, labels, at.key("tags").index(i))
            for i, t in enumerate(_list(doc, "tags", at))]
    shapes = [_shape(s, labels, "", at.key("shapes").index(i))
              for i, s in enumerate(_list(doc, "shapes", at))]
    tracks = [_track(t, labels, "", at.key("tracks").index(i))
              for i, t in enumerate(_list(doc, "tracks", at))]
    version = doc.get("version", 0)
    return {
        "version": version if isinstance(version, int) else 0,
        "tags": _stored_tags(tags, labels, ids),
        "shapes": _stored_shapes(shapes, labels, ids),
        "tracks": _stored_tracks(tracks, labels, ids),
    }


# -- reading and validating ---------------------------------------------------------------

def _list(doc: Obj, key: str, at: At) -> list:
    return expect_list(doc.get(key, []), at.key(key))


def _label(obj: Obj, labels: LabelIds, parent: str, at: At) -> tuple[str, int]:
    name = expect_str(obj.get("label"), at.key("label"))
    return name, labels.label(parent, name, at.key("label"))


def _attributes(obj: Obj, labels: LabelIds, label_id: int, at: At) -> list[Obj]:
    out = []
    for i, attr in enumerate(expect_list(obj.get("attributes", []), at.key("attributes"))):
        where = at.key("attributes").index(i)
        attr = expect_dict(attr, where)
        name = expect_str(attr.get("name"), where.key("name"))
        value = attr.get("value", "")
        out.append({"spec_id": labels.spec(label_id, name, where.key("name")),
                    "value": value if isinstance(value, str) else str(value)})
    return out


def _common(obj: Obj, at: At) -> Obj:
    group = obj.get("group")
    return {
        "frame": expect_int(obj.get("frame"), at.key("frame"), minimum=0),
        "group": 0 if group is None else expect_int(group, at.key("group"), minimum=0),
        "source": obj.get("source", "manual"),
    }


def _geometry(obj: Obj, at: At) -> Obj:
    kind = expect_str(obj.get("type"), at.key("type"))
    if kind not in SHAPE_TYPES:
        raise InputError(f"unknown shape type {kind!r}; expected one of "
                         f"{', '.join(sorted(SHAPE_TYPES))}", str(at.key("type")))
    points = expect_numbers(obj.get("points", []), at.key("points"))
    rotation = obj.get("rotation", 0.0)
    z_order = obj.get("z_order", 0)
    return {
        "type": kind,
        "occluded": bool(obj.get("occluded", False)),
        "outside": bool(obj.get("outside", False)),
        "z_order": expect_int(z_order, at.key("z_order")),
        "rotation": float(expect_numbers([rotation], at.key("rotation"))[0]),
        "points": [float(p) for p in points],
    }


def _tag(obj: Any, labels: LabelIds, at: At) -> Obj:
    obj = expect_dict(obj, at)
    _, label_id = _label(obj, labels, "", at)
    return {"label_id": label_id, **_common(obj, at),
            "attributes": _attributes(obj, labels, label_id, at)}


def _shape(obj: Any, labels: LabelIds, parent: str, at: At) -> Obj:
    obj = expect_dict(obj, at)
    name, label_id = _label(obj, labels, parent, at)
    shape = {"label_id": label_id, **_common(obj, at), **_geometry(obj, at),
             "attributes": _attributes(obj, labels, label_id, at)}
    shape["elements"] = [_shape(e, labels, name, at.key("elements").index(i))
                         for i, e in enumerate(_list(obj, "elements", at))]
    return shape


def _track(obj: Any, labels: LabelIds, parent: str, at: At) -> Obj:
    obj = expect_dict(obj, at)
    name, label_id = _label(obj, labels, parent, at)
    track = {"label_id": label_id, **_common(obj, at),
             "attributes": _attributes(obj, labels, label_id, at),
             ORIGIN: str(at)}
    shapes = []
    for i, shape in enumerate(_list(obj, "shapes", at)):
        where = at.key("shapes").index(i)
        shape = expect_dict(shape, where)
        shapes.append({"frame": expect_int(shape.get("frame"), where.key("frame"), minimum=0),
                       **_geometry(shape, where),
                       "attributes": _attributes(shape, labels, label_id, where)})
    track["shapes"] = shapes
    track["elements"] = [_track(e, labels, name, at.key("elements").index(i))
                         for i, e in enumerate(_list(obj, "elements", at))]
    return track


# -- what storing and reading back does ----------------------------------------------------

def _with_defaults(attributes: list[Obj], defaults: Any) -> list[Obj]:
    have = {a["spec_id"] for a in attributes}
    return attributes + [{"spec_id": s, "value": v} for s, v in defaults if s not in have]


def _by_frame(objects: list[Obj]) -> list[Obj]:
    return sorted(objects, key=lambda o: o["frame"])  # stable: ties keep the stored order


def _stored_tags(tags: list[Obj], labels: LabelIds, ids: Ids) -> list[Obj]:
    for tag in tags:
        tag["id"] = next(ids.tag)
        tag["attributes"] = _with_defaults(tag["attributes"], labels.defaults(tag["label_id"], None))
    return _by_frame(tags)


def _stored_shapes(shapes: list[Obj], labels: LabelIds, ids: Ids) -> list[Obj]:
    """Shapes and their elements are one table, read back in frame order (ties: by id)."""
    elements = [e for s in shapes for e in s["elements"]]
    for shape in [*shapes, *elements]:  # a level is stored whole before its elements
        shape["id"] = next(ids.shape)
    rows = _by_frame([*shapes, *elements])
    for shape in rows:
        shape["attributes"] = _with_defaults(shape["attributes"],
                                             labels.defaults(shape["label_id"], None))
        if shape["type"] == "skeleton":
            shape["points"] = []
    for element in elements:
        del element["elements"]
    position = {id(row): n for n, row in enumerate(rows)}
    for shape in shapes:
        shape["elements"].sort(key=lambda e: position[id(e)])
    return sorted(shapes, key=lambda s: position[id(s)])


def _stored_tracks(tracks: list[Obj], labels: LabelIds, ids: Ids) -> list[Obj]:
    _sync_frames(tracks, None)
    tracks = [t for t in tracks if t["shapes"]]
    _number(tracks, ids)
    for track in tracks:
        _read_back(track, labels)
        for element in track["elements"]:
            _read_back(element, labels)
            del element["elements"]
    return tracks


def _number(tracks: list[Obj], ids: Ids) -> None:
    """Ids in storing order: a level's tracks, their keyframes, then each one's elements."""
    for track in tracks:
        track["id"] = next(ids.track)
    for track in tracks:
        for shape in track["shapes"]:
            shape["id"] = next(ids.tracked_shape)
    for track in tracks:
        _sync_frames(track["elements"], track)
        track["elements"] = [e for e in track["elements"] if e["shapes"]]
        _number(track["elements"], ids)


def _read_back(track: Obj, labels: LabelIds) -> None:
    track["shapes"] = _by_frame(track["shapes"])
    track["attributes"] = _with_defaults(track["attributes"],
                                         labels.defaults(track["label_id"], False))
    previous = list(labels.defaults(track["label_id"], True))
    for shape in track["shapes"]:  # a keyframe lacking a value has the previous one's
        shape["attributes"] = _with_defaults(shape["attributes"], previous)
        if shape["type"] == "skeleton":
            shape["points"] = []
        previous = [(a["spec_id"], a["value"]) for a in shape["attributes"]]


def _sync_frames(tracks: list[Obj], parent: Obj | None) -> None:
    """``JobAnnotation._sync_frames``: a track's frame and its first keyframe's agree."""
    if not tracks:
        return
    min_frame = tracks[0]["frame"]
    for track in tracks:
        if parent is not None and parent["frame"] < track["frame"]:
            track["frame"] = parent["frame"]
        _correct_first_keyframe(track)
        min_frame = min(min_frame, track["frame"])
    if parent is None or min_frame >= parent["frame"]:
        return
    # the parent may not start after any element: CVAT moves it and its first stored keyframe
    parent["frame"] = min_frame
    if parent["shapes"]:
        parent["shapes"][0]["frame"] = min_frame
    for track in tracks:
        if parent["frame"] < track["frame"]:
            track["frame"] = parent["frame"]
            _correct_first_keyframe(track)


def _correct_first_keyframe(track: Obj) -> None:
    if not track["shapes"]:
        return
    first = min(track["shapes"], key=lambda s: s["frame"])  # the first of equal frames
    if track["frame"] < first["frame"]:
        if first["type"] == "skeleton":
            first["frame"] = track["frame"]
        else:
            missing = {**first, "attributes": [dict(a) for a in first["attributes"]],
                       "points": list(first["points"]), "frame": track["frame"],
                       "outside": True}
            missing.pop("id", None)
            track["shapes"].append(missing)
    elif first["frame"] < track["frame"]:
        track["frame"] = first["frame"]
