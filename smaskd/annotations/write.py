"""``Dataset`` → annotation JSON bytes: the one entry point that picks a writer by format.

It stands above both writers (:mod:`~smaskd.annotations.coco_writer`,
:mod:`~smaskd.annotations.datumaro_writer`) and the pieces they share
(:mod:`~smaskd.annotations.writers`), so none of them imports another back: the import graph
stays a tree that ``lint-imports`` checks.
"""

from __future__ import annotations

from typing import BinaryIO

from smaskd.annotations.coco_writer import coco_document
from smaskd.annotations.datumaro_writer import datumaro_document
from smaskd.annotations.writers import WriteStats, dump_json
from smaskd.errors import InputError
from smaskd.model import Dataset

__all__ = ["FORMATS", "write_annotations"]

FORMATS = ("coco", "datumaro")


def write_annotations(
    dataset: Dataset, out: BinaryIO, fmt: str = "coco", polygons: bool = False
) -> WriteStats:
    """Write ``dataset`` as COCO instances (default) or Datumaro JSON to ``out`` (binary)."""
    if fmt == "coco":
        doc, stats = coco_document(dataset, polygons)
    elif fmt == "datumaro":
        doc, stats = datumaro_document(dataset, polygons)
    else:
        raise InputError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    dump_json(doc, out)
    return stats.finish()
