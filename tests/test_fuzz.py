"""Fuzzing the input boundary: whatever a dropped file holds, smaskd answers with an InputError.

The property of every test here: converting hostile or random input either succeeds or raises
an ``InputError`` (``UnsafeArchiveError`` and ``DataLossError`` included). A ``TypeError``,
``KeyError``, ``cv2.error``, ``MemoryError`` or an ``InternalError`` is a failure: the daemon
would report it as a bug instead of telling the user what is wrong with the file.

What is fuzzed, each end to end through the code path a worker runs (the unit-level fuzzers in
test_safezip, test_jsonload and test_readers cover the pieces on their own):

* annotation JSON: almost-valid COCO / Datumaro / LabelMe documents in which any field may be
  missing or of a wrong type, serialised, optionally mangled at the byte level, then loaded,
  detected, read **and exported** to a mask zip; random bytes through ``convert_file``;
* ``labelmap.txt``: random lines of names, colons, commas, signs, digits, BOMs and line ends;
* mask zips: byte-mutated and truncated valid archives, and random archive layouts (lists,
  labelmaps, ``dataset_meta.json``, top folders) read by ``load_mask_zip`` and written out;
* mask PNGs: every PNG colour type and bit depth (paletted with tRNS, gray+alpha, 1..16 bit),
  invalid combinations, random headers and random bodies, decoded as class and object masks.

Bounded for CI: about 15 s in all on two cores (``max_examples`` per test below); set
``SMASKD_FUZZ_SCALE`` to multiply the budgets for a long run by hand.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zipfile
import zlib
from typing import Any

import cv2
import numpy as np
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from smaskd.annotations.detect import read_annotation_doc
from smaskd.annotations.jsonload import load_json_bytes
from smaskd.annotations.write import write_annotations
from smaskd.convert import ConvertOptions, convert_file
from smaskd.errors import InputError, InternalError, SmaskdError
from smaskd.smask.colormap import voc_color
from smaskd.smask.export import export_dataset
from smaskd.smask.labelmap import LabelmapEntry, format_labelmap, parse_labelmap
from smaskd.smask.load import load_mask_zip

#: ``SMASKD_FUZZ_SCALE=20`` multiplies every example budget (a long fuzzing run by hand).
SCALE = float(os.environ.get("SMASKD_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(deadline=None, suppress_health_check=list(HealthCheck),
                    max_examples=max(1, int(examples * SCALE)))


def only_input_errors(func: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(...)``, or None when it refused the input with an ``InputError``."""
    try:
        result = func(*args, **kwargs)
    except InternalError:
        raise
    except SmaskdError as e:
        assert isinstance(e, InputError), f"input problem reported as {type(e).__name__}: {e}"
        assert e.message, f"{type(e).__name__} without a message"
        event(f"{func.__name__}: refused")  # --hypothesis-show-statistics: how deep inputs get
        return None
    event(f"{func.__name__}: ok")
    return result


#: The labels of the synthetic archives, and colours that mean something to the decoder:
#: declared, VOC instance colours, the VOC void colour, and one declared nowhere.
LABELMAP = "background:0,0,0::\ncat:255,0,0::\ndog:0,255,0::\n"
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), voc_color(1), voc_color(2), (224, 224, 192),
           (1, 2, 3)]


# ============================================================================ annotation JSON

#: Wrong-typed or out-of-range stand-ins for any field. Frame-like numbers stay either tiny or
#: far over the pixel limit, so no example allocates a large frame.
WRONG = st.sampled_from([
    None, True, False, 0, -1, 1.5, -0.0, 1e9, -1e9, 1e10, 2**31, 2**53 + 1, 10**30, 1e-320,
    "", "x", "8", "#ff0000", "polygon", [], [1], [[1, 2]], ["a", "b"], {}, {"a": 1},
])
COORD = st.one_of(st.integers(-4, 20), st.floats(-4, 20, allow_nan=False, width=32),
                  st.sampled_from([1e9, -1e9, 2**31, 99999.5, 1e-300, 5e-324, -0.0]))
