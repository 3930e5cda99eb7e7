"""JSON fields that several annotation formats spell the same way, read in one place.

Why a module of its own: the readers of COCO, Datumaro and LabelMe are peers (none imports
another, a contract in pyproject.toml checks it), yet Datumaro's ``mask`` annotation holds its
``rle`` exactly as COCO's ``segmentation`` does, and every format gives frame sizes that must be
refused before a painter allocates them. Those shared spellings live here, below the formats.
"""

from __future__ import annotations

import re
from typing import Any

from smaskd.annotations.jsonload import At, expect_dict, expect_int, expect_list
from smaskd.geometry.rle import counts_total_from_string
from smaskd.model import RleMask
from smaskd.pngio import MAX_IMAGE_PIXELS

__all__ = ["check_frame_size", "parse_rle"]

_RLE_CHARS = re.compile(r"[0-o]*")  # pycocotools' string alphabet: chr(48) .. chr(111)


def check_frame_size(height: int, width: int, at: At) -> None:
    """Refuse frames the painter could not allocate (the same cap as for PNGs)."""
    if height * width > MAX_IMAGE_PIXELS:
        raise at.error(
            f"frame size {height}x{width} (h x w) is over the limit of {MAX_IMAGE_PIXELS} pixels"
        )


def _string_counts_total(counts: str, at: At) -> int:
    """Sum of the runs of a compressed COCO RLE string (pycocotools' ``rleFrString``).

    pycocotools decodes a string whose runs fall short of ``h*w`` without complaint, leaving
    the rest of its buffer uninitialised, so the total is checked here, at the boundary.
    """
    try:
        total, negative = counts_total_from_string(counts)
    except ValueError as e:
        raise at.error(f"compressed RLE string: {e}") from None
    if negative:
        raise at.error("compressed RLE string decodes to a negative run length")
    return total


def parse_rle(value: Any, at: At) -> RleMask:
    """``{"counts": [...] | "<str>", "size": [h, w]}`` → ``RleMask``, with the run total checked."""
    rle = expect_dict(value, at)
    size = expect_list(rle.get("size"), at.key("size"))
    if len(size) != 2:
        raise at.key("size").error(f"expected [height, width], got {len(size)} values")
    height = expect_int(size[0], at.key("size").index(0), 1)
    width = expect_int(size[1], at.key("size").index(1), 1)
    check_frame_size(height, width, at.key("size"))
    counts_at = at.key("counts")
    raw = rle.get("counts")
    if isinstance(raw, str):
        if not _RLE_CHARS.fullmatch(raw):
            raise counts_at.error("compressed RLE string has characters outside '0'..'o'")
        total = _string_counts_total(raw, counts_at)
        counts: str | tuple[int, ...] = raw
    else:
        runs = expect_list(raw, counts_at)
        if runs and not set(map(type, runs)) <= {int}:
            runs = [expect_int(v, counts_at.index(i), 0) for i, v in enumerate(runs)]
        if runs and min(runs) < 0:
            raise counts_at.error("RLE run lengths must not be negative")
        total = sum(runs)
        counts = tuple(runs)
    if total != height * width:
        raise counts_at.error(
            f"RLE runs sum to {total}, expected height*width = {height}*{width} = {height * width}"
        )
    return RleMask(counts, height, width)
