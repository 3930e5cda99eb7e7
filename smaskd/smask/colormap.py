"""The Pascal VOC bit-interleaving colormap (FORMAT.md §3.1).

Used for every instance colour in SegmentationObject and for label colours when a labelmap
gives none. The map from 256 indices to colours is one-to-one, so it inverts exactly.
"""

from __future__ import annotations

import numpy as np

from smaskd.model import RGB

__all__ = ["VOC_COLORMAP", "VOC_INVERSE", "voc_color"]


def voc_color(index: int) -> RGB:
    """The VOC colour of ``index`` (0 → black, 1 → (128,0,0), 255 → (224,224,192))."""
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= ((index >> 0) & 1) << shift
        g |= ((index >> 1) & 1) << shift
        b |= ((index >> 2) & 1) << shift
        index >>= 3
    return (r, g, b)


#: (256, 3) uint8 RGB palette, read-only so no caller can corrupt it for the others.
VOC_COLORMAP: np.ndarray = np.array([voc_color(i) for i in range(256)], dtype=np.uint8)
VOC_COLORMAP.setflags(write=False)

#: colour → index for all 256 VOC colours.
VOC_INVERSE: dict[RGB, int] = {voc_color(i): i for i in range(256)}
