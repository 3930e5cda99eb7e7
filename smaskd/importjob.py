"""A mask zip → annotation JSON, item by item, over one or more processes.

``load_mask_zip`` + ``write_annotations`` do the same in two steps and keep every decoded
mask of the dataset in memory; this job keeps only what goes into the JSON. The process
holding the zip reads each item's PNG pair and hands it out (:mod:`smaskd.smask.parallel`);
decoding, instance extraction and the item's JSON entries (RLE or polygons) happen wherever
the item lands, and the document is assembled in item order, so it is byte for byte the one
``write_annotations(load_mask_zip(...))`` writes, for any number of processes.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from smaskd.annotations.coco_writer import (
    coco_assemble,
    coco_categories,
    coco_image,
    coco_item_annotations,
    max_instance_id,
)
from smaskd.annotations.datumaro_writer import datumaro_assemble, datumaro_item
from smaskd.annotations.write import FORMATS
from smaskd.annotations.writers import WriteStats, dumps
from smaskd.errors import InputError
from smaskd.model import Item
from smaskd.smask.labelmap import LabelmapEntry
from smaskd.smask.load import LabelSpec, MaskArchive, PngPair, load_png_pair
from smaskd.smask.parallel import PoolPolicy, PoolStats, ordered_map

__all__ = ["IMPORT_POLICY", "ImportStats", "ItemContext", "convert_item", "import_masks"]

#: An item costs an import ~3x less than an export, and a helper the same ~0.2 s to start:
#: below ~100 Mpx (300 frames of 640x480) the caller alone is as fast (benchmarks/README.md).
IMPORT_POLICY = PoolPolicy(min_pixels=100_000_000)


@dataclass(frozen=True, slots=True)
class ItemContext:
    """What every item of one import shares."""

    spec: LabelSpec
    fmt: str
    polygons: bool
    cat_of: dict[int, int]  # COCO: label index → category id


@dataclass(slots=True)
class _ItemOutput:
    item: Item  # size and path; its annotations are already in ``entries``
    entries: Any  # COCO: list of annotation dicts; Datumaro: the item's entry
    max_id: int  # COCO: the largest instance id of the item's masks, placeholders included
    stats: WriteStats
    mixed: list[str]
    dropped: list[str]
    class_only: bool
    void: list[str]


@dataclass(slots=True)
class _Unreadable:
    """An item whose members could not be read: the error waits for the item's turn."""

    error: InputError


@dataclass(slots=True)
class ImportStats:
    write: WriteStats
    labels: int
    warnings: list[str] = field(default_factory=list)
    parallel: PoolStats = field(default_factory=PoolStats)


def convert_item(ctx: ItemContext, pair: PngPair | _Unreadable) -> _ItemOutput:
    """Decode one item's PNGs and write its JSON entries (in a helper for large zips)."""
    if isinstance(pair, _Unreadable):
        raise pair.error
    loaded = load_png_pair(ctx.spec, pair)
    item, stats = loaded.item, WriteStats()
    if ctx.fmt == "coco":  # JSON text made here, where the item is: the caller only splices
        entries: Any = [dumps(e) for e in coco_item_annotations(item, ctx.cat_of, ctx.polygons,
                                                               stats)]
    else:
        entries = dumps(datumaro_item(item, ctx.polygons, stats))
    max_id = max_instance_id(item)
    item.annotations = []  # carried in ``entries``; the masks stay here
    return _ItemOutput(item, entries, max_id, stats, loaded.mixed, loaded.dropped,
                       loaded.class_only, loaded.void)


