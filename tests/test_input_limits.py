"""Valid but huge or nasty inputs through the real CLI: refused specifically, or converted.

The memory cases run the CLI under the daemon's default ``worker_memory`` as ``RLIMIT_AS``
(set in the child before it starts), because that limit is what turned "too big" into a
segfault inside pycocotools or a ``MemoryError`` before: a refusal must come from counting,
and the largest accepted frame must fit.
"""

from __future__ import annotations

import json
import random
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np

from smaskd import MAX_IMAGE_PIXELS
from smaskd.config import Config
from smaskd.geometry.limits import DEFAULT_MAX_INSTANCES, frame_memory
from tests.conftest import run_cli

DEFAULT_WORKER_MEMORY = Config.__dataclass_fields__["worker_memory"].default
assert DEFAULT_WORKER_MEMORY == 4 << 30


def run_limited(*args: str | Path, memory: int = DEFAULT_WORKER_MEMORY,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m smaskd ARGS`` with ``RLIMIT_AS = memory``, as a daemon worker runs."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "smaskd", *map(str, args)], preexec_fn=limit,
                          capture_output=True, text=True, timeout=timeout)


def _coco(path: Path, width: int, height: int, segmentations: list[list[float]],
          file_name: str = "frame.png") -> Path:
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 1, 1],
             "segmentation": [seg]} for i, seg in enumerate(segmentations)]
    doc = {"images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
           "annotations": anns, "categories": [{"id": 1, "name": "car"}]}
    path.write_text(json.dumps(doc))
    return path


def _refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 65, (done.returncode, done.stderr[-2000:])
    assert "internal" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr)


# -- case 7: sized before work -------------------------------------------------------------


def test_a_500000_point_polygon_is_refused_not_a_worker_crash(tmp_path: Path) -> None:
    rng = random.Random(1)
    points = [round(rng.uniform(0, 1000), 2) for _ in range(1_000_000)]  # ~7.8 MB of JSON
    src = _coco(tmp_path / "big.json", 1000, 1000, [points])
    done = run_limited("export", src, "-o", tmp_path / "out.zip", "-j", "1")
    _refused(done, "big.json", "frame: annotation 1", "500000 points", "limit of 100000",
             "max_polygon_points")
    assert not (tmp_path / "out.zip").exists()


def test_a_polygon_under_the_point_limit_whose_outline_needs_gigabytes_is_refused(
        tmp_path: Path) -> None:
    """Raising the point limit does not reach pycocotools: its outline is bounded too."""
    rng = random.Random(2)
    points = [round(rng.uniform(0, 1000), 2) for _ in range(1_000_000)]
    src = _coco(tmp_path / "big.json", 1000, 1000, [points])
    done = run_limited("export", src, "-o", tmp_path / "out.zip", "-j", "1",
                       "--max-polygon-points", "1000000")
    _refused(done, "frame: annotation 1", "outline is", "pixels long")


def test_an_image_with_too_many_instances_is_refused_before_rasterising(tmp_path: Path) -> None:
    """--compat cvat would paint them all (and did, for minutes); the count refuses first.
    The COCO reader stops at the limit: the message says "more than", not the total."""
    tri = [1, 1, 3, 1, 3, 3]
    src = _coco(tmp_path / "crowd.json", 100, 100, [tri] * (DEFAULT_MAX_INSTANCES * 3))
    done = run_limited("export", src, "-o", tmp_path / "out.zip", "--compat", "cvat")
    _refused(done, "crowd.json", "frame", f"more than {DEFAULT_MAX_INSTANCES} mask shapes",
             "max_instances")