SIZE = st.integers(1, 12)
NAME = st.sampled_from(["cat", "dog", "background", "a b", "Cat", "__ignore__", "x/y", "é"])
#: Image file names (item ids): mostly plain, some that must never become zip member names.
FILE_NAMES = st.sampled_from(["img{}.png", "img{}.png", "img{}.png", "sub/img{}.jpg",
                              "../img{}.png", "/img{}.png", "a\\img{}.png", "#img{}.png",
                              " img{}.png", "img\n{}.png", "C:img{}.png", ".png"])


@st.composite
def maybe(draw: Any, valid: st.SearchStrategy) -> Any:
    """Mostly the valid value, sometimes anything wrong: rare enough per field that about a
    third of the documents are entirely valid and most others are wrong in one place only,
    so examples get deep into the readers and the exporter instead of failing at the top."""
    return draw(WRONG) if draw(st.integers(0, 63)) == 1 else draw(valid)


def flat_points(min_pairs: int, max_pairs: int) -> st.SearchStrategy:
    return st.lists(st.tuples(COORD, COORD), min_size=min_pairs, max_size=max_pairs).map(
        lambda ps: [v for p in ps for v in p])


@st.composite
def rle_for(draw: Any, height: int, width: int) -> dict:
    """A COCO RLE (counts list or compressed string) of a random mask of this size."""
    mask = draw(st.lists(st.booleans(), min_size=height * width, max_size=height * width))
    arr = np.asarray(mask, dtype=np.uint8).reshape(height, width)
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(arr))
    if draw(st.booleans()):
        return {"counts": rle["counts"].decode(), "size": [height, width]}
    runs, flat, value, n = [], arr.reshape(-1, order="F"), 0, 0
    for v in flat.tolist():
        if v != value:
            runs.append(n)
            value, n = v, 0
        n += 1
    runs.append(n)
    return {"counts": runs, "size": [height, width]}


@st.composite
def coco_docs(draw: Any) -> Any:
    images, sizes = [], {}
    for i in range(draw(st.integers(0, 3))):
        h, w = draw(SIZE), draw(SIZE)
        sizes[i + 1] = (h, w)
        image = draw(st.fixed_dictionaries(
            {"id": maybe(st.just(i + 1)), "file_name": maybe(FILE_NAMES.map(
                lambda n, i=i: n.format(i)))}))
        if draw(st.integers(0, 7)):
            image.update(width=draw(maybe(st.just(w))), height=draw(maybe(st.just(h))))
        images.append(image)
    cats = [draw(st.fixed_dictionaries(
        {"id": maybe(st.just(c)), "name": maybe(st.just(name))},
        optional={"color": maybe(st.sampled_from([[255, 0, 0], "#00ff00", [0, 0, 0]]))}))
        for c, name in enumerate(draw(st.lists(NAME, max_size=3, unique=True)), start=1)]
    anns = []
    for a in range(draw(st.integers(0, 5))):
        image_id = draw(st.sampled_from(sorted(sizes) or [1]))
        h, w = sizes.get(image_id, (4, 4))
        seg = st.one_of(
            st.lists(flat_points(3, 6), min_size=1, max_size=2),
            st.just([]),
            rle_for(h, w),
        )
        anns.append(draw(st.fixed_dictionaries(
            {"id": maybe(st.just(a)), "image_id": maybe(st.just(image_id)),
             "category_id": maybe(st.integers(1, 3))},
            optional={"segmentation": maybe(seg), "bbox": maybe(flat_points(2, 2)),
                      "iscrowd": maybe(st.sampled_from([0, 1])),
                      "attributes": maybe(st.fixed_dictionaries({}, optional={
                          "rotation": maybe(COORD), "occluded": st.booleans()}))})))
    if draw(st.integers(0, 9)) == 0:  # a COCO results list
        return [{**a, "score": 0.5} for a in anns if isinstance(a, dict)] or [{"image_id": 1}]
    return {"images": images, "annotations": anns, "categories": cats}