def _add(total: WriteStats, part: WriteStats) -> None:
    for name in ("instances", "polygons", "lost_components", "lost_instances",
                 "skipped_placeholders"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.warnings += part.warnings


def _pixels(archive: MaskArchive, masked: int) -> int:
    """Frame pixels of the job, estimated from the first class PNG's header (for the policy)."""
    first = next((entry for entry in archive.items() if entry.has_masks), None)
    if first is None:
        return 0
    head = archive.head_of(first, 33)
    if len(head) < 24 or not head.startswith(b"\x89PNG"):
        return 0
    w, h = struct.unpack(">II", head[16:24])
    return w * h * masked


def import_masks(
    src: str | Path | BinaryIO,
    out: BinaryIO,
    labelmap: list[LabelmapEntry] | None = None,
    fmt: str = "coco",
    polygons: bool = False,
    jobs: int = 1,
    policy: PoolPolicy = IMPORT_POLICY,
    spool_dir: str | Path | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> ImportStats:
    """Write the JSON of the mask zip ``src`` to ``out``; ``jobs`` processes for large zips.

    COCO's annotations follow all its images, so they wait in a temp file in ``spool_dir``
    (default: beside ``out`` when it has a path, else the system's temp folder).
    ``on_progress(done, total, "converting")`` is called before each item is converted and
    written, and once at the end.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    with MaskArchive(src, labelmap) as archive:
        labels = archive.spec.labels
        _, cat_of = coco_categories(labels)
        ctx = ItemContext(archive.spec, fmt, polygons, cat_of)
        masked = sum(entry.has_masks for entry in archive.items())

        def tasks() -> Iterator[PngPair | _Unreadable]:
            for entry in archive.items():
                if not entry.has_masks:
                    continue
                try:
                    got = archive.read(entry)
                except InputError as e:
                    yield _Unreadable(e)
                    continue
                assert isinstance(got, PngPair)
                yield got

        stats = ImportStats(WriteStats(), len(labels))
        helpers = policy.helpers_for(jobs, masked, _pixels(archive, masked))
        outputs = ordered_map(convert_item, ctx, tasks(), helpers, policy, stats.parallel,
                              describe=lambda t: f"item {getattr(t, 'item', None) and t.item.id!r}")

        def rows() -> Iterator[tuple[Item, Any, int]]:
            for done, entry in enumerate(archive.items()):
                if on_progress:
                    on_progress(done, len(archive), "converting")
                if not entry.has_masks:
                    item = archive.read(entry)
                    assert isinstance(item, Item)
                    entries = [] if fmt == "coco" else dumps(
                        datumaro_item(item, polygons, stats.write))
                    yield item, entries, 0
                    continue
                got = next(outputs)
                _add(stats.write, got.stats)
                archive.note_parts(got.item.id, got.mixed, got.dropped, got.class_only, got.void)
                yield got.item, got.entries, got.max_id

        try:
            if fmt == "coco":
                _write_coco(out, labels, rows(), stats.write, _spool_dir(out, spool_dir))
            else:
                _write_datumaro(out, labels, rows(), stats.write)
        finally:
            outputs.close()
        if on_progress:
            on_progress(len(archive), len(archive), "converting")
        stats.warnings = archive.all_warnings()
    stats.write.finish()
    return stats


# The documents are written as they are made, byte for byte what ``dump_json`` writes for
# the whole document: the lists are spliced into the text of the document without them.


def _open_list(out: BinaryIO, head: str, tail: str) -> None:
    assert head.endswith(tail), "the list must be the document's last member"
    out.write(head[: -len(tail)].encode("utf-8"))


def _spool_dir(out: BinaryIO, given: str | Path | None) -> str | None:
    """The folder of ``out`` when it has a path: it has room for the output, of which the
    annotations are most, and unlike /tmp it is not a RAM disk on many systems."""
    if given is not None:
        return str(given)
    name = getattr(out, "name", None)
    return (os.path.dirname(os.path.abspath(name)) or None) if isinstance(name, str) else None


def _write_coco(out: BinaryIO, labels, rows, stats: WriteStats, spool_dir: str | None) -> None:
    """``{..., "images": [...], "annotations": [...]}``: images stream to ``out``, the
    annotations (which follow every image) to a temp file that is appended at the end.

    The temp file is on disk from the first byte: held in memory, the annotations grew the
    process by ~3.5 KB an image (RLE), and a spool that moves to disk at some size still
    peaks at twice that size while it copies.
    """
    _open_list(out, dumps(coco_assemble(labels, "segmentation_mask", [], WriteStats())),
               '"images":[],"annotations":[]}')
    out.write(b'"images":[')
    count = unsized = 0
    with tempfile.TemporaryFile(prefix=".smaskd-annotations-", dir=spool_dir) as spool:
        for image_id, (item, entries, max_id) in enumerate(rows, start=1):
            stats.items += 1
            unsized += item.height is None
            image = dumps(coco_image(image_id, item, max_id)).encode()
            out.write((b"," if image_id > 1 else b"") + image)
            for text in entries:
                count += 1
                spool.write(f'{"," if count > 1 else ""}{{"id":{count},"image_id":{image_id},'
                            f"{text[1:]}".encode("utf-8"))
        out.write(b'],"annotations":[')
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    out.write(b"]}")
    if unsized:
        stats.warnings.append(f"{unsized} image(s) have no mask and no readable image: their "
                              "width and height are null")


def _write_datumaro(out: BinaryIO, labels, rows, stats: WriteStats) -> None:
    _open_list(out, dumps(datumaro_assemble(labels, "segmentation_mask", [], WriteStats())),
               '"items":[]}')
    out.write(b'"items":[')
    for n, (_, text, _) in enumerate(rows):
        stats.items += 1
        out.write((b"," if n else b"") + text.encode("utf-8"))
    out.write(b"]}")
