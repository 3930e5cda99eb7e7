"""The fast PNG path for flat masks against OpenCV, pixel for pixel (Hypothesis).

``decode_runs`` must give OpenCV's pixels for every PNG it accepts and decline (None) the
ones it does not handle; the fast encoders must give PNGs OpenCV reads back exactly.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smaskd import pngio
from smaskd.errors import InputError
from smaskd.geometry.instances import object_instances, object_instances_runs
from smaskd.pngio import (
    decode_png,
    decode_runs,
    encode_indexed_rgb_pngs,
    encode_rgb_png,
    encode_rgb_png_fast,
)
from smaskd.smask.decode import class_runs, decode_class_png, decode_object_png, object_runs
from tests.conftest import run_cli


@st.composite
def flat_images(draw, channels=(1, 3)):
    """Few colours in rectangles, as masks are; sometimes noise, to stress every byte."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    c = draw(st.sampled_from(channels))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (draw(st.integers(1, 6)), c), dtype=np.uint8)
    index = np.zeros((h, w), np.intp)
    for _ in range(draw(st.integers(0, 6))):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        index[y0:y0 + rng.integers(1, h + 1), x0:x0 + rng.integers(1, w + 1)] = \
            rng.integers(0, len(palette))
    img = palette[index]
    if draw(st.booleans()) and draw(st.booleans()):
        img = rng.integers(0, 256, img.shape, dtype=np.uint8)
    return img[:, :, 0] if c == 1 else img


def packed(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img.astype(np.int64)
    v = img.astype(np.int64)
    return (v[..., 0] << 16) | (v[..., 1] << 8) | v[..., 2]


def cv2_png(img: np.ndarray, flt: int | None = None) -> bytes:
    bgr = img if img.ndim == 2 else np.ascontiguousarray(img[:, :, ::-1])
    params = [] if flt is None else [cv2.IMWRITE_PNG_FILTER, flt]
    return cv2.imencode(".png", bgr, params)[1].tobytes()


@settings(max_examples=150, deadline=None)
@given(flat_images(), st.sampled_from([None, cv2.IMWRITE_PNG_FILTER_NONE,
                                       cv2.IMWRITE_PNG_FILTER_SUB]))
def test_runs_equal_opencv_for_sub_and_none_rows(img, flt):
    data = cv2_png(img, flt)
    runs = decode_runs(data)
    assert runs is not None
    assert runs.colour == (img.ndim == 3)
    assert np.array_equal(runs.expand(runs.values), packed(decode_png(data)))
    assert np.array_equal(runs.expand(runs.values), packed(img))
    assert np.all(np.diff(runs.starts) > 0) and runs.starts[0] == 0


@settings(max_examples=60, deadline=None)
@given(flat_images(channels=(3,)))
def test_fast_encoders_give_the_pixels_opencv_reads(img):
    data = encode_rgb_png_fast(img)
    assert np.array_equal(decode_png(data), img)
    assert np.array_equal(decode_png(encode_rgb_png(img)), img)
    runs = decode_runs(data)
    assert runs is not None and np.array_equal(runs.expand(runs.values), packed(img))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_indexed_encoder_equals_painting_then_encoding(h, w, n, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, (h, w)).astype(np.uint8 if n <= 256 else np.uint16)
    index[:, : w // 2] = index[0, 0]  # flat runs and changes both
    luts = [rng.integers(0, 256, (n, 3), dtype=np.uint8) for _ in range(2)]
    for lut, data in zip(luts, encode_indexed_rgb_pngs(index, luts)):
        assert data == encode_rgb_png_fast(lut[index])
        assert np.array_equal(decode_png(data), lut[index])


def test_other_pngs_are_left_to_opencv():
    img = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    assert decode_runs(cv2_png(img, cv2.IMWRITE_PNG_FILTER_PAETH)) is None
    assert decode_runs(cv2_png(img, cv2.IMWRITE_PNG_FILTER_UP)) is None
    assert decode_runs(cv2.imencode(".png", np.zeros((4, 4), np.uint16))[1].tobytes()) is None
    rgba = cv2.imencode(".png", np.zeros((4, 4, 4), np.uint8))[1].tobytes()
    assert decode_runs(rgba) is None
    good = cv2_png(img)
    corrupt = bytearray(good)
    corrupt[45] ^= 0xFF  # inside IDAT: the CRC no longer matches
    assert decode_runs(bytes(corrupt)) is None
    assert decode_runs(good[:-20]) is None  # truncated


def _chunked(data: bytes, extra: bytes) -> bytes:
    """``data`` with one more chunk before IEND."""
    return data[:-12] + extra + data[-12:]


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def test_chunks_that_change_pixels_decline_and_text_does_not():
    img = np.zeros((3, 3, 3), np.uint8)
    data = cv2_png(img)
    assert decode_runs(_chunked(data, _chunk(b"tEXt", b"k\0v"))) is not None
    assert decode_runs(_chunked(data, _chunk(b"tRNS", b"\0\0\0\0\0\0"))) is None
    assert decode_runs(_chunked(data, _chunk(b"QUUX", b""))) is None  # unknown critical


def test_header_errors_are_the_same_as_opencv_path():
    with pytest.raises(InputError, match="not a PNG"):
        decode_runs(b"GIF89a" + b"\0" * 40, "x.png")


def _png_of_stream(stream: bytes, w: int = 3, h: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", stream)
            + _chunk(b"IEND", b""))


@pytest.mark.parametrize("one_shot", [True, False], ids=["one-shot", "streamed"])
def test_inflation_is_bounded_by_the_header(monkeypatch, one_shot):
    """A stream that inflates past the rows the header announces is declined, not read;
    a truncated one too. Short streams are inflated in one call (their worst case is
    small), long ones by the size-capped stream: both paths decide alike."""
    if not one_shot:
        monkeypatch.setattr(pngio, "_ONE_SHOT_BYTES", 0)
    rows = b"".join(b"\1" + b"\0" * 9 for _ in range(1000))
    assert decode_runs(_png_of_stream(zlib.compress(rows))) is None
    good = zlib.compress(b"\1" + b"\7" * 9 + b"\1" + b"\0" * 9)
    runs = decode_runs(_png_of_stream(good))
    assert runs is not None and runs.values.tolist() == [0x070707, 0x0E0E0E, 0x151515, 0]
    assert runs.starts.tolist() == [0, 1, 2, 3]
    assert decode_runs(_png_of_stream(good[:-3])) is None  # no Adler-32: truncated
    assert decode_runs(_png_of_stream(good + b"\0")) is not None  # as zlib: the end is the end


COLORS = {(0, 0, 0): 0, (0, 255, 0): 1, (255, 0, 0): 2, (10, 20, 30): 3}
PALETTE = np.array(list(COLORS), dtype=np.uint8)
VOC = np.array([[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]], np.uint8)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**32 - 1),
       st.sampled_from([None, 0]))
