"""COCO RLE (counts list and compressed string), through pycocotools.

pycocotools is the reference implementation CVAT and Datumaro call; using it makes our RLE
bytes and polygon fills identical to theirs by construction rather than by a port.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as _coco

from smaskd.errors import InputError

__all__ = ["counts_from_string", "decode_rle", "encode_rle", "polygon_to_mask", "rle_area", "rle_bbox"]


def counts_from_string(text: str) -> list[int]:
    """Decode pycocotools' compressed counts string (a port of ``rleFrString``).

    Needed to validate a string before pycocotools decodes it: pycocotools trusts the runs
    and, for a string whose runs do not add up to h*w, returns uninitialised memory.
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
            runs = counts_from_string(counts)
        except ValueError as e:
            raise InputError(f"invalid compressed RLE: {e}", where) from None
        if any(r < 0 for r in runs) or sum(runs) != height * width:
            raise InputError(
                f"RLE runs sum to {sum(runs)}, expected height*width = {height}*{width} = "
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
