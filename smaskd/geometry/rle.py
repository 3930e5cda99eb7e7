"""COCO RLE (counts list and compressed string), through pycocotools.

pycocotools is the reference implementation CVAT and Datumaro call; using it makes our RLE
bytes and polygon fills identical to theirs by construction rather than by a port.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as _coco

from smaskd.errors import InputError
from smaskd.model import BitmapMask

__all__ = [
    "bitmap_rle",
    "counts_array",
    "counts_from_string",
    "counts_total_from_string",
    "decode_rle",
    "encode_rle",
    "full_frame",
    "polygon_to_mask",
    "rle_area",
    "rle_bbox",
]

# pycocotools' string format (``rleToString``/``rleFrString``): each run is stored as a
# difference from the run two places back (from the fourth run on), written as a signed
# base-32 number, least significant digit first, one character per digit: char - 48 is
# 0..63; bit 0x20 says "more digits follow"; the low five bits are the digit, and in a
# number's last character bit 0x10 is the sign.
_ALPHABET = bytes(range(48, 112))  # '0'..'o'
_MORE = 80  # ord('0') + 0x20: a character at or above it continues its number
# Character code -> its digit's value; a last character's digit is signed (bit 0x10 weighs
# -16), which is the reference's sign extension ``x |= -1 << 5k`` folded into one digit.
_DIGIT = np.array(
    [(c - 48) & 0x1F if c >= _MORE else ((c - 48) ^ 0x10) - 0x10 for c in range(256)], np.int64
)
# A number of at most six digits is at most 2**29 in size, so with n runs each run is at
# most n * 2**28 and their sum at most n**2 * 2**28: int64 holds the runs of any string
# shorter than 2**32 characters, and their sum for fewer than 2**16 runs (else the sum is
# checked).
# Longer numbers (pycocotools writes none) are left to the exact decoder.
_MAX_DIGITS = 6
_MAX_FAST_CHARS = 1 << 32
_SAFE_SUM_RUNS = 1 << 16


def _runs_array(text: str) -> np.ndarray | None:
    """The runs of a well-formed string as int64; ``None`` leaves it to the exact decoder.

    The vectorised decode handles the strings pycocotools writes; anything it would have to
    reason about in detail (a bad or non-ASCII character, a truncated number, a number of
    more than six digits) goes to ``_counts_from_string_exact`` instead, which then raises (or
    returns) exactly what it always did, so the two can never disagree on an error message.
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    if not raw:
        return np.zeros(0, np.int64)
    if raw.translate(None, _ALPHABET) or raw[-1] >= _MORE or len(raw) >= _MAX_FAST_CHARS:
        return None
    chars = np.frombuffer(raw, np.uint8)
    runs = _DIGIT.take(chars)
    ends = (chars < _MORE).nonzero()[0]
    if len(ends) < len(chars):  # some number has more than one digit
        starts = np.empty_like(ends)
        starts[0] = 0
        np.add(ends[:-1], 1, out=starts[1:])
        digits = ends - starts + 1
        if digits.max() > _MAX_DIGITS:
            return None
        place = np.arange(len(chars)) - np.repeat(starts, digits)
        runs <<= 5 * place
        runs = np.add.reduceat(runs, starts)
    # Undo the delta coding: from the fourth run on, each adds the run two places back,
    # i.e. running sums over the odd positions and over the even ones from the third.
    np.add.accumulate(runs[1::2], out=runs[1::2])
    np.add.accumulate(runs[2::2], out=runs[2::2])
    return runs


def counts_from_string(text: str) -> list[int]:
    """Decode pycocotools' compressed counts string (``rleFrString``) into its runs.

    Needed to validate a string before pycocotools decodes it: pycocotools trusts the runs
    and, for a string whose runs do not add up to h*w, returns uninitialised memory.
    Raises ``ValueError`` for a truncated string or a character outside '0'..'o'.
    """
    runs = _runs_array(text)
    return _counts_from_string_exact(text) if runs is None else runs.tolist()


def counts_array(text: str) -> np.ndarray:
    """The runs of a compressed counts string as int64, for painting them.

    ``ValueError`` as ``counts_from_string``; ``OverflowError`` for a run beyond int64.
    """
    runs = _runs_array(text)
    return np.array(_counts_from_string_exact(text), dtype=np.int64) if runs is None else runs


def counts_total_from_string(text: str) -> tuple[int, bool]:
    """``(sum of the runs, whether any run is negative)`` of a compressed counts string.

    All a reader needs to validate a string, without building the list of runs: reading
    thousands of full-frame masks spends most of its time here. Errors as ``counts_from_string``.
    """
    runs = _runs_array(text)
    if runs is None:
        exact = _counts_from_string_exact(text)
        return sum(exact), any(r < 0 for r in exact)
    if not len(runs):
        return 0, False
    lowest = int(runs.min())
    if len(runs) >= _SAFE_SUM_RUNS and max(int(runs.max()), -lowest) * len(runs) >= 1 << 63:
        return sum(runs.tolist()), lowest < 0
    return int(runs.sum()), lowest < 0