def test_instances_from_runs_equal_instances_from_images(h, w, seed, background):
    rng = np.random.default_rng(seed)
    cls_idx = np.zeros((h, w), np.intp)
    obj_idx = np.zeros((h, w), np.intp)
    for _ in range(rng.integers(0, 7)):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        sl = (slice(y0, y0 + rng.integers(1, h + 1)), slice(x0, x0 + rng.integers(1, w + 1)))
        cls_idx[sl] = rng.integers(0, len(PALETTE))
        obj_idx[sl] = rng.integers(0, len(VOC))
    cls_png, obj_png = cv2_png(PALETTE[cls_idx]), cv2_png(VOC[obj_idx])
    names = ["background", "car", "person", "tree"]
    cls_r, obj_r = class_runs(cls_png, "c", COLORS, 4), object_runs(obj_png, "o")
    assert cls_r is not None and obj_r is not None
    cls, obj = decode_class_png(cls_png, "c", COLORS, 4), decode_object_png(obj_png, "o")
    assert np.array_equal(cls_r.expand(cls_r.values), cls)
    a = object_instances(obj, cls, background, names)
    b = object_instances_runs(obj_r, cls_r, background, names)
    assert (a.mixed, a.dropped) == (b.mixed, b.dropped)
    assert [(x.label, x.group, x.shape.left, x.shape.top) for x in a.annotations] == \
        [(x.label, x.group, x.shape.left, x.shape.top) for x in b.annotations]
    for x, y in zip(a.annotations, b.annotations):
        assert np.array_equal(x.shape.bitmap, y.shape.bitmap)


def test_undeclared_colour_message_is_the_same_on_both_paths():
    img = PALETTE[np.zeros((5, 6), np.intp)]
    img[2, 3] = (1, 2, 3)
    img[4, 0] = (1, 2, 3)
    sub = cv2_png(img)  # SUB rows: fast path
    paeth = cv2_png(img, cv2.IMWRITE_PNG_FILTER_PAETH)  # OpenCV path
    msgs = []
    for data in (sub, paeth):
        with pytest.raises(InputError) as exc:
            decode_class_png(data, "SegmentationClass/a.png", COLORS, 4)
        msgs.append(str(exc.value))
    assert msgs[0] == msgs[1]
    assert "undeclared colour (1, 2, 3): 2 pixel(s), first at (x=3, y=2)" in msgs[0]


def test_dense_changes_go_to_opencv_not_to_gigabytes_of_runs():
    """A 3000x3000 checkerboard is a 0.2 MB PNG with 9 M runs: the run decoder would need
    ~1.4 GB for it, so it declines and OpenCV decodes the same pixels in bounded memory."""
    board = (np.indices((3000, 3000)).sum(0) % 2 * 255).astype(np.uint8)
    rgb = np.dstack([board, board // 2, board])
    data = encode_rgb_png_fast(rgb)
    assert len(data) < 1 << 20
    assert decode_runs(data) is None
    assert np.array_equal(decode_png(data), rgb)


def test_an_import_of_fast_path_pngs_never_loads_opencv(tmp_path):
    """Loading cv2 was ~a quarter of a one-shot import's start-up; masks that take the fast
    path (CVAT's, OpenCV's, smaskd's own) need none of it, so the CLI never pays for it."""
    src = tmp_path / "in.json"
    src.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "f.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [2, 2, 20, 20], "segmentation": [[2, 2, 22, 2, 22, 22, 2, 22]]}],
        "categories": [{"id": 1, "name": "car"}]}))
    done = run_cli("export", src, "-o", tmp_path / "m.zip")
    assert done.returncode == 0, done.stderr
    code = ("import sys\nfrom pathlib import Path\nfrom smaskd.convert import import_file\n"
            f"import_file(Path({str(tmp_path / 'm.zip')!r}), Path({str(tmp_path / 'o.json')!r}))\n"
            "print('cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert json.loads((tmp_path / "o.json").read_text())["annotations"][0]["area"] == 400
