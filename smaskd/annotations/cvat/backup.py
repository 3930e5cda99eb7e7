"""A CVAT task backup (``GET /api/tasks/{id}/backup``) → a task bundle, as CVAT restores it.

A backup is a zip holding (CVAT's ``cvat/apps/engine/backup.py``, version ``1.0``)::

    task.json            name, subset, labels by name (sublabels nested, attributes by name),
                         data (start_frame, stop_frame, frame_filter, deleted_frames, ...),
                         jobs in job order: start_frame, stop_frame, type, status
    annotations.json     a list, one entry per job of ``jobs``: tags, shapes, tracks, labels
                         and attributes by name, frames numbered over the whole task
    data/manifest.jsonl  CVAT's media manifest: for images one line per image (name without
                         extension, extension, width, height), for a video its
                         ``properties`` (name, resolution = [width, height], length)
    data/...             the media: never read here, let alone decoded or extracted

What comes out is the bundle :mod:`.bundle` reads (``task``, ``meta``, ``labels``,
``annotations``), equal to what CVAT's REST API would return for the task restored from the
backup. Restoring decides three things the backup does not store:

* the **overlap**: CVAT derives it from the annotation jobs' frame ranges (ground-truth jobs
  dropped first; a job without ``type`` is an annotation job): stop of the first − start of
  the second + 1, and 0 for a single job. So a single-job video task restores with overlap 0
  although the live task had ``min(5, size // 2)``, and its merge keeps the job's order;
* **ids**: labels and attributes are created again in task.json's order (a label, its
  sublabels, then its attributes), so colours by id order are task.json's order;
* the task-level **annotations**: each annotation job's entry is stored and read back
  (:mod:`.restore`) and the jobs are merged as CVAT merges them (:mod:`.merge`).

The zip is vetted like a mask zip (:class:`~smaskd.safezip.SafeZip`) before anything is read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from smaskd.annotations.cvat.bundle import bundle_to_dataset
from smaskd.annotations.cvat.merge import merge_jobs
from smaskd.annotations.cvat.restore import ORIGIN, Ids, LabelIds, restore_job
from smaskd.annotations.cvat.tracks import TrackError
from smaskd.annotations.jsonload import (
    At,
    expect_dict,
    expect_int,
    expect_list,
    expect_str,
    load_json_bytes,
)
from smaskd.errors import InputError
from smaskd.model import Dataset
from smaskd.safezip import SafeZip

__all__ = ["MANIFEST", "read_backup", "read_backup_dataset"]

TASK_JSON = "task.json"
ANNOTATIONS_JSON = "annotations.json"
MANIFEST = "data/manifest.jsonl"
#: Backup versions CVAT's importer accepts (``Version`` in backup.py).
VERSIONS = ("1.0",)
#: Job types whose annotations are not the task's (CVAT merges annotation jobs only).
SKIPPED_JOBS = ("ground_truth", "consensus_replica")
_STEP = re.compile(r"step\s*=\s*([1-9]\d*)")  # Data.get_frame_step


def read_backup_dataset(path: Path, source: str | None = None) -> Dataset:
    """The restored task as a :class:`~smaskd.model.Dataset` (its export is CVAT's).

    A track CVAT cannot expand is named by :mod:`.bundle` by its (restored) id; a note
    says where the backup holds it.
    """
    source = source or Path(path).name
    origins: dict[int, str] = {}
    try:
        return bundle_to_dataset(read_backup(path, source, origins), source)
    except TrackError as e:
        found = re.search(r"track id (\d+)", e.message)
        if found and int(found.group(1)) in origins:
            e.add_note(f"track id {found.group(1)} is {origins[int(found.group(1))]}")
        raise


def read_backup(path: Path, source: str | None = None,
                origins: dict[int, str] | None = None) -> dict:
    """The bundle of the task a backup restores to; ``source`` names the file in errors.

    ``origins``, if given, receives each track's id → its place in the backup.
    """
    source = source or Path(path).name
    with SafeZip(path) as zf:
        names = set(zf.iter_names())
        for required in (TASK_JSON, ANNOTATIONS_JSON):
            if required not in names:
                raise InputError(f"not a CVAT task backup: it has no {required}", source)
        task = expect_dict(load_json_bytes(zf.read(TASK_JSON), f"{source}: {TASK_JSON}"),
                           At(f"{source}: {TASK_JSON}"))
        jobs_doc = load_json_bytes(zf.read(ANNOTATIONS_JSON), f"{source}: {ANNOTATIONS_JSON}")
        if MANIFEST not in names:
            raise InputError(_no_manifest(task, names), source)
        manifest = zf.read(MANIFEST)
    return backup_to_bundle(task, jobs_doc, manifest, source, origins)


def backup_to_bundle(task: dict, jobs_doc: Any, manifest: bytes, source: str,
                     origins: dict[int, str] | None = None) -> dict:
    """The parts of a backup, already read, → the bundle (``origins`` as in read_backup)."""
    at = At(f"{source}: {TASK_JSON}")
    version = task.get("version")
    if version not in VERSIONS:
        raise InputError(f"backup version {version!r} is not one CVAT restores (expected "
                         f"{' or '.join(VERSIONS)})", str(at.key("version")))
    data = expect_dict(task.get("data"), at.key("data"))
    labels, ids = _labels(expect_list(task.get("labels"), at.key("labels")), at.key("labels"))
    media = _read_manifest(manifest, f"{source}: {MANIFEST}")
    meta = _meta(data, media, at.key("data"), f"{source}: {MANIFEST}")
    jobs = _annotation_jobs(task, jobs_doc, meta["size"], source)
    segment_size, overlap = _segments(jobs, meta["size"], bool(data.get("custom_segments")), at)
    db_ids = Ids()
    job_at = At(source, ANNOTATIONS_JSON)  # "b.zip: annotations.json[1].tracks[0]..."
    restored = [(start, restore_job(doc, ids, db_ids, job_at.index(n)))
                for n, start, _, doc in jobs]
    annotations = merge_jobs(restored, overlap)
    names = {x["id"]: x["name"] for top in labels for x in (top, *top["sublabels"])}
    _drop_origins(annotations["tracks"], names, {} if origins is None else origins)
    return {
        "task": {
            "name": task.get("name", ""),
            "mode": "interpolation" if media["type"] == "video" else "annotation",
            "subset": task.get("subset") or "",
            "dimension": "2d",
            "overlap": overlap,
            "segment_size": segment_size,
            "size": meta["size"],
        },
        "meta": meta,
        "labels": labels,
        "annotations": annotations,
    }


def _drop_origins(tracks: list[dict], names: dict[int, str], origins: dict[int, str]) -> None:
    for track in tracks:
        origin = track.pop(ORIGIN, None)
        if origin is not None:
            origins.setdefault(track["id"], f"{origin} (label {names[track['label_id']]!r})")
        _drop_origins(track.get("elements", []), names, origins)


def _no_manifest(task: dict, names: set[str]) -> str:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    media = [n for n in names if n.startswith("data/")]
    video = data.get("chunk_type") == "video" or (
        len(media) == 1 and not re.search(r"\.(jpe?g|png|bmp|tiff?|webp|gif)$", media[0], re.I))
    what = ("the frame size of a video task" if video
            else "the names and sizes of an image task's frames")
    return (f"this CVAT task backup has no {MANIFEST}, and {what} is recorded only there (or "
            "inside the media, which smaskd never decodes); export the backup again from a "
            "CVAT that writes the manifest (every CVAT since 2.0 does, for tasks on its own "
            "storage)")


# -- labels -------------------------------------------------------------------------------

def _labels(specs: list, at: At) -> tuple[list[dict], LabelIds]:
    """task.json's labels → the REST label list, ids as a restore creates them."""
    ids = LabelIds()
    label_ids, attr_ids = iter(range(1, 1 << 62)), iter(range(1, 1 << 62))
    seen: set[tuple[str, str]] = set()

    def create(spec: Any, parent: str, where: At) -> dict:
        spec = expect_dict(spec, where)
        name = expect_str(spec.get("name"), where.key("name"))
        if (parent, name) in seen:
            raise InputError(f"label {name!r} is declared twice", str(where.key("name")))
        seen.add((parent, name))
        label = {"id": next(label_ids), "name": name, "color": spec.get("color", ""),
                 "type": spec.get("type", "any")}
        ids.add_label(parent, name, label["id"])
        subs = expect_list(spec.get("sublabels", []), where.key("sublabels"))
        label["sublabels"] = [create(s, name, where.key("sublabels").index(i))
                              for i, s in enumerate(subs)]
        label["attributes"] = []
        for i, attr in enumerate(expect_list(spec.get("attributes", []),
                                             where.key("attributes"))):
            a_at = where.key("attributes").index(i)
            attr = expect_dict(attr, a_at)
            attribute = {"id": next(attr_ids),
                         "name": expect_str(attr.get("name"), a_at.key("name")),
                         "mutable": bool(attr.get("mutable", False)),
                         "input_type": attr.get("input_type", "text"),
                         "default_value": str(attr.get("default_value", "")),
                         "values": attr.get("values", [])}
            ids.add_attribute(parent, name, attribute["name"], attribute["id"],
                              attribute["mutable"], attribute["default_value"])
            label["attributes"].append(attribute)
        if parent:
            label["has_parent"] = True
        else:
            label.update(svg=spec.get("svg", ""), parent_id=None, has_parent=False)
        return label

    return [create(s, "", at.index(i)) for i, s in enumerate(specs)], ids


# -- frames -------------------------------------------------------------------------------

def _read_manifest(raw: bytes, source: str) -> dict:
    """``{"type": "images"|"video", "images": [...]}`` or the video's ``properties``."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 ({e.reason} at byte {e.start})", source) from None
    kind = None
    props: dict = {}
    images = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry = load_json_bytes(line.encode(), f"{source} line {n}")
        where = At(f"{source} line {n}")
        entry = expect_dict(entry, where)
        if "type" in entry and kind is None:
            kind = entry["type"]
        elif "properties" in entry:
            props = expect_dict(entry["properties"], where.key("properties"))
        elif "version" in entry and n <= 2:
            continue
        elif kind == "images":
            name = expect_str(entry.get("name"), where.key("name"))
            images.append({
                "name": name + str(entry.get("extension", "")),
                "width": expect_int(entry.get("width"), where.key("width"), minimum=1),
                "height": expect_int(entry.get("height"), where.key("height"), minimum=1),
            })
    if kind not in ("images", "video"):
        raise InputError(f"the manifest's type is {kind!r}; expected 'images' or 'video' "
                         "(a 2D task's manifest)", source)
    if kind == "video":
        where = At(source).key("properties")
        resolution = expect_list(props.get("resolution"), where.key("resolution"))
        if len(resolution) != 2:
            raise InputError("expected [width, height]", str(where.key("resolution")))
        return {"type": "video", "name": expect_str(props.get("name"), where.key("name")),
                "width": expect_int(resolution[0], where.key("resolution").index(0), minimum=1),
                "height": expect_int(resolution[1], where.key("resolution").index(1), minimum=1),
                "length": props.get("length")}
    return {"type": "images", "images": images}


def _meta(data: dict, media: dict, at: At, manifest: str) -> dict:
    """The ``data/meta`` body: CVAT's frame range, the frames from the manifest."""
    start = expect_int(data.get("start_frame", 0), at.key("start_frame"), minimum=0)
    frame_filter = data.get("frame_filter") or ""
    if not isinstance(frame_filter, str):
        raise InputError("expected a string like 'step=3'", str(at.key("frame_filter")))
    match = _STEP.search(frame_filter)
    step = int(match.group(1)) if match else 1
    if media["type"] == "video":
        stop = expect_int(data.get("stop_frame"), at.key("stop_frame"), minimum=start)
        frames = [{"name": media["name"], "width": media["width"], "height": media["height"]}]
        size = len(range(start, stop + 1, step))
    else:
        images = media["images"]
        stop = expect_int(data.get("stop_frame", start + max(len(images) - 1, 0) * step),
                          at.key("stop_frame"), minimum=start)
        size = len(range(start, stop + 1, step))
        if len(images) != size:
            if len(images) <= stop:
                raise InputError(
                    f"the manifest lists {len(images)} images but task.json's data (frames "
                    f"{start}..{stop}, step {step}) needs {size}", manifest)
            images = images[start:stop + 1:step]
        frames = images
    deleted = expect_list(data.get("deleted_frames", []), at.key("deleted_frames"))
    for i, frame in enumerate(deleted):
        expect_int(frame, at.key("deleted_frames").index(i), minimum=0, maximum=size - 1)
    return {"size": size, "start_frame": start, "stop_frame": stop,
            "frame_filter": frame_filter, "frames": frames, "deleted_frames": list(deleted)}


# -- jobs ---------------------------------------------------------------------------------

def _annotation_jobs(task: dict, jobs_doc: Any, size: int,
                     source: str) -> list[tuple[int, int, int, Any]]:
    """``(index, start_frame, stop_frame, annotations)`` of the annotation jobs, in order.

    ``annotations.json`` has one entry per job of task.json's ``jobs``, in the same order
    (both are the task's jobs by id); ground-truth jobs keep their annotations to themselves.
    """
    at = At(f"{source}: {TASK_JSON}").key("jobs")
    jobs = expect_list(task.get("jobs"), at)
    entries = expect_list(jobs_doc, At(f"{source}: {ANNOTATIONS_JSON}"))
    if len(entries) != len(jobs):
        raise InputError(f"annotations.json has {len(entries)} entries but task.json lists "
                         f"{len(jobs)} jobs; a backup has one entry per job", source)
    out = []
    for n, job in enumerate(jobs):
        job = expect_dict(job, at.index(n))
        kind = job.get("type", "annotation")
        if kind in SKIPPED_JOBS:
            continue
        if kind != "annotation":
            raise InputError(f"unknown job type {kind!r}; expected annotation or "
                             f"{' or '.join(SKIPPED_JOBS)}", str(at.index(n).key("type")))
        start = expect_int(job.get("start_frame"), at.index(n).key("start_frame"), minimum=0,
                           maximum=max(size - 1, 0))
        stop = expect_int(job.get("stop_frame"), at.index(n).key("stop_frame"), minimum=start,
                          maximum=max(size - 1, 0))
        out.append((n, start, stop, entries[n]))
    if not out:
        raise InputError("task.json lists no annotation job", str(at))
    return out


def _segments(jobs: list[tuple[int, int, int, Any]], size: int, custom: bool,
              at: At) -> tuple[int, int]:
    """(segment size, overlap) as a restore derives them (``_calculate_segment_size``).

    CVAT then cuts the task into jobs again from these two numbers; a backup whose job
    ranges are not that cut would have its annotations put on other frames, so it is refused.
    """
    ranges = [(start, stop) for _, start, stop, _ in jobs]
    segment_size = ranges[0][1] - ranges[0][0] + 1
    if custom:
        return segment_size, 0
    overlap = 0 if len(ranges) == 1 else ranges[0][1] - ranges[1][0] + 1
    if overlap < 0:
        raise InputError(
            f"job 2 starts at frame {ranges[1][0]} but job 1 ends at frame {ranges[0][1]}: "
            f"frames {ranges[0][1] + 1}..{ranges[1][0] - 1} belong to no job, and CVAT "
            "cannot restore a task whose jobs leave a gap", str(at.key("jobs").index(jobs[1][0])))
    overlap = min(overlap, min(segment_size, size) // 2)  # _create_thread clamps it
    step = segment_size - overlap
    for k, (start, stop) in enumerate(ranges):
        if start != k * step or stop != min(start + segment_size - 1, size - 1):
            raise InputError(
                f"job frames {start}..{stop} are not where CVAT puts job {k + 1} of a task "
                f"of {size} frames with segment size {segment_size} and overlap {overlap} "
                "(derived from the first two jobs), so CVAT would not restore this backup's "
                "annotations to these frames", str(at.key("jobs").index(jobs[k][0])))
    return segment_size, overlap

