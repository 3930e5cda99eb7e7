"""Annotation files read for an export, so that memory does not grow with the items.

An export touches each item twice (plan, render) and never needs two at once. Datumaro and
COCO files are read by :mod:`smaskd.annotations.streamed`: scanned in chunks, each item
read back from the file when asked for; what stays is a few offsets per item. Everything
else (LabelMe, a COCO results list, or a file the streamed reader is unsure of) is read
whole by :func:`~smaskd.annotations.detect.read_annotation_file` and its items kept
pickled (:class:`CompactItems`: about the size of their JSON, ~6x less than live objects).

Results and errors are always those of ``read_annotation_file``: whenever the streamed
read meets anything it does not expect, that function reads the file and reports the
problem in its usual words.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path, PurePath

from smaskd.annotations.detect import read_annotation_file
from smaskd.annotations.jsonload import DEFAULT_MAX_BYTES
from smaskd.annotations.streamed import Fallback, RebuiltItems, read_streamed
from smaskd.errors import InputError
from smaskd.geometry.limits import LimitError
from smaskd.model import Dataset, Item

__all__ = ["CompactItems", "read_annotations_compact"]


class CompactItems(RebuiltItems):
    """Items stored pickled; every access unpickles a fresh ``Item``."""

    def __init__(self, items: Iterable[Item] = ()) -> None:
        blobs = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        super().__init__(len(blobs), lambda i: pickle.loads(blobs[i]), blobs)


def read_annotations_compact(
    path: Path, fmt: str = "auto", *, name: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
    max_instances: int | None = None,
) -> Dataset:
    """:func:`read_annotation_file`, its items rebuilt per access (:class:`RebuiltItems`).

    ``max_instances``: a COCO image or Datumaro item with more annotations is refused
    (``LimitError``) as soon as the streamed read has counted that many, before the rest is
    checked: an image with 10⁶ shapes is refused in about a second, not minutes.

    The items of a Datumaro file are checked by the first pass over them (the export's
    plan) rather than here, so an error in an item is raised then: the same error.
    """
    path = Path(path)
    source = PurePath(name or path).name or str(name or path)
    if fmt in ("auto", "datumaro", "coco"):
        try:
            return read_streamed(
                path, fmt, name or path, source, max_bytes,
                lambda: read_annotation_file(path, fmt, name=name, max_bytes=max_bytes),
                max_instances)
        except LimitError:
            raise  # the file is fine, only too big: the whole-file reader would say nothing new
        except (Fallback, InputError, OSError):
            pass  # the whole-file read below reports the problem exactly as it always has
    dataset = read_annotation_file(path, fmt, name=name, max_bytes=max_bytes)
    if isinstance(dataset.items, RebuiltItems):
        return dataset  # already built per access (a CVAT bundle expands tracks per frame)
    dataset.items = CompactItems(dataset.items)  # type: ignore[assignment]
    return dataset