@st.composite
def datumaro_docs(draw: Any) -> Any:
    names = draw(st.lists(NAME, max_size=3, unique=True))
    labels = [draw(st.fixed_dictionaries({"name": maybe(st.just(n))},
                                         optional={"parent": st.just("")})) for n in names]
    colormap = [draw(st.fixed_dictionaries({"label_id": maybe(st.just(i)),
                                            "r": maybe(st.integers(0, 255)),
                                            "g": maybe(st.integers(0, 255)),
                                            "b": maybe(st.integers(0, 255))}))
                for i in range(len(names)) if draw(st.booleans())]
    items = []
    for i in range(draw(st.integers(0, 3))):
        h, w = draw(SIZE), draw(SIZE)
        anns = []
        for a in range(draw(st.integers(0, 4))):
            kind = draw(maybe(st.sampled_from(
                ["polygon", "bbox", "ellipse", "mask", "points", "polyline", "label", "cuboid"])))
            anns.append(draw(st.fixed_dictionaries(
                {"id": maybe(st.just(a)), "type": st.just(kind)},
                optional={"label_id": maybe(st.integers(0, 3) | st.none()),
                          "group": maybe(st.integers(0, 2)), "z_order": maybe(st.integers(-1, 2)),
                          "points": maybe(flat_points(2, 5)), "bbox": maybe(flat_points(2, 2)),
                          "rle": maybe(rle_for(h, w) | rle_for(1, 2)),
                          "attributes": maybe(st.fixed_dictionaries(
                              {}, optional={"rotation": maybe(COORD)}))})))
        image = st.fixed_dictionaries({}, optional={"path": maybe(st.just(f"i{i}.jpg")),
                                                    "size": maybe(st.just([h, w]))})
        items.append(draw(st.fixed_dictionaries(
            {"id": maybe(st.sampled_from([f"i{i}", i, "dup"]) | FILE_NAMES.map(
                lambda n, i=i: n.format(i)[:-4]))},
            optional={"subset": maybe(st.sampled_from(["train", "val", ""])),
                      "image": maybe(image), "annotations": maybe(st.just(anns))})))
    categories = {"label": {"labels": draw(maybe(st.just(labels)))},
                  "mask": draw(maybe(st.just({"colormap": colormap})))}
    return {"categories": draw(maybe(st.just(categories))), "items": draw(maybe(st.just(items)))}


def _png_b64(draw: Any) -> str:
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    arr = np.asarray(draw(st.lists(st.integers(0, 1), min_size=h * w, max_size=h * w)), np.uint8)
    return base64.b64encode(cv2.imencode(".png", arr.reshape(h, w) * 255)[1].tobytes()).decode()


@st.composite
def labelme_docs(draw: Any) -> Any:
    shapes = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(maybe(st.sampled_from(
            ["polygon", "rectangle", "circle", "mask", "line", "linestrip", "point", "points"])))
        n = {"rectangle": 2, "circle": 2, "mask": 2, "line": 2, "point": 1}.get(str(kind), 3)
        pts = st.lists(st.lists(COORD, min_size=2, max_size=2), min_size=n, max_size=n)
        shapes.append(draw(st.fixed_dictionaries(
            {"label": maybe(NAME), "points": maybe(pts), "shape_type": st.just(kind)},
            optional={"group_id": maybe(st.integers(0, 2) | st.none()),
                      "mask": maybe(st.just(_png_b64(draw))), "flags": maybe(st.just({})),
                      "description": st.just("d")})))
    return draw(st.fixed_dictionaries(
        {"shapes": st.just(shapes)},
        optional={"imagePath": maybe(st.sampled_from(["a.jpg", "C:\\x\\b.png", ""])),
                  "imageHeight": maybe(SIZE), "imageWidth": maybe(SIZE), "version": st.just("5")}))


