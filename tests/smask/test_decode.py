"""Mask PNG decoding (every PNG kind) and the loader's layout rules, on synthetic archives."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import cv2
import numpy as np
import pytest

from smaskd.errors import InputError
from smaskd.geometry.instances import is_placeholder
from smaskd.smask.colormap import voc_color
from smaskd.smask.decode import VOID, decode_class_png, decode_object_png
from smaskd.smask.labelmap import parse_labelmap
from smaskd.smask.load import load_mask_zip


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png(pixels: np.ndarray, ctype: int, depth: int = 8, plte: list | None = None,
        trns: bytes | None = None) -> bytes:
    """A minimal PNG writer (filter 0) for the kinds OpenCV cannot write."""
    h, w = pixels.shape[:2]
    dtype = ">u2" if depth == 16 else "u1"
    raw = b"".join(b"\0" + pixels[y].astype(dtype).tobytes() for y in range(h))
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte is not None:
        out += _chunk(b"PLTE", b"".join(bytes(c) for c in plte))
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def rgb_png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1].astype(np.uint8)))[1].tobytes()


COLORS = {(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2}


def test_gray_index_png() -> None:
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    out = decode_class_png(png(idx, 0), "c.png", COLORS, 3)
    assert out.dtype == np.int32 and out.tolist() == idx.tolist()


def test_gray_index_beyond_labelmap_names_value_count_and_first_pixel() -> None:
    idx = np.array([[0, 1, 2], [7, 1, 7]], np.uint8)
    with pytest.raises(InputError) as exc:
        decode_class_png(png(idx, 0), "SegmentationClass/c.png", COLORS, 3)
    msg = str(exc.value)
    assert msg.startswith("SegmentationClass/c.png: undeclared label index 7: 2 pixel(s)")
    assert "first at (x=0, y=1)" in msg


def test_void_255_is_void_unless_declared() -> None:
    idx = np.array([[255, 1]], np.uint8)
    assert decode_class_png(png(idx, 0), "c", COLORS, 3).tolist() == [[VOID, 1]]
    assert decode_class_png(png(idx, 0), "c", COLORS, 256).tolist() == [[255, 1]]
    rgb = np.array([[[224, 224, 192], [255, 0, 0]]], np.uint8)
    assert decode_class_png(rgb_png(rgb), "c", COLORS, 3).tolist() == [[VOID, 1]]
    declared = {**COLORS, (224, 224, 192): 2}
    assert decode_class_png(rgb_png(rgb), "c", declared, 3).tolist() == [[2, 1]]
    # an 'ignored' label (void_label) takes undeclared void, by index and by colour
    assert decode_class_png(png(idx, 0), "c", COLORS, 3, 2).tolist() == [[2, 1]]
    assert decode_class_png(rgb_png(rgb), "c", COLORS, 3, 2).tolist() == [[2, 1]]
    assert decode_class_png(png(idx, 0), "c", COLORS, 256, 2).tolist() == [[255, 1]]


def test_rgb_lookup_and_undeclared_colour() -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)
    rgb[1, 2] = (0, 255, 0)
    assert decode_class_png(rgb_png(rgb), "c", COLORS, 3).tolist() == [[0, 1, 0], [0, 0, 2]]
    rgb[1, 0] = (1, 2, 3)
    with pytest.raises(InputError, match=r"undeclared colour \(1, 2, 3\): 1 pixel\(s\), first at "
                                         r"\(x=0, y=1\)"):
        decode_class_png(rgb_png(rgb), "c", COLORS, 3)


def test_rgba_alpha_is_ignored() -> None:
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)
    rgba[0, 1] = (0, 255, 0, 17)
    data = cv2.imencode(".png", rgba[:, :, [2, 1, 0, 3]])[1].tobytes()
    assert decode_class_png(data, "c", COLORS, 3).tolist() == [[1, 2]]


def test_paletted_png_uses_palette_colours_not_indices() -> None:
    idx = np.array([[5, 9]], np.uint8)
    plte = [(0, 0, 0)] * 16
    plte[5], plte[9] = (0, 255, 0), (255, 0, 0)
    for trns in (None, b"\xff" * 16):
        data = png(idx, 3, plte=plte, trns=trns)
        assert decode_class_png(data, "c", COLORS, 3).tolist() == [[2, 1]]


def test_gray_alpha_is_the_colour_ggg() -> None:
    ga = np.array([[[128, 255], [0, 10]]], np.uint8)  # (gray, alpha) per pixel
    data = png(ga, 4)
    assert decode_object_png(data, "o").tolist() == [[7, 0]]  # (128,128,128) = VOC id 7
    with pytest.raises(InputError, match=r"undeclared colour \(128, 128, 128\)"):
        decode_class_png(data, "c", COLORS, 3)


def test_16bit_gray_is_not_wrapped() -> None:
    idx = np.array([[300, 1]], np.uint16)
    data = cv2.imencode(".png", idx)[1].tobytes()
    assert decode_class_png(data, "c", COLORS, 301).tolist() == [[300, 1]]
    with pytest.raises(InputError, match="undeclared label index 300.*16-bit"):
        decode_class_png(data, "c", COLORS, 3)  # CVAT would read 44
    assert decode_object_png(data, "o").tolist() == [[300, 1]]


def test_16bit_colour_must_be_exact() -> None:
    rgb16 = np.zeros((1, 2, 3), np.uint16)
    rgb16[0, 0] = (65535, 0, 0)
    data = cv2.imencode(".png", rgb16[:, :, ::-1])[1].tobytes()
    assert decode_class_png(data, "c", COLORS, 3).tolist() == [[1, 0]]
    rgb16[0, 1] = (300, 0, 0)
    data = cv2.imencode(".png", rgb16[:, :, ::-1])[1].tobytes()
    with pytest.raises(InputError, match="16-bit colour"):
        decode_class_png(data, "c", COLORS, 3)


def test_object_png_voc_palette() -> None:
    rgb = np.array([[voc_color(0), voc_color(1), voc_color(255)]], np.uint8)
    assert decode_object_png(rgb_png(rgb), "o").tolist() == [[0, 1, 255]]
    rgb[0, 0] = (23, 190, 207)
    with pytest.raises(InputError, match=r"instance colour \(23, 190, 207\).*VOC palette"):
        decode_object_png(rgb_png(rgb), "SegmentationObject/x.png")


# -- through load_mask_zip -----------------------------------------------------------------


def zip_bytes(files: dict[str, bytes | str]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    buf.seek(0)
    return buf


LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:255,0,0::\ntree:0,255,0::\n"


def pair(cls_idx: np.ndarray, obj_idx: np.ndarray) -> tuple[bytes, bytes]:
    return png(cls_idx.astype(np.uint8), 0), png(obj_idx.astype(np.uint8), 0)


def test_top_folder_macosx_and_unlisted_pngs() -> None:
    c, o = pair(np.array([[1, 1, 0]]), np.array([[1, 1, 0]]))
    ds = load_mask_zip(zip_bytes({
        "__MACOSX/._x": b"junk",
        "exp/labelmap.txt": LABELMAP,
        "exp/ImageSets/Segmentation/train.txt": "a\nempty\n",
        "exp/SegmentationClass/a.png": c, "exp/SegmentationObject/a.png": o,
        "exp/SegmentationClass/extra/b.png": c, "exp/SegmentationObject/extra/b.png": o,
    }))
    assert [(i.id, i.subset, len(i.annotations)) for i in ds.items] == [
        ("a", "train", 1), ("empty", "train", 0), ("extra/b", "default", 1)]
    assert any("'default'" in w and "extra/b" in w for w in ds.warnings)


def test_no_lists_and_no_pngs_is_an_error() -> None:
    with pytest.raises(InputError, match="no ImageSets/Segmentation"):
        load_mask_zip(zip_bytes({"labelmap.txt": LABELMAP, "readme.txt": "hi"}))


def test_main_lists_are_a_fallback_and_class_lists_skipped() -> None:
    c, o = pair(np.array([[2]]), np.array([[1]]))
    ds = load_mask_zip(zip_bytes({
        "labelmap.txt": LABELMAP,
        "ImageSets/Main/val.txt": "a\n", "ImageSets/Main/car_val.txt": "a  1\n",
        "SegmentationClass/a.png": c, "SegmentationObject/a.png": o,
    }))
    assert [(i.id, i.subset) for i in ds.items] == [("a", "val")]
    assert any("ImageSets/Main" in w for w in ds.warnings)


def test_list_file_bom_comments_and_duplicates() -> None:
    ds = load_mask_zip(zip_bytes({"ImageSets/Segmentation/t.txt": "\ufeffa\n# c\n\n b \na\n"}))
    assert [i.id for i in ds.items] == ["a", "b"]


def test_user_labelmap_overrides_and_duplicate_colour_last_wins() -> None:
    rgb = np.array([[(0, 255, 0), (0, 0, 0)]], np.uint8)
    obj = np.array([[voc_color(1), voc_color(0)]], np.uint8)
    files = {"labelmap.txt": LABELMAP, "ImageSets/Segmentation/d.txt": "a\n",
             "SegmentationClass/a.png": rgb_png(rgb), "SegmentationObject/a.png": rgb_png(obj)}
    user = parse_labelmap("background:0,0,0::\nx:0,255,0::\ny:0,255,0::\n")
    ds = load_mask_zip(zip_bytes(files), labelmap=user)
    ann = ds.items[0].annotations[0]
    assert ds.labels[ann.label].name == "y"
    assert any("given labelmap" in w for w in ds.warnings)


def test_labelmap_error_names_the_line() -> None:
    with pytest.raises(InputError, match=r"labelmap.txt:3"):
        load_mask_zip(zip_bytes({"labelmap.txt": "# h\nbackground:0,0,0::\ncar:1,2\n",
                                 "ImageSets/Segmentation/d.txt": ""}))


def test_dataset_meta_json() -> None:
    meta = '{"label_map": {"0": "bg", "1": "thing"}, "segmentation_colors": [[0,0,0],[9,9,9]]}'
    rgb = np.array([[(9, 9, 9), (0, 0, 0)]], np.uint8)
    obj = np.array([[voc_color(1), voc_color(0)]], np.uint8)
    ds = load_mask_zip(zip_bytes({
        "dataset_meta.json": meta, "labelmap.txt": "broken line\n",
        "ImageSets/Segmentation/d.txt": "a\n",
        "SegmentationClass/a.png": rgb_png(rgb), "SegmentationObject/a.png": rgb_png(obj)}))
    assert [lab.name for lab in ds.labels] == ["bg", "thing"]
    assert ds.labels[ds.items[0].annotations[0].label].name == "thing"


def test_majority_class_background_instance_and_placeholders() -> None:
    cls = np.array([[1, 1, 1, 2, 0, 0, 2]])
    obj = np.array([[1, 1, 2, 2, 4, 4, 5]])
    c, o = pair(cls, obj)
    ds = load_mask_zip(zip_bytes({"labelmap.txt": LABELMAP, "ImageSets/Segmentation/d.txt": "a\n",
                                  "SegmentationClass/a.png": c, "SegmentationObject/a.png": o}))
    anns = ds.items[0].annotations
    real = [(a.group, ds.labels[a.label].name) for a in anns if not is_placeholder(a)]
    # instance 2: one car px, one tree px -> tie -> larger index (tree); 4 on background: dropped
    assert real == [(1, "car"), (2, "tree"), (5, "tree")]
    assert [a.group for a in anns if is_placeholder(a)] == [3, 4]
    assert any("majority" in w for w in ds.warnings)
    assert any("instance 4" in w and "dropped" in w for w in ds.warnings)


def test_object_only_and_size_mismatch_are_errors() -> None:
    c, o = pair(np.array([[1, 1]]), np.array([[1, 1]]))
    with pytest.raises(InputError, match="SegmentationClass is missing"):
        load_mask_zip(zip_bytes({"labelmap.txt": LABELMAP, "ImageSets/Segmentation/d.txt": "a\n",
                                 "SegmentationObject/a.png": o}))
    c2, _ = pair(np.array([[1, 1, 1]]), np.array([[1, 1, 1]]))
    with pytest.raises(InputError, match="mask sizes differ"):
        load_mask_zip(zip_bytes({"labelmap.txt": LABELMAP, "ImageSets/Segmentation/d.txt": "a\n",
                                 "SegmentationClass/a.png": c2, "SegmentationObject/a.png": o}))


def test_image_sizes_and_file_names_from_jpegimages() -> None:
    jpg = cv2.imencode(".jpg", np.zeros((7, 11, 3), np.uint8))[1].tobytes()
    ds = load_mask_zip(zip_bytes({"ImageSets/Segmentation/d.txt": "sub/a\n",
                                  "JPEGImages/sub/a.JPG": jpg}))
    item = ds.items[0]
    assert (item.height, item.width, item.image_path) == (7, 11, "JPEGImages/sub/a.JPG")


def test_members_match_the_id_exactly_and_images_any_extension_case() -> None:
    """Members are looked up by name: a case-folded match is another item's PNG; of an item's
    images (extension in any case), the first in name order is its image."""
    c, o = pair(np.array([[1]]), np.array([[1]]))
    jpg = cv2.imencode(".jpg", np.zeros((3, 4, 3), np.uint8))[1].tobytes()
    big = cv2.imencode(".png", np.zeros((5, 6, 3), np.uint8))[1].tobytes()
    ds = load_mask_zip(zip_bytes({
        "labelmap.txt": LABELMAP, "ImageSets/Segmentation/d.txt": "a\nA\nb\nB\n._c\n",
        "SegmentationClass/A.png": c, "SegmentationObject/A.png": o,
        "JPEGImages/b.jpg": jpg, "JPEGImages/b.PNG": big, "JPEGImages/B.tiff": b"x",
        "JPEGImages/._c.jpg": jpg,
    }))
    got = [(i.id, len(i.annotations), i.image_path, i.height) for i in ds.items]
    assert got == [("a", 0, None, None), ("A", 1, None, 1), ("b", 0, "JPEGImages/b.PNG", 5),
                   ("B", 0, "JPEGImages/B.tiff", None), ("._c", 0, None, None)]