def test_the_limits_are_cli_options(tmp_path: Path) -> None:
    src = _coco(tmp_path / "in.json", 10, 10, [[1, 1, 5, 1, 5, 5, 1, 5]] * 3)
    _refused(run_cli("export", src, "-o", tmp_path / "a.zip", "--max-instances", "2"),
             "in.json", "max_instances")
    _refused(run_cli("export", src, "-o", tmp_path / "b.zip", "--max-polygon-points", "3"),
             "annotation 1", "4 points", "limit of 3")
    ok = run_cli("export", src, "-o", tmp_path / "c.zip", "--max-instances", "3",
                 "--max-polygon-points", "4")
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("export", src, "-o", tmp_path / "d.zip", "--max-instances", "0")
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def test_a_full_polygon_on_the_largest_frame_exports_within_the_default_worker_memory(
        tmp_path: Path) -> None:
    """16384² is the accepted cap (CVAT exports such frames); it needed 5.3 GB before."""
    side = 16384
    assert side * side == MAX_IMAGE_PIXELS
    assert frame_memory(MAX_IMAGE_PIXELS) <= DEFAULT_WORKER_MEMORY
    src = _coco(tmp_path / "huge.json", side, side, [[0, 0, side, 0, side, side, 0, side]])
    done = run_limited("export", src, "-o", tmp_path / "out.zip", "-j", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        head = zf.open("SegmentationObject/frame.png").read(33)
    assert struct.unpack(">II", head[16:24]) == (side, side)


def _paletted_png(side: int, palette: list[tuple[int, int, int]]) -> bytes:
    """A VOC-style paletted mask (OpenCV cannot write one): index 1 but for 10 top rows."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    rows = np.ones((side, side + 1), np.uint8)
    rows[:, 0] = 0  # filter NONE
    rows[:10, 1:] = 0
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", b"".join(bytes(c) for c in palette))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))


def test_a_paletted_mask_of_the_largest_frame_imports_within_the_default_worker_memory(
        tmp_path: Path) -> None:
    """VOC masks are paletted: OpenCV decodes them, and the per-pixel path that followed
    needed ~20 bytes a pixel (a MemoryError at 16384²); runs of the decoded rows do not."""
    side = 16384
    data = _paletted_png(side, [(0, 0, 0), (128, 0, 0)])  # VOC instance 1 = class colour
    src = tmp_path / "voc.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("labelmap.txt", "background:0,0,0::\ncar:128,0,0::\n")
        zf.writestr("SegmentationClass/f.png", data)
        zf.writestr("SegmentationObject/f.png", data)
        zf.writestr("ImageSets/Segmentation/default.txt", "f\n")
    del data
    done = run_limited("import", src, "-o", tmp_path / "out.json", "-j", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((tmp_path / "out.json").read_text())
    (ann,) = doc["annotations"]
    assert ann["area"] == side * (side - 10) and doc["images"][0]["width"] == side


# -- case 8: every refusal names the file and place, never [internal] -------------------------


def test_a_70000_character_file_name_is_refused_with_a_short_message(tmp_path: Path) -> None:
    src = _coco(tmp_path / "long.json", 8, 6, [[1, 1, 5, 1, 5, 4]], file_name="a" * 70_000 + ".png")
    done = run_cli("export", src, "-o", tmp_path / "out.zip")
    _refused(done, "long.json", "(70000 characters)", "at most 255")
    assert len(done.stderr) < 1000


def test_a_lone_utf16_surrogate_is_refused_naming_the_json_path(tmp_path: Path) -> None:
    src = _coco(tmp_path / "s.json", 8, 6, [[1, 1, 5, 1, 5, 4]], file_name="a\ud800b.png")
    assert "\\ud800" in src.read_text()
    done = run_cli("export", src, "-o", tmp_path / "out.zip")
    _refused(done, "s.json", "images[0].file_name", "surrogate")


def _mask_zip(tmp_path: Path, width: int = 400, height: int = 300) -> Path:
    src = _coco(tmp_path / "m.json", width, height, [[10, 10, 110, 10, 110, 110, 10, 110]],
                file_name="f1.png")
    done = run_cli("export", src, "-o", tmp_path / "m.zip")
    assert done.returncode == 0, done.stderr
    return tmp_path / "m.zip"


def _rezip(src: Path, dst: Path, change) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, change(name, zin.read(name)))
    return dst


def test_masks_saved_as_uncompressed_pngs_import(tmp_path: Path) -> None:
    """A level-0 PNG zips ~300:1; as PNG data it is exactly its pixel rows: legal."""

    def level0(name: str, data: bytes) -> bytes:
        if not name.endswith(".png"):
            return data
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
        return buf.tobytes()

    src = _rezip(_mask_zip(tmp_path), tmp_path / "level0.zip", level0)
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo("SegmentationClass/f1.png")
        assert info.file_size / info.compress_size > 200  # over the generic ratio limit
    done = run_cli("import", src, "-o", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out.json").read_text())["annotations"]


def test_a_png_entry_larger_than_its_pixels_is_still_a_ratio_bomb(tmp_path: Path) -> None:
    def padded(name: str, data: bytes) -> bytes:  # 1 MiB of zeros after IEND
        return data + bytes(1 << 20) if name.endswith(".png") else data

    src = _rezip(_mask_zip(tmp_path, 40, 30), tmp_path / "bomb.zip", padded)
    done = run_cli("import", src, "-o", tmp_path / "out.json")
    _refused(done, "bomb.zip", "SegmentationClass/f1.png", "compression ratio",
             "raw pixels its PNG header declares")


def test_a_fake_end_record_in_the_zip_comment_is_not_the_archive(tmp_path: Path) -> None:
    data = _mask_zip(tmp_path).read_bytes()
    fake = b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 0, 0, 0, 0, 0)
    end = data.rindex(b"PK\x05\x06")
    for i, comment in enumerate((b"note " + fake + b" more", b"note " + fake)):
        src = tmp_path / f"fake{i}.zip"
        src.write_bytes(data[:end + 20] + struct.pack("<H", len(comment)) + comment)
        done = run_cli("import", src, "-o", tmp_path / f"out{i}.json")
        assert done.returncode == 0, done.stderr
        assert json.loads((tmp_path / f"out{i}.json").read_text())["annotations"]


def test_two_complete_archives_one_in_the_others_comment_are_refused(tmp_path: Path) -> None:
    """A copy of the directory and an end record for it, as the real record's comment:
    both records fit, both directories look real; which one a reader takes is a guess."""
    data = _mask_zip(tmp_path).read_bytes()
    end = data.rindex(b"PK\x05\x06")
    count, size, offset = struct.unpack("<HLL", data[end + 10:end + 20])
    comment = data[offset:offset + size] + b"PK\x05\x06" + struct.pack(
        "<4H2LH", 0, 0, count, count, size, offset, 0)
    src = tmp_path / "two.zip"
    src.write_bytes(data[:end + 20] + struct.pack("<H", len(comment)) + comment)
    done = run_cli("import", src, "-o", tmp_path / "out.json")
    _refused(done, "two.zip", "end-of-directory records fit", "disagree")


def test_an_unsafe_imagesets_entry_is_refused_on_import_as_on_export(tmp_path: Path) -> None:
    def slip(name: str, data: bytes) -> bytes:
        return b"f1\n../../../etc/passwd\n" if name.startswith("ImageSets/") else data

    src = _rezip(_mask_zip(tmp_path), tmp_path / "slip.zip", slip)
    done = run_cli("import", src, "-o", tmp_path / "out.json")
    _refused(done, "slip.zip", "ImageSets/Segmentation/default.txt: line 2",
             "'../../../etc/passwd'", "not a safe relative path")
    assert not (tmp_path / "out.json").exists()