def mangle(draw: Any, data: bytes) -> bytes:
    """Sometimes damage the serialised JSON the way bad writers and disks do."""
    how = draw(st.sampled_from(["none", "none", "none", "truncate", "splice", "constant", "bom"]))
    if how == "none" or not data:
        return data
    pos = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:pos]
    if how == "splice":
        return data[:pos] + draw(st.binary(min_size=1, max_size=4)) + data[pos + 1:]
    if how == "constant":
        if draw(st.booleans()):
            return data.replace(b"1", b"NaN", 1)
        return data.replace(b"2", b"1e999", 1)
    return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + data


@fuzz(500)
@given(st.data())
def test_annotation_json_is_read_and_exported_or_refused(data: Any) -> None:
    doc = data.draw(st.one_of(coco_docs(), datumaro_docs(), labelme_docs()), label="doc")
    raw = mangle(data.draw, json.dumps(doc).encode())
    fmt = data.draw(st.sampled_from(["auto", "auto", "coco", "datumaro", "labelme"]))
    parsed = only_input_errors(load_json_bytes, raw, "fuzz.json")
    if parsed is None:
        assert raw != json.dumps(doc).encode(), "valid JSON was refused"
        return  # the mangled bytes were refused: fine
    dataset = only_input_errors(read_annotation_doc, parsed, fmt, "annotations/fuzz.json")
    if dataset is None:
        return
    compat = data.draw(st.sampled_from([None, "cvat"]))
    labelmap = data.draw(st.none() | st.lists(st.builds(
        LabelmapEntry, NAME, st.none() | st.sampled_from(PALETTE),
        st.lists(NAME, max_size=2).map(tuple)), max_size=4, unique_by=lambda e: e.name),
        label="labelmap")
    only_input_errors(export_dataset, dataset, io.BytesIO(), labelmap=labelmap, compat=compat)


@fuzz(200)
@given(st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"{", b"[", b"\xef\xbb\xbf{", b" \n["]),
       st.binary(max_size=300), st.sampled_from([".json", ".zip"]),
       st.sampled_from(["auto", "export", "import"]))
def test_random_bytes_through_convert_file(tmp_path_factory: Any, head: bytes, tail: bytes,
                                           ext: str, action: str) -> None:
    data = head + tail  # heads that steer the sniffer into each reader
    folder = tmp_path_factory.mktemp("fuzz")
    src = folder / f"in{ext}"
    src.write_bytes(data)
    only_input_errors(convert_file, src, folder / "out", action, ConvertOptions())
    assert [p.name for p in folder.iterdir()] in (["in" + ext], sorted(["in" + ext, "out"])), \
        "a failed conversion left a temp file behind"


# ============================================================================ labelmap.txt

LM_PIECES = st.sampled_from([
    "cat", "a b", "background", ":", ":", ":", ",", ",", "0", "255", "256", "-1", "+7", " 12 ",
    "1_0", "\u0661", "1.5", "", " ", "\t", "#", "\n", "\r\n", "\r", "\ufeff", "\x0b", "\u2028",
    "é", "part", "act",
])
LM_FIELD = LM_PIECES.filter(lambda p: not set(p) & set(":\r\n"))


@st.composite
def labelmap_texts(draw: Any) -> str:
    if draw(st.booleans()):
        return "".join(draw(st.lists(LM_PIECES, max_size=40)))
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        fields = [draw(st.lists(LM_FIELD, max_size=3).map("".join)) for _ in range(4)]
        if draw(st.integers(0, 3)):
            fields[1] = ",".join(str(draw(st.integers(-2, 300))) for _ in range(3))
        fields += [draw(st.sampled_from(["", "x"]))]
        count = 4 if draw(st.integers(0, 5)) != 3 else draw(st.sampled_from([1, 3, 5]))
        lines.append(":".join(fields[:count]))
    return draw(st.sampled_from(["", "\ufeff"])) + draw(st.sampled_from(["\n", "\r\n"])).join(lines)


