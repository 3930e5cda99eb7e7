"""Mask PNG → index array (FORMAT.md §5.3), vectorised: one ``np.unique`` and a table per image.

What each PNG kind means, as CVAT reads it unless noted:

=======================  ================================================================
PNG                      decoded as
=======================  ================================================================
8-bit gray               the raw index (label index / instance id)
RGB, RGBA (alpha drop)   looked up by colour
paletted (+tRNS)         looked up by *palette colour*, never by palette index (as CVAT)
gray+alpha               the colour (g, g, g) (OpenCV expands it to BGRA; as CVAT)
16-bit gray              the raw 16-bit index. **CVAT wraps it mod 256; we do not**: 300
                         is index 300 (usually undeclared → error), never index 44
16-bit colour            exact 8-bit scaling (``v = 257·k``) is read as ``k`` (CVAT's wrap
                         gives the same); any other value is refused
=======================  ================================================================

Class masks return label indices. The VOC "void" value (index 255 of a 1-channel PNG beyond
the labelmap, or the colour (224, 224, 192) no label declares) is the ``ignored`` label when
the label set has one (``void_label``): CVAT's VOC defaults declare ``ignored`` with that very
colour, so its VOC border survives CVAT's round trip and must survive ours. Without such a
label it is ``VOID`` (-1): CVAT refuses the archive (undeclared colour or index), but VOC and
labelme use 255 as "ignore", so we drop those pixels and the caller warns.
Object masks return instance ids (0 = none).

An undeclared colour or index is an ``InputError`` naming the file, the value, how many
pixels carry it and the first one (x, y), because a user has to find it in an editor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from smaskd.errors import InputError
from smaskd.model import RGB
from smaskd.pngio import RowRuns, decode_png, decode_runs, decode_runs_opencv, read_png_header
from smaskd.smask.colormap import VOC_INVERSE

__all__ = [
    "VOID",
    "VOID_COLOR",
    "VOID_INDEX",
    "class_runs",
    "decode_class_png",
    "decode_object_png",
    "object_runs",
    "png_size",
]

VOID = -1
VOID_INDEX = 255
VOID_COLOR: RGB = (224, 224, 192)


def png_size(data: bytes, where: str) -> tuple[int, int]:
    """(height, width) from the PNG header, without decoding."""
    h = read_png_header(data, where)
    return h.height, h.width


def _pixels(data: bytes, where: str) -> tuple[np.ndarray, bool]:
    """(array, is_colour): HxW raw indices, or HxW packed ``R<<16 | G<<8 | B`` colours."""
    header = read_png_header(data, where)
    img = decode_png(data, where)
    if img.ndim == 2:
        if header.color_type == 4:  # gray+alpha: CVAT sees BGRA and looks up (g, g, g)
            g = _to_8bit(img, where).astype(np.int32)
            return (g << 16) | (g << 8) | g, True
        return img, False
    rgb = _to_8bit(img, where).astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], True


def _to_8bit(img: np.ndarray, where: str) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if np.any(img % 257):
        raise InputError(
            "16-bit colour PNG with values that are not 8-bit colours scaled by 257; colours "
            "must be exact (CVAT would wrap them mod 256 into unrelated colours)",
            where,
        )
    return (img // 257).astype(np.uint8)


def _inverse(flat: np.ndarray, uniq: np.ndarray) -> np.ndarray:
    """Position of every value of ``flat`` in the sorted ``uniq`` (np.unique's inverse), fast.

    Masks hold few distinct values, so a modulus ``m`` that keeps them distinct is found in a
    few tries and ``lut[flat % m]`` replaces a sort or binary search of every pixel.
    """
    n = len(uniq)
    if n == 1:
        return np.zeros(flat.shape, dtype=np.intp)
    if uniq[-1] < (1 << 16) and uniq[0] >= 0:  # raw indices: a direct table
        table = np.zeros(int(uniq[-1]) + 1, dtype=np.intp)
        table[uniq] = np.arange(n)
        return table[flat]
    if n <= 4096:
        u64 = uniq.astype(np.int64)
        for m in range(n, 16 * n + 64):
            slots = u64 % m
            if np.bincount(slots, minlength=m).max() == 1:
                table = np.zeros(m, dtype=np.intp)
                table[slots] = np.arange(n)
                return table[flat % m]
    return np.searchsorted(uniq, flat)


def _first_xy(mask_flat: np.ndarray, width: int) -> tuple[int, int]:
    i = int(np.argmax(mask_flat))
    return i % width, i // width


def _rgb(key: int) -> RGB:
    return ((key >> 16) & 255, (key >> 8) & 255, key & 255)


def _undeclared(what: str, value: object, at: "_FlatPixels", where: str, hint: str) -> InputError:
    return InputError(
        f"undeclared {what} {value}: {at.count} pixel(s), first at (x={at.x}, y={at.y}); {hint}",
        where,
    )


def decode_class_png(
    data: bytes,
    where: str,
    colors: Mapping[RGB, int],
    n_labels: int,
    void_label: int | None = None,
) -> np.ndarray:
    """SegmentationClass PNG → int32 label indices (``VOID`` for undeclared void pixels).

    ``colors`` is colour → label index with the last duplicate already winning (as CVAT);
    ``n_labels`` bounds raw indices of 1-channel PNGs; ``void_label`` is the label undeclared
    void pixels take (the label set's ``ignored``), None to read them as ``VOID``.
    """
    runs = class_runs(data, where, colors, n_labels, void_label)
    if runs is not None:  # the common case: CVAT's/OpenCV's/our own 8-bit masks
        return runs.expand(runs.values)
    px, is_colour = _pixels(data, where)
    h, w = px.shape
    flat = px.reshape(-1)
    uniq = np.unique(flat)
    lut = _class_table(uniq, is_colour, px.dtype == np.uint16, colors, n_labels, void_label,
                       lambda key: _FlatPixels(flat, flat == key, w), where)
    return lut[_inverse(flat, uniq)].reshape(h, w)


def _unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for the short arrays of run values.

    (numpy's own goes through a hash table that costs more than this sort for them.)
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new = np.empty(len(values), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    inverse = np.empty(len(values), dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return ordered[new], inverse


def _runs(data: bytes, where: str) -> RowRuns | None:
    """Runs straight from the PNG's rows, else from OpenCV's decoding (palettes, filters)."""
    runs = decode_runs(data, where)
    return runs if runs is not None else decode_runs_opencv(data, where)


def class_runs(data: bytes, where: str, colors: Mapping[RGB, int], n_labels: int,
               void_label: int | None = None) -> RowRuns | None:
    """:func:`decode_class_png` as runs of label indices, or None when the PNG needs the
    per-pixel path (16-bit, gray+alpha, noise)."""
    runs = _runs(data, where)
    if runs is None:
        return None
    uniq, inverse = _unique_inverse(runs.values)
    lut = _class_table(uniq, runs.colour, False, colors, n_labels, void_label,
                       lambda key: _RunPixels(runs, runs.values == key), where)
    return RowRuns(runs.height, runs.width, runs.starts, lut[inverse], False)


def object_runs(data: bytes, where: str) -> RowRuns | None:
    """:func:`decode_object_png` as runs of instance ids, or None when the PNG needs the
    per-pixel path (16-bit, gray+alpha, noise)."""
    runs = _runs(data, where)
    if runs is None:
        return None
    if not runs.colour:
        return RowRuns(runs.height, runs.width, runs.starts, runs.values.astype(np.int32), False)
    uniq, inverse = _unique_inverse(runs.values)
    lut = _object_table(uniq, lambda key: _RunPixels(runs, runs.values == key), where)
    return RowRuns(runs.height, runs.width, runs.starts, lut[inverse], False)


class _FlatPixels:
    """Where a value sits in a decoded image: pixel count and first (x, y), for errors."""

    def __init__(self, flat: np.ndarray, hit: np.ndarray, width: int) -> None:
        self.count = int(np.count_nonzero(hit))
        self.x, self.y = _first_xy(hit, width)


class _RunPixels(_FlatPixels):
    def __init__(self, runs: RowRuns, hit: np.ndarray) -> None:  # noqa: D107 - same, from runs
        self.count = int(runs.lengths()[hit].sum())
        first = int(runs.starts[hit][0])
        self.x, self.y = first % runs.width, first // runs.width


def _class_table(uniq: np.ndarray, is_colour: bool, sixteen: bool, colors: Mapping[RGB, int],
                 n_labels: int, void_label: int | None, locate, where: str) -> np.ndarray:
    """Label index (or ``VOID``) of every distinct value; the first undeclared one raises."""
    lut = np.empty(len(uniq), dtype=np.int32)
    void = VOID if void_label is None else void_label
    for i, key in enumerate(uniq.tolist()):
        if is_colour:
            rgb = _rgb(key)
            idx = colors.get(rgb)
            if idx is None:
                if rgb == VOID_COLOR:
                    lut[i] = void
                    continue
                raise _undeclared("colour", rgb, locate(key), where,
                                  f"the labelmap declares {len(colors)} colour(s)")
        else:
            idx = key
            if idx >= n_labels:
                if idx == VOID_INDEX:
                    lut[i] = void
                    continue
                bits = " (16-bit PNG: values are read as they are, not mod 256)" if sixteen else ""
                raise _undeclared(
                    "label index", idx, locate(key), where,
                    f"the labelmap has {n_labels} labels (indices 0..{n_labels - 1}){bits}",
                )
        lut[i] = idx
    return lut


def decode_object_png(data: bytes, where: str) -> np.ndarray:
    """SegmentationObject PNG → int32 instance ids (0 = no instance).

    Colours go through the 256-colour VOC instance palette; a colour outside it is an error
    (CVAT's ``Undeclared color``). 1-channel PNGs are raw ids (16-bit ones up to 65535).
    """
    runs = object_runs(data, where)
    if runs is not None:
        return runs.expand(runs.values)
    px, is_colour = _pixels(data, where)
    if not is_colour:
        return px.astype(np.int32)
    h, w = px.shape
    flat = px.reshape(-1)
    uniq = np.unique(flat)
    lut = _object_table(uniq, lambda key: _FlatPixels(flat, flat == key, w), where)
    return lut[_inverse(flat, uniq)].reshape(h, w)


def _object_table(uniq: np.ndarray, locate, where: str) -> np.ndarray:
    lut = np.empty(len(uniq), dtype=np.int32)
    for i, key in enumerate(uniq.tolist()):
        rgb = _rgb(key)
        idx = VOC_INVERSE.get(rgb)
        if idx is None:
            raise _undeclared(
                "instance colour", rgb, locate(key), where,
                "SegmentationObject colours must come from the 256-colour VOC palette",
            )
        lut[i] = idx
    return lut
