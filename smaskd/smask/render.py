"""One item → its SegmentationClass and SegmentationObject PNGs: the per-item work of an export.

This is what :mod:`smaskd.smask.parallel` runs in the caller or in a helper process, so it
takes everything it needs as data (``RenderContext`` once per job, ``RenderTask`` per item)
and returns bytes. Everything that needs the whole dataset (plan, label checks, duplicate
ids, the zip) stays in :mod:`smaskd.smask.export`.

Encoding: the default writes each PNG straight from the instance-position index and two
colour tables (:func:`~smaskd.pngio.encode_indexed_rgb_pngs`: same pixels as CVAT, ~5x
faster, bytes of our own). ``compat="cvat"`` paints the RGB images and encodes them with
OpenCV's defaults, as CVAT does, so the files are CVAT's byte for byte on the same OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smaskd.errors import DataLossError, SmaskdError
from smaskd.model import Annotation, Item
from smaskd.pngio import encode_indexed_rgb_png_cv2, encode_indexed_rgb_pngs
from smaskd.smask.colormap import VOC_COLORMAP
from smaskd.smask.compose import Composition, compose_item

__all__ = ["MAX_INSTANCE_ID", "RenderContext", "RenderTask", "Rendered", "render_item"]

MAX_INSTANCE_ID = 255  # the VOC instance palette has 256 colours, 0 = none


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What every item of one export shares."""

    background: int  # output class index of the background
    colors: np.ndarray  # (n, 3) uint8 RGB: colour of each output class index
    lossless: bool
    cvat_bytes: bool = False  # encode as CVAT does (cv2.imencode defaults)


@dataclass(slots=True)
class RenderTask:
    """One item; ``classes[i]`` is annotation i's output class (or the error it raises)."""

    item: Item
    classes: list[int | SmaskdError | None]
    encode: bool = True  # False: only count (the PNGs of this id come from another subset)


@dataclass(slots=True)
class Rendered:
    instances: int
    mixed_groups: list[tuple[int, list[int]]] = field(default_factory=list)
    class_png: bytes | None = None
    object_png: bytes | None = None


def color_tables(comp: Composition, ctx: RenderContext) -> tuple[np.ndarray, np.ndarray]:
    """(class colours, instance colours) of every instance position, RGB."""
    positions = np.arange(len(comp.classes))
    if ctx.lossless:  # true colours; visible instance ids are <= 255 (checked by the caller)
        class_lut = ctx.colors[comp.classes]
    else:  # CVAT: .astype(np.uint8) before the palette lookup wraps both at 256
        palette = np.zeros((256, 3), dtype=np.uint8)
        n = min(256, len(ctx.colors))
        palette[:n] = ctx.colors[:n]
        class_lut = palette[comp.classes & 255]
    return class_lut, VOC_COLORMAP[positions & 255]


def render_item(ctx: RenderContext, task: RenderTask) -> Rendered:
    """Compose the item, check its instance ids, encode both PNGs."""
    item = task.item
    position = {id(a): i for i, a in enumerate(item.annotations)}

    def class_of(ann: Annotation, where: str) -> int:
        value = task.classes[position[id(ann)]]
        if isinstance(value, BaseException):
            raise value
        assert value is not None  # set for every segment by the caller
        return value

    comp = compose_item(item, class_of, ctx.background)
    top = int(comp.index.max()) if comp.index.size else 0
    if ctx.lossless and top > MAX_INSTANCE_ID:
        raise DataLossError(
            f"{comp.instances} instances, instance id {top} is visible: ids above "
            f"{MAX_INSTANCE_ID} wrap in the 8-bit SegmentationObject PNG (CVAT "
            "paints 256 black and merges 257.. with 1..). Group shapes of one "
            "object, split the image, or use --compat cvat to accept CVAT's "
            "behaviour",
            item.id,
        )
    out = Rendered(comp.instances, comp.mixed_groups)
    if task.encode:
        class_lut, inst_lut = color_tables(comp, ctx)
        if ctx.cvat_bytes:
            out.class_png = encode_indexed_rgb_png_cv2(comp.index, class_lut)
            out.object_png = encode_indexed_rgb_png_cv2(comp.index, inst_lut)
        else:
            out.class_png, out.object_png = encode_indexed_rgb_pngs(
                comp.index, [class_lut, inst_lut])
    return out