def _counts_from_string_exact(text: str) -> list[int]:
    """A line-by-line port of ``rleFrString`` with Python's unbounded ints: the reference.

    The fast path hands it every string it does not decode itself, and the tests hold the
    fast path to it, including the error message for the first bad character.
    """
    counts: list[int] = []
    p, n = 0, len(text)
    while p < n:
        x = k = 0
        more = True
        while more:
            if p >= n:
                raise ValueError("truncated RLE string")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"invalid character {text[p]!r} in RLE string")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _as_coco(counts: str | list[int] | tuple[int, ...], height: int, width: int, where: str) -> dict:
    if isinstance(counts, str):
        try:
            total, negative = counts_total_from_string(counts)
        except ValueError as e:
            raise InputError(f"invalid compressed RLE: {e}", where) from None
        if negative or total != height * width:
            raise InputError(
                f"RLE runs sum to {total}, expected height*width = {height}*{width} = "
                f"{height * width}",
                where,
            )
        return {"counts": counts.encode("ascii"), "size": [height, width]}
    if any(int(r) < 0 for r in counts) or sum(counts) != height * width:
        raise InputError(
            f"RLE counts sum to {sum(counts)}, expected height*width = {height}*{width} = "
            f"{height * width}",
            where,
        )
    return _coco.frPyObjects({"counts": list(counts), "size": [height, width]}, height, width)


def decode_rle(counts: str | list[int] | tuple[int, ...], height: int, width: int,
               where: str = "RLE") -> np.ndarray:
    """Full-frame (height, width) uint8 0/1 mask."""
    try:
        return _coco.decode(_as_coco(counts, height, width, where))
    except InputError:
        raise
    except Exception as e:  # pycocotools raises bare ValueError/TypeError on junk
        raise InputError(f"invalid RLE: {e}", where) from None


def encode_rle(mask: np.ndarray) -> dict:
    """``{"counts": <compressed str>, "size": [h, w]}`` as pycocotools writes it."""
    rle = _coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(x) for x in rle["size"]]}


def rle_area(rle: dict) -> int:
    return int(_coco.area({"counts": rle["counts"].encode("ascii"), "size": rle["size"]}))


def rle_bbox(rle: dict) -> list[float]:
    return [float(v) for v in _coco.toBbox({"counts": rle["counts"].encode("ascii"), "size": rle["size"]})]


def polygon_to_mask(points: list[float], height: int, width: int) -> np.ndarray:
    """pycocotools' ``rleFrPoly`` fill of one ring: exactly CVAT's polygon/box pixels (§4.3)."""
    rles = _coco.frPyObjects([list(points)], height, width)
    return _coco.decode(rles)[:, :, 0]


def full_frame(mask: BitmapMask, height: int, width: int) -> np.ndarray:
    """The bitmap pasted on an empty ``height x width`` uint8 frame (clipped)."""
    frame = np.zeros((height, width), dtype=np.uint8)
    bm = np.asarray(mask.bitmap, dtype=bool)
    r0, c0 = max(mask.top, 0), max(mask.left, 0)
    r1, c1 = min(mask.top + bm.shape[0], height), min(mask.left + bm.shape[1], width)
    if r0 < r1 and c0 < c1:
        frame[r0:r1, c0:c1] = bm[r0 - mask.top:r1 - mask.top, c0 - mask.left:c1 - mask.left]
    return frame


def bitmap_rle(mask: BitmapMask, height: int, width: int) -> dict:
    """Compressed full-frame COCO RLE of a cropped bitmap, in O(crop size).

    The crop is transposed (COCO runs go down the columns) with one empty pixel closing
    every column, so each run lies inside one column and its start and end are found in
    crop coordinates, then moved to the frame's; the frame outside the crop only lengthens
    the runs of zeros between them. (Materialising the frame's columns instead cost an
    import about a third more here.)
    """
    bm = np.asarray(mask.bitmap, dtype=bool)
    c0, c1 = max(mask.left, 0), min(mask.left + bm.shape[1], width)
    r0, r1 = max(mask.top, 0), min(mask.top + bm.shape[0], height)
    total = height * width
    # runs as a uint32 array, the type pycocotools converts a list of counts to: its
    # conversion of a Python list cost more than the rest of this function
    counts = np.array([total], dtype=np.uint32)
    if c0 < c1 and r0 < r1:
        rows = r1 - r0
        step = rows + 1
        cols = np.zeros((c1 - c0, step), dtype=bool)
        cols[:, :rows] = bm[r0 - mask.top:r1 - mask.top, c0 - mask.left:c1 - mask.left].T
        flat = cols.reshape(-1)
        edge = np.flatnonzero(flat[1:] != flat[:-1])  # run starts and ends, alternating
        edge += 1
        if flat[0]:
            edge = np.r_[0, edge]
        if edge.size:
            col = edge // step  # crop (col, row) → frame index (c0 + col) * height + r0 + row
            at = edge + (col * (height - step) + (c0 * height + r0))
            if rows == height:  # a run ending a column where the next one's starts: one run
                join = np.flatnonzero(at[1:-1:2] == at[2::2]) * 2 + 1
                if join.size:
                    at = np.delete(at, np.concatenate((join, join + 1)))
            n = at.size + (at[-1] != total)  # no empty last run
            counts = np.empty(n, dtype=np.uint32)  # frame sizes are far below 2**32
            counts[0] = at[0]
            np.subtract(at[1:], at[:-1], out=counts[1:at.size], casting="unsafe")
            if n > at.size:
                counts[-1] = total - at[-1]
    rle = _coco.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
    return {"counts": rle["counts"].decode("ascii"), "size": [height, width]}
