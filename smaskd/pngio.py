"""The only place that encodes and decodes PNGs, and the only place that flips BGR↔RGB.

OpenCV works in BGR; the format's colours are RGB. Keeping every conversion here means no
other module can get the channel order wrong. PNG dimensions are read from the IHDR chunk
before decoding, so a header claiming 100,000 × 100,000 pixels is refused without allocating.
"""

from __future__ import annotations

import os
import struct

# Must be set before cv2 is first imported anywhere in the process: OpenCV's own cap on
# decoded image size (the default is 2^30 pixels, far above anything a mask needs).
MAX_IMAGE_PIXELS = 1 << 28
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from smaskd.errors import InputError  # noqa: E402

__all__ = ["MAX_IMAGE_PIXELS", "PngHeader", "decode_png", "encode_rgb_png", "read_png_header"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

cv2.setNumThreads(1)  # parallelism is ours (items over processes); cv2's threads only contend


class PngHeader(tuple):
    """(width, height, bit_depth, color_type) from IHDR."""

    @property
    def width(self) -> int:
        return self[0]

    @property
    def height(self) -> int:
        return self[1]

    @property
    def bit_depth(self) -> int:
        return self[2]

    @property
    def color_type(self) -> int:
        return self[3]


def read_png_header(data: bytes, where: str = "PNG") -> PngHeader:
    """Parse the IHDR chunk; refuses non-PNG data and images over ``MAX_IMAGE_PIXELS``."""
    if len(data) < 33 or not data.startswith(_PNG_MAGIC) or data[12:16] != b"IHDR":
        raise InputError("not a PNG file (bad signature or missing IHDR)", where)
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise InputError(f"PNG has zero size {width}x{height}", where)
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"PNG claims {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS}; refused "
            "before decoding",
            where,
        )
    return PngHeader((width, height, depth, ctype))


def decode_png(data: bytes, where: str = "PNG") -> np.ndarray:
    """Decode to HxW (1 channel) or HxWx3 **RGB** (alpha dropped), keeping 16-bit depth.

    Paletted PNGs come back as their palette colours (as CVAT reads them); gray+alpha comes
    back as 1 channel gray.
    """
    header = read_png_header(data, where)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError("PNG could not be decoded (corrupt or truncated data)", where)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif header.color_type == 4:  # gray+alpha: OpenCV expands to BGRA; keep the gray
            img = np.ascontiguousarray(img[:, :, 0])
        else:
            img = np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) → RGB, alpha dropped
    return img


def encode_rgb_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG (colour type 2) of an HxWx3 RGB array, as CVAT's ``cv2.imencode``."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise ValueError("cv2.imencode failed")
    return buf.tobytes()