@fuzz(400)
@given(labelmap_texts())
def test_labelmap_parses_consistently_or_names_the_line(text: str) -> None:
    try:
        entries = parse_labelmap(text, "labelmap.txt")
    except InternalError:
        raise
    except InputError as e:
        assert e.where and e.where.startswith("labelmap.txt:"), e.where  # names the line
        event("parse_labelmap: refused")
        return
    event("parse_labelmap: ok")
    names = [e.name for e in entries]
    assert len(set(names)) == len(names)
    for e in entries:
        assert e.color is None or (len(e.color) == 3 and all(0 <= c <= 255 for c in e.color))
    assert parse_labelmap(format_labelmap(entries)) == entries


# ============================================================================ mask zips

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(pixels: np.ndarray, ctype: int, depth: int, plte: bytes | None = None,
              trns: bytes | None = None) -> bytes:
    """Any PNG kind (filter 0), bit depths 1..16 included; ``pixels`` is HxWxC integers."""
    h, w = pixels.shape[:2]
    rows = []
    for y in range(h):
        values = pixels[y].reshape(-1)
        if depth < 8:
            bits = "".join(format(int(v) & ((1 << depth) - 1), f"0{depth}b") for v in values)
            bits += "0" * (-len(bits) % 8)
            line = int(bits, 2).to_bytes(len(bits) // 8, "big")
        else:
            line = values.astype(">u2" if depth == 16 else "u1").tobytes()
        rows.append(b"\0" + line)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if plte is not None:
        out += _chunk(b"PLTE", plte)
    if trns is not None:
        out += _chunk(b"tRNS", trns)
    return out + _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


@st.composite
def mask_pngs(draw: Any, h: int, w: int) -> bytes:
    """A small mask PNG of any kind, mostly with values that mean something to the decoder."""
    how = draw(st.sampled_from(["palette-rgb", "any-kind", "any-kind", "bad-combo", "random"]))
    if how == "random":  # a plausible header, then anything
        ihdr = struct.pack(">II", draw(st.sampled_from([w, 0, 70000, 2**31])),
                           draw(st.sampled_from([h, 0, 70000]))) + draw(st.binary(min_size=5,
                                                                                  max_size=5))
        return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + draw(st.binary(max_size=64)))
    # A few colours per image (mostly declared ones), so that some images decode entirely.
    colours = draw(st.lists(st.sampled_from(PALETTE), min_size=1, max_size=3))
    if how == "palette-rgb":  # what CVAT writes: RGB colours from the labelmap / VOC palette
        idx = draw(st.lists(st.sampled_from(colours), min_size=h * w, max_size=h * w))
        rgb = np.asarray(idx, np.uint8).reshape(h, w, 3)
        return cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))[1].tobytes()
    if how == "bad-combo":
        ctype, depth = draw(st.sampled_from([(3, 16), (2, 4), (4, 1), (6, 2), (1, 8), (0, 3)]))
    else:
        ctype = draw(st.sampled_from(sorted(_DEPTHS)))
        depth = draw(st.sampled_from(_DEPTHS[ctype]))
    top = (1 << depth) - 1
    channels = _CHANNELS.get(ctype, 1)
    n = h * w
    scale = 257 if depth == 16 else 1
    if ctype in (2, 6) and depth >= 8 and draw(st.integers(0, 7)):
        # colours that mean something: labelmap, VOC instance palette, void, undeclared
        rgb = np.asarray(draw(st.lists(st.sampled_from(colours), min_size=n,
                                       max_size=n))).reshape(n, 3) * scale
        if ctype == 6:
            alpha = np.asarray(draw(st.lists(st.sampled_from([0, top]), min_size=n, max_size=n)))
            rgb = np.concatenate([rgb, alpha[:, None]], axis=1)
        pixels = rgb.reshape(h, w, channels)
    else:
        values = st.sampled_from(draw(st.lists(st.sampled_from(sorted(
            {0, 1, 2, 3, 255 % (top + 1), top, top // 2, 257 % (top + 1)})), min_size=1,
            max_size=3)))
        pixels = np.asarray(draw(st.lists(values, min_size=n * channels,
                                          max_size=n * channels))).reshape(h, w, channels)
        if ctype == 4 and draw(st.booleans()):
            pixels[..., 0] = 0  # (0, 0, 0): the background colour, read through gray+alpha
    plte = trns = None
    if ctype == 3:
        n_colours = draw(st.integers(1, min(8, top + 1)))
        plte = b"".join(bytes(PALETTE[i % len(PALETTE)]) for i in range(n_colours))
        # sometimes an index past the end of the palette
        pixels = pixels % (n_colours + draw(st.integers(0, 1)))
        if draw(st.booleans()):
            trns = bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=n_colours)))
    return png_bytes(pixels, ctype, depth, plte, trns)


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _load_and_write(data: bytes, polygons: bool, fmt: str = "coco") -> None:
    dataset = only_input_errors(load_mask_zip, io.BytesIO(data))
    if dataset is not None:
        for item in dataset.items:
            assert item.height is None or item.height >= 1
        only_input_errors(write_annotations, dataset, io.BytesIO(), fmt=fmt, polygons=polygons)


