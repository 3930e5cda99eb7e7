"""CVAT's own artifacts → the model: task bundles (REST payloads), and (i15b) task backups.

Every CVAT source is first brought to one **bundle**: a dict with exactly the four bodies of
CVAT's REST responses for one task (``../shared/corpus/tracks/README.md`` documents them)::

    {"task":        GET /api/tasks/{id}            (mode, name, subset, overlap, segment_size)
     "meta":        GET /api/tasks/{id}/data/meta  (size, start_frame, stop_frame, frame_filter,
                                                    deleted_frames, frames[{name, width, height}])
     "labels":      GET /api/labels?task_id={id}   (the ``results`` list or the whole page)
     "annotations": GET /api/tasks/{id}/annotations  (version, tags, shapes, tracks), already
                                                    merged across jobs as CVAT merges them}

:func:`bundle_to_dataset` turns a bundle into a :class:`~smaskd.model.Dataset` (tracks
expanded exactly as CVAT's server expands them for export). A reader for another CVAT
artifact (a task backup) only has to build that dict; naming, colours, track expansion and
CVAT's export failures then come from one place.

Modules: ``bundle`` (the bundle → Dataset), ``tracks`` (CVAT's track interpolation).
"""

from smaskd.annotations.cvat.bundle import bundle_to_dataset, is_bundle

__all__ = ["bundle_to_dataset", "is_bundle"]
