"""The only place that encodes and decodes PNGs, and the only place that flips BGR↔RGB.

OpenCV works in BGR; the format's colours are RGB. Keeping every conversion here means no
other module can get the channel order wrong. PNG dimensions are read from the IHDR chunk
before decoding, so a header claiming 100,000 × 100,000 pixels is refused without allocating.
"""

from __future__ import annotations

import functools
import struct
import zlib as _zlib
from types import ModuleType

import numpy as np

try:  # ISA-L deflate for the fast path below; zlib gives the same format where it is missing
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - a platform without isal wheels: slower, same pixels
    import zlib as _deflate  # type: ignore[no-redef]

# The package's __init__ has already given OpenCV the same cap (OPENCV_IO_MAX_IMAGE_PIXELS must
# be set before cv2 loads, and cv2 may load through another module first).
from smaskd import MAX_IMAGE_PIXELS
from smaskd.errors import InputError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "PngHeader",
    "RowRuns",
    "decode_png",
    "decode_runs",
    "decode_runs_opencv",
    "encode_indexed_rgb_png_cv2",
    "encode_indexed_rgb_pngs",
    "encode_rgb_png",
    "encode_rgb_png_fast",
    "opencv",
    "read_png_header",
]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



@functools.cache
def opencv() -> ModuleType:
    """OpenCV, loaded on first use, with its threads off.

    Loading it is ~a quarter of a one-shot import's start-up (``python -X importtime``), and
    an import whose PNGs all take the fast path below never calls it. Every smaskd module
    gets cv2 from here, so none can use it before ``setNumThreads(1)``: parallelism is ours
    (items over processes); cv2's threads only contend.
    """
    import cv2

    cv2.setNumThreads(1)
    return cv2


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
    img = _opencv_decode(data, where)
    if img.ndim == 3:
        if img.shape[2] == 1:
            img = img[:, :, 0]
        elif header.color_type == 4:  # gray+alpha: OpenCV expands to BGRA; keep the gray
            img = np.ascontiguousarray(img[:, :, 0])
        else:
            img = np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) → RGB, alpha dropped
    return img


def _opencv_decode(data: bytes, where: str) -> np.ndarray:
    """OpenCV's decoding as it comes: BGR(A) channel order."""
    cv2 = opencv()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError("PNG could not be decoded (corrupt or truncated data)", where)
    return img


def encode_rgb_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG (colour type 2) of an HxWx3 RGB array, as CVAT's ``cv2.imencode``."""
    ok, buf = opencv().imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise ValueError("cv2.imencode failed")
    return buf.tobytes()


#: Pixels per step when a colour table is applied to an index image: numpy turns every
#: index array into intp (8 bytes a pixel), which for a whole 16384² frame is 2 GiB.
_LUT_STEP = 1 << 22


