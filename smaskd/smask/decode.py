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

Class masks return label indices, with ``VOID`` (-1) where the pixel is the VOC "void"
value the labelmap does not declare (index 255 or colour (224, 224, 192)), or the label the
caller marks as void: VOC/labelme use 255 as "ignore", and turning it into an error (as CVAT
does for index PNGs) or into an instance (as CVAT does for colours) helps nobody.
Object masks return instance ids (0 = none).

An undeclared colour or index is an ``InputError`` naming the file, the value, how many
pixels carry it and the first one (x, y), because a user has to find it in an editor.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from smaskd.errors import InputError
from smaskd.model import RGB
from smaskd.pngio import decode_png, read_png_header
from smaskd.smask.colormap import VOC_INVERSE

__all__ = ["VOID", "VOID_COLOR", "VOID_INDEX", "decode_class_png", "decode_object_png", "png_size"]

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


def _undeclared(what: str, value: object, flat: np.ndarray, hit: np.ndarray, width: int,
                where: str, hint: str) -> InputError:
    count = int(np.count_nonzero(hit))
    x, y = _first_xy(hit, width)
    return InputError(
        f"undeclared {what} {value}: {count} pixel(s), first at (x={x}, y={y}); {hint}", where
    )


def decode_class_png(
    data: bytes,
    where: str,
    colors: Mapping[RGB, int],
    n_labels: int,
    void_labels: frozenset[int] = frozenset(),
) -> np.ndarray:
    """SegmentationClass PNG → int32 label indices (``VOID`` for void pixels).

    ``colors`` is colour → label index with the last duplicate already winning (as CVAT);
    ``n_labels`` bounds raw indices of 1-channel PNGs; ``void_labels`` are label indices to
    read as void (the VOC-default ``ignored`` label).
    """
    px, is_colour = _pixels(data, where)
    h, w = px.shape
    flat = px.reshape(-1)
    uniq = np.unique(flat)
    lut = np.empty(len(uniq), dtype=np.int32)
    for i, key in enumerate(uniq.tolist()):
        if is_colour:
            rgb = _rgb(key)
            idx = colors.get(rgb)
            if idx is None:
                if rgb == VOID_COLOR:
                    lut[i] = VOID
                    continue
                raise _undeclared(
                    "colour", rgb, flat, flat == key, w, where,
                    f"the labelmap declares {len(colors)} colour(s)",
                )
        else:
            idx = key
            if idx >= n_labels:
                if idx == VOID_INDEX:
                    lut[i] = VOID
                    continue
                bits = " (16-bit PNG: values are read as they are, not mod 256)" if (
                    px.dtype == np.uint16) else ""
                raise _undeclared(
                    "label index", idx, flat, flat == key, w, where,
                    f"the labelmap has {n_labels} labels (indices 0..{n_labels - 1}){bits}",
                )
        lut[i] = VOID if idx in void_labels else idx
    return lut[_inverse(flat, uniq)].reshape(h, w)


def decode_object_png(data: bytes, where: str) -> np.ndarray:
    """SegmentationObject PNG → int32 instance ids (0 = no instance).

    Colours go through the 256-colour VOC instance palette; a colour outside it is an error
    (CVAT's ``Undeclared color``). 1-channel PNGs are raw ids (16-bit ones up to 65535).
    """
    px, is_colour = _pixels(data, where)
    if not is_colour:
        return px.astype(np.int32)
    h, w = px.shape
    flat = px.reshape(-1)
    uniq = np.unique(flat)
    lut = np.empty(len(uniq), dtype=np.int32)
    for i, key in enumerate(uniq.tolist()):
        rgb = _rgb(key)
        idx = VOC_INVERSE.get(rgb)
        if idx is None:
            raise _undeclared(
                "instance colour", rgb, flat, flat == key, w, where,
                "SegmentationObject colours must come from the 256-colour VOC palette",
            )
        lut[i] = idx
    return lut[_inverse(flat, uniq)].reshape(h, w)