@fuzz(400)
@given(st.data())
def test_mask_pngs_of_every_kind_decode_or_are_refused(data: Any) -> None:
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    entries = {"labelmap.txt": LABELMAP.encode(),
               "ImageSets/Segmentation/default.txt": b"a\n",
               "SegmentationClass/a.png": data.draw(mask_pngs(h, w), label="class png")}
    if data.draw(st.booleans()):
        oh, ow = data.draw(st.sampled_from([(h, w), (h, w), (h + 1, w)]))
        entries["SegmentationObject/a.png"] = data.draw(mask_pngs(oh, ow), label="object png")
    _load_and_write(_zip(entries), data.draw(st.booleans()),
                    data.draw(st.sampled_from(["coco", "datumaro"])))


def _valid_mask_zip(compression: int) -> bytes:
    cls = np.zeros((6, 8, 3), np.uint8)
    cls[1:4, 1:5] = (255, 0, 0)
    cls[4:6, 5:8] = (0, 255, 0)
    obj = np.zeros((6, 8, 3), np.uint8)
    obj[1:4, 1:5] = voc_color(1)
    obj[4:6, 5:8] = voc_color(2)
    enc = [cv2.imencode(".png", np.ascontiguousarray(a[:, :, ::-1]))[1].tobytes()
           for a in (cls, obj)]
    return _zip({"labelmap.txt": LABELMAP.encode(),
                 "ImageSets/Segmentation/default.txt": b"a\n",
                 "SegmentationClass/a.png": enc[0], "SegmentationObject/a.png": enc[1]},
                compression)


VALID_ZIPS = [_valid_mask_zip(zipfile.ZIP_STORED), _valid_mask_zip(zipfile.ZIP_DEFLATED)]


def test_the_unmutated_archives_load() -> None:
    """The fuzzers below start from archives that are valid, or they would test nothing."""
    for data in VALID_ZIPS:
        dataset = load_mask_zip(io.BytesIO(data))
        assert [len(i.annotations) for i in dataset.items] == [2]


@fuzz(400)
@given(st.sampled_from(VALID_ZIPS), st.lists(st.tuples(st.floats(0, 1), st.binary(min_size=1,
                                                                                 max_size=6)),
                                             min_size=1, max_size=3),
       st.one_of(st.none(), st.floats(0, 1)), st.booleans())
def test_mutated_mask_zips_load_or_are_refused(base: bytes, patches: list, cut: float | None,
                                              polygons: bool) -> None:
    data = bytearray(base)
    for where, patch in patches:
        pos = int(where * (len(data) - 1))
        data[pos:pos + len(patch)] = patch
    if cut is not None:
        data = data[: int(cut * len(data))]
    _load_and_write(bytes(data), polygons)


MEMBER_NAMES = st.sampled_from([
    "labelmap.txt", "dataset_meta.json", "class_names.txt", "ImageSets/Segmentation/default.txt",
    "ImageSets/Segmentation/my_train.txt", "ImageSets/Main/train.txt",
    "ImageSets/Main/cat_train.txt",
    "ImageSets/Action/x.txt", "SegmentationClass/a.png", "SegmentationObject/a.png",
    "SegmentationClass/b.png", "SegmentationObject/c.png", "JPEGImages/a.jpg", "JPEGImages/a.png",
    "__MACOSX/._a.png", "SegmentationClass/.DS_Store",
])