def encode_indexed_rgb_png_cv2(index: np.ndarray, lut: np.ndarray) -> bytes:
    """:func:`encode_rgb_png` of ``lut[index]`` (``lut``: (N, 3) uint8 RGB), bytes as CVAT's.

    The BGR image OpenCV encodes is painted directly, a band of rows at a time, so no
    full-frame index copy or second (RGB) image exists next to it.
    """
    h, w = index.shape
    bgr_lut = np.ascontiguousarray(lut[:, ::-1])
    bgr = np.empty((h, w, 3), dtype=np.uint8)
    rows = max(1, _LUT_STEP // max(w, 1))
    for r0 in range(0, h, rows):
        np.take(bgr_lut, index[r0:r0 + rows], axis=0, out=bgr[r0:r0 + rows])
    ok, buf = opencv().imencode(".png", bgr)
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise ValueError("cv2.imencode failed")
    return buf.tobytes()


# -- the fast path for flat-colour masks ---------------------------------------------------
#
# Masks are a few flat colours. With the PNG "SUB" filter (each byte minus the byte one pixel
# to its left) such a row is zeros except where the colour changes, which is why CVAT's
# encoder uses it. Both directions below work on that form directly:
#
# * encoding is one numpy subtraction and ISA-L's deflate (``isal``), ~5x faster than
#   ``cv2.imencode`` at a similar size; the pixels are the same, the bytes are not CVAT's
#   (``compat="cvat"`` keeps :func:`encode_rgb_png` for that);
# * decoding inflates the rows and reads the colour *changes* straight from the non-zero
#   filtered bytes, giving runs of equal pixels per row without reconstructing every pixel.
#   Only 8-bit gray/RGB, non-interlaced PNGs whose rows use the NONE or SUB filter take it
#   (CVAT's, OpenCV's and smaskd's own masks); anything else returns None and the caller
#   uses :func:`decode_png`, so every other PNG keeps OpenCV's behaviour and errors.

_CHUNK_HEAD = struct.Struct(">I4s")
_CRC = struct.Struct(">I")
#: Ancillary chunks that change decoded pixels in OpenCV (tRNS adds an alpha channel).
_PIXEL_ANCILLARY = frozenset({b"tRNS"})
FAST_PNG_LEVEL = 1  # ISA-L level: 0 is ~10 % faster and ~1.7x larger; 2-3 gain nothing here


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = _zlib.crc32(body, _zlib.crc32(kind))
    return _CHUNK_HEAD.pack(len(body), kind) + body + _CRC.pack(crc)


def encode_rgb_png_fast(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG (colour type 2) of a contiguous HxWx3 RGB array: SUB rows, ISA-L deflate.

    The pixels equal :func:`encode_rgb_png`'s (the format promises pixels, not bytes), and
    the bytes are reproducible for the same ``isal`` build.
    """
    h, w, c = rgb.shape
    if c != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.shape} {rgb.dtype}")
    rows = np.ascontiguousarray(rgb).reshape(h, 3 * w)
    filtered = np.empty((h, 3 * w + 1), dtype=np.uint8)
    filtered[:, 0] = 1  # SUB
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # uint8: wraps mod 256
    idat = _deflate.compress(filtered, FAST_PNG_LEVEL)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return _PNG_MAGIC + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encode_indexed_rgb_pngs(index: np.ndarray, luts: list[np.ndarray]) -> list[bytes]:
    """For each ``lut`` ((N, 3) uint8 RGB), the PNG of ``lut[index]``, without painting it.

    A SUB-filtered row is zero except where ``index`` changes, so the filtered rows are
    written directly from the change positions (found once for all ``luts``) and deflated;
    the RGB image itself never exists. Same pixels and bytes as
    ``encode_rgb_png_fast(lut[index])``.
    """
    h, w = index.shape
    flat = np.ascontiguousarray(index).reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    change = change[change % w != 0]  # a row's first pixel is written whole, below
    cur, prev = flat[change], flat[change - 1]
    row, x = np.divmod(change, w)
    at = (row * (3 * w + 1) + 1 + 3 * x)[:, None] + np.arange(3)
    first = flat[::w]
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    out = []
    for lut in luts:
        filtered = np.zeros((h, 3 * w + 1), dtype=np.uint8)
        filtered[:, 0] = 1  # SUB
        filtered[:, 1:4] = lut[first]
        filtered.reshape(-1)[at] = lut[cur] - lut[prev]  # uint8: wraps mod 256
        idat = _deflate.compress(filtered, FAST_PNG_LEVEL)
        del filtered  # before the next table's: one 3-bytes-a-pixel buffer at a time
        out.append(_PNG_MAGIC + ihdr + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return out


class RowRuns:
    """A decoded 8-bit gray or RGB image as runs of equal pixels within each row.

    ``starts`` are ascending row-major pixel indices (every row start is one); run ``i`` covers
    ``starts[i] .. starts[i+1]-1``. ``values`` is the gray value, or ``R<<16 | G<<8 | B``.
    """

    __slots__ = ("colour", "height", "starts", "values", "width")

    def __init__(self, height: int, width: int, starts: np.ndarray, values: np.ndarray,
                 colour: bool) -> None:
        self.height, self.width = height, width
        self.starts, self.values, self.colour = starts, values, colour

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts, append=self.height * self.width)

    def expand(self, run_values: np.ndarray) -> np.ndarray:
        """The HxW image whose run ``i`` holds ``run_values[i]``."""
        return np.repeat(run_values, self.lengths()).reshape(self.height, self.width)


def _idat(data: bytes, color_type: int) -> bytes | None:
    """The concatenated IDAT payload, or None for anything the fast path leaves to OpenCV."""
    view = memoryview(data)
    pos, n, parts = 8, len(data), []
    while True:
        if pos + 12 > n:
            return None
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        end = pos + 8 + length
        if end + 4 > n:
            return None
        critical = not kind[0] & 0x20
        if critical or kind in _PIXEL_ANCILLARY:
            body = view[pos + 8:end]
            if _zlib.crc32(body, _zlib.crc32(kind)) != _CRC.unpack_from(data, end)[0]:
                return None  # OpenCV reports the corruption
            if kind == b"IDAT":
                parts.append(body)
            elif kind == b"IEND":
                return b"".join(parts)
            elif kind == b"IHDR":
                if pos != 8:
                    return None
            elif not (kind == b"PLTE" and color_type == 2):  # a suggested palette: no effect
                return None
        pos = end + 4


#: Deflate's largest ratio (zlib's FAQ: a 258-byte match in as little as 2 bits).
_DEFLATE_MAX_RATIO = 1032
#: Below this worst case one call inflates into a buffer sized in advance.
_ONE_SHOT_BYTES = 1 << 26


def _inflate(compressed: bytes, expected: int) -> bytes | None:
    """The inflated stream, or None when it is corrupt, truncated or longer than ``expected``
    would allow (bounded: no inflation bombs).

    A stream short enough that even deflate's best ratio stays within ``_ONE_SHOT_BYTES``
    (any 640x480 mask here) is inflated in one call into a buffer of the expected size:
    the streaming, size-capped call grows its output in blocks and joins them, a copy of
    every row that cost ~10 % of decoding a mask.
    """
    try:
        if len(compressed) * _DEFLATE_MAX_RATIO <= max(expected, _ONE_SHOT_BYTES):
            return _deflate.decompress(compressed, bufsize=expected + 1)  # raises if truncated
        inflater = _deflate.decompressobj()
        raw = inflater.decompress(compressed, expected + 1)
    except Exception:  # zlib.error / isal error: corrupt stream, let OpenCV say so
        return None
    return raw if inflater.eof else None


def decode_runs(data: bytes, where: str = "PNG") -> RowRuns | None:
    """Runs of an 8-bit gray/RGB PNG with NONE/SUB rows; None when the PNG needs OpenCV.

    Raises what :func:`read_png_header` raises (not a PNG, too many pixels); any other
    problem (corrupt data, other filters, interlacing, 16 bits, palettes, alpha) gives None,
    so that :func:`decode_png` decodes the file or reports it in its own words.
    """
    width, height, depth, ctype = read_png_header(data, where)
    if depth != 8 or ctype not in (0, 2) or data[26:29] != b"\0\0\0":
        return None  # compression/filter method 0, no interlacing
    bpp = 1 if ctype == 0 else 3
    compressed = _idat(data, ctype)
    if compressed is None:
        return None
    rowlen = 1 + bpp * width
    expected = height * rowlen
    raw = _inflate(compressed, expected)
    if raw is None or len(raw) != expected:
        return None
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, rowlen)
    kinds = rows[:, 0]
    if kinds.max() > 1:
        return None  # UP/AVG/PAETH rows: OpenCV
    plain = np.flatnonzero(kinds == 0)
    if plain.size:  # NONE rows hold colours: turn them into SUB-style differences
        rows = rows.copy()
        px = rows[plain, 1:]
        rows[plain, 1 + bpp:] = px[:, bpp:] - px[:, :-bpp]
    return _runs_from_sub_rows(rows, height, width, bpp)


def decode_runs_opencv(data: bytes, where: str = "PNG") -> RowRuns | None:
    """Runs of a PNG the fast path leaves to OpenCV (palettes, Paeth rows, interlacing),
    decoded by OpenCV; None for 16-bit or gray+alpha PNGs, or when the runs are many.

    VOC-style paletted masks take this way. Turning the decoded image into runs a band of
    rows at a time keeps a 16384² frame within a worker's memory: the per-pixel path packs
    colours into int32 and indexes them with intp, ~20 bytes a pixel (5 GiB at 16384²).
    """
    header = read_png_header(data, where)
    if header.bit_depth == 16 or header.color_type == 4:
        return None  # their values need decode.py's per-pixel rules
    img = _opencv_decode(data, where)  # BGR(A): packed below without an RGB copy
    if img.dtype != np.uint8:
        return None
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    h, w = img.shape[:2]
    colour = img.ndim == 3
    most = max(_DENSE_WORDS, h * w // 16)  # a flat mask has far fewer; noise: per pixel
    rows = max(1, _LUT_STEP // max(w, 1))
    starts, values, total = [], [], 0
    for r0 in range(0, h, rows):
        band = img[r0:r0 + rows]
        if colour:
            packed = band[..., 2].astype(np.int32) << 16  # R<<16 | G<<8 | B, alpha dropped
            packed |= band[..., 1].astype(np.int32) << 8
            packed |= band[..., 0]
        else:
            packed = band
        flat = packed.reshape(-1)
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        at = np.union1d(change, np.arange(band.shape[0], dtype=np.int64) * w)
        total += at.size
        if total > most:
            return None
        starts.append(at + r0 * w)
        values.append(flat[at].astype(np.int64))
    return RowRuns(h, w, np.concatenate(starts), np.concatenate(values), colour)


#: Below this many non-zero 8-byte words the run arrays stay small (tens of MB) whatever
#: the image; above it, only images whose bytes are mostly zero differences take the runs.
_DENSE_WORDS = 1 << 15


def _runs_from_sub_rows(rows: np.ndarray, height: int, width: int, bpp: int) -> RowRuns | None:
    rowlen = rows.shape[1]
    flat = rows.reshape(-1)
    # non-zero bytes, found 8 at a time: masks are mostly zero differences
    n8 = flat.size // 8 * 8
    words = np.flatnonzero(flat[:n8].view(np.uint64) != 0)  # (bool: numpy's fast nonzero)
    if words.size > max(_DENSE_WORDS, flat.size // 32):
        # Not a flat mask (noise, a checkerboard): the per-run arrays would cost ~160 bytes
        # a run, gigabytes for a small hostile PNG. OpenCV decodes it in bounded memory.
        return None
    # (Each step below is a single numpy call on a few thousand elements: the variants
    # kept are the cheapest measured, e.g. a stable sort merges two sorted arrays.)
    at = np.flatnonzero(flat[:n8].reshape(-1, 8)[words].reshape(-1) != 0)
    pos = words[at >> 3] * 8 + (at & 7)  # ascending
    tail = np.flatnonzero(flat[n8:])
    if tail.size:
        pos = np.concatenate((pos, tail + n8))
    row = pos // rowlen
    # a row's filter-type byte (column 0) is not a pixel: it stands for the row's first
    # pixel, which starts a run anyway
    pixel = row * width + np.maximum(pos - row * rowlen - 1, 0) // bpp
    starts = np.concatenate((pixel, np.arange(height, dtype=np.int64) * width))
    starts.sort(kind="stable")
    keep = np.empty(starts.size, dtype=bool)
    keep[0] = True
    np.not_equal(starts[1:], starts[:-1], out=keep[1:])
    starts = starts[keep]
    r = starts // width
    base = starts * bpp + r * (rowlen - width * bpp) + 1  # = r * rowlen + 1 + x * bpp
    # each run's colour = sum of the differences since its row began (between changes the
    # differences are zero), mod 256: a cumulative sum restarted at every row, in uint8
    # (which wraps mod 256). Colour runs are summed as little-endian B, G, R, 0 bytes, so
    # that the bytes of a run read as one word are R<<16 | G<<8 | B, and rows are gathered
    # as words.
    k, word = (4, np.dtype("<u4")) if bpp == 3 else (1, np.dtype(np.uint8))
    delta = np.zeros((starts.size, k), dtype=np.uint8)
    for c in range(bpp):
        delta[:, bpp - 1 - c] = flat[base + c]
    total = np.cumsum(delta, axis=0, dtype=np.uint8)
    sums = total.view(word).reshape(-1)
    first = np.searchsorted(starts, np.arange(1, height, dtype=np.int64) * width)
    before = np.zeros(height, dtype=word)  # the sums up to each row's first run
    before[1:] = sums[first - 1]
    total -= before[r].view(np.uint8).reshape(-1, k)
    values = sums.astype(np.int64)
    return RowRuns(height, width, starts, values, bpp == 3)