def wild(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Valid or wrong, half and half: for small documents, where every level should be hit."""
    return st.one_of(valid, WRONG)


META_NAMES = st.sampled_from(["cat", "dog", "part"])


def meta_docs() -> st.SearchStrategy:
    """Datumaro's ``dataset_meta.json`` (label_map or labels, colours, parts), often wrong."""
    names = st.lists(META_NAMES, min_size=1, max_size=3, unique=True)
    label_map = st.one_of(
        names.map(lambda ns: {str(i): n for i, n in enumerate(ns)}),
        st.dictionaries(st.sampled_from(["0", "1", "01", "-1", "x"]), maybe(META_NAMES),
                        max_size=3))
    rest = {
        "segmentation_colors": wild(st.lists(maybe(st.sampled_from(
            [[255, 0, 0], [0, 0, 0], [1, 2], [256, 0, 0], [True, 0, 0], None])), max_size=3)),
        "parts": wild(st.dictionaries(META_NAMES, wild(st.lists(maybe(META_NAMES), max_size=2)),
                                      max_size=3)),
    }
    return st.one_of(
        st.fixed_dictionaries({"labels": maybe(names)}, optional=rest),
        st.fixed_dictionaries({"label_map": maybe(label_map)}, optional=rest),
        st.fixed_dictionaries({}, optional=rest),
    )


@st.composite
def member_contents(draw: Any, name: str) -> bytes:
    if name.endswith(".png"):
        return draw(mask_pngs(draw(st.integers(1, 4)), draw(st.integers(1, 4))))
    if name.endswith(".jpg"):
        return b"\xff\xd8" + draw(st.binary(max_size=40))
    if name == "dataset_meta.json":
        return json.dumps(draw(meta_docs())).encode()
    if name == "labelmap.txt":
        return draw(labelmap_texts()).encode()
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=20))  # invalid UTF-8 sometimes
    ids = st.sampled_from(["a", "b", "c", "#x", " a ", "\ufeffa", "", "x/y"])
    return draw(st.sampled_from(["\n", "\r\n"])).join(draw(st.lists(ids, max_size=4))).encode()


@fuzz(400)
@given(st.data())
def test_random_archive_layouts_load_or_are_refused(data: Any) -> None:
    names = data.draw(st.lists(MEMBER_NAMES, min_size=1, max_size=7, unique=True), label="names")
    top = data.draw(st.sampled_from(["", "", "dataset/", "a/b/"]))
    entries = {top + n: data.draw(member_contents(n), label=n) for n in names}
    assume(all(len(v) < 1 << 16 for v in entries.values()))
    _load_and_write(_zip(entries), data.draw(st.booleans()))


@fuzz(300)
@given(meta_docs(), st.booleans())
def test_dataset_meta_json_loads_or_is_refused(meta: dict, polygons: bool) -> None:
    gray = png_bytes(np.array([[[0], [1]], [[2], [1]]]), 0, 8)
    _load_and_write(_zip({"dataset_meta.json": json.dumps(meta).encode(),
                          "ImageSets/Segmentation/default.txt": b"a\n",
                          "SegmentationClass/a.png": gray}), polygons)


def test_fuzz_helpers_write_what_they_claim() -> None:
    """The hand-written PNG writer produces what OpenCV reads back (sub-byte depths too)."""
    pixels = np.array([[[0], [1]], [[1], [0]]])
    img = cv2.imdecode(np.frombuffer(png_bytes(pixels, 0, 1), np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape == (2, 2) and (img > 0).tolist() == [[False, True],
                                                                              [True, False]]
    pal = png_bytes(np.array([[[1], [0]]]), 3, 2, plte=bytes((0, 0, 0, 255, 0, 0)))
    img = cv2.imdecode(np.frombuffer(pal, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.tolist() == [[[0, 0, 255], [0, 0, 0]]]  # BGR
