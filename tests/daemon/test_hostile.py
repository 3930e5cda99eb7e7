"""Hostile inputs through the real daemon: each one fails alone, specifically, and harmlessly.

One daemon run (two workers) receives a whole set of hostile files generated here (never
checked-in binaries): zip slip and absolute member names, symlink members, duplicate and
case-colliding names, ratio and declared-size bombs, 60,000 entries, overlapping entries, a
truncated zip, a PNG whose header claims 100,000 x 100,000 pixels, JSON with NaN/Infinity,
invalid UTF-8, 100,000-deep nesting, wrong types at several levels, a file over
``max_input_bytes``, a symlink to a file outside the inbox and a FIFO.

For each file the test asserts where it ends (``failed/`` with a report), that the report's
message is specific (a distinctive substring per case, and never an internal error), that
nothing outside the inbox/outbox/state folders changed, that neither the FIFO nor a symlinked
FIFO is ever opened (a writer blocked on ``open()`` would wake up), and that the daemon is still
alive and converts a valid file afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.daemon.conftest import base_config, coco, coco_bytes, files
from tests.test_safezip import make_zip

pytestmark = pytest.mark.slow

DEADLINE = 180.0  # generous: two shared cores, one worker spawn per hostile file


# ------------------------------------------------------------------------------ zip builders


def _central_offsets(data: bytes) -> list[int]:
    """Offsets of the central directory headers, in order."""
    eocd = data.rindex(b"PK\x05\x06")
    count, _size, start = struct.unpack("<HLL", data[eocd + 10:eocd + 20])
    offsets, pos = [], start
    for _ in range(count):
        assert data[pos:pos + 4] == b"PK\x01\x02"
        offsets.append(pos)
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28:pos + 34])
        pos += 46 + name_len + extra_len + comment_len
    return offsets


def _patch_central(data: bytes, index: int, field: int, value: int) -> bytes:
    """Overwrite a 4-byte field of the ``index``-th central directory header."""
    out = bytearray(data)
    pos = _central_offsets(data)[index] + field
    out[pos:pos + 4] = struct.pack("<L", value)
    return bytes(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` 8-bit gray pixels, with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b""))


_LABELMAP = b"# label:color_rgb:parts:actions\nbackground:0,0,0::\ncat:255,0,0::\n"


def _mask_zip(png: bytes) -> bytes:
    return make_zip([("labelmap.txt", _LABELMAP), ("ImageSets/Segmentation/default.txt", b"a\n"),
                 ("SegmentationClass/a.png", png), ("SegmentationObject/a.png", png)])


def _symlink_member() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("SegmentationClass/a.png")
    info.create_system = 3  # Unix: external_attr carries st_mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _claims_entries(n: int) -> bytes:
    """A one-entry zip whose zip64 end record claims ``n`` entries (refused before reading)."""
    data = make_zip([("SegmentationClass/a.png", b"")])
    end_at = data.rfind(b"PK\x05\x06")
    size, offset = struct.unpack("<LL", data[end_at + 12:end_at + 20])
    body = data[:end_at]
    end64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + end64 + locator + end


def _declared_bomb() -> bytes:
    """One small stored entry whose central directory claims 3 GiB uncompressed."""
    return _patch_central(make_zip([("SegmentationClass/a.png", b"x" * 16)]), 0, 24, 3 << 30)


def _overlapping() -> bytes:
    """Two central directory entries pointing at the same local header (and data)."""
    data = make_zip([("SegmentationClass/a.png", b"x" * 100), ("SegmentationClass/b.png", b"y" * 100)])
    return _patch_central(data, 1, 42, 0)


def _truncated() -> bytes:
    data = _mask_zip(_png_claiming(4, 4))
    return data[: len(data) // 2]  # the central directory is gone


# ------------------------------------------------------------------------------ JSON builders


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _coco_with(**changes: object) -> dict:
    doc = coco()
    for path, value in changes.items():
        node: object = doc
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]  # type: ignore[index]
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value  # type: ignore[index]
    return doc


def _datumaro(annotations: list, **top: object) -> dict:
    doc = {"categories": {"label": {"labels": [{"name": "cat", "parent": "", "attributes": []}]}},
           "items": [{"id": "a", "image": {"path": "a.png", "size": [6, 8]},
                      "annotations": annotations}]}
    doc.update(top)
    return doc


def _labelme(shapes: object) -> dict:
    return {"version": "5.2.1", "flags": {}, "imagePath": "a.png", "imageData": None,
            "imageHeight": 6, "imageWidth": 8, "shapes": shapes}


def _square(label: str = "cat") -> dict:
    return {"label": label, "points": [[1, 1], [5, 1], [5, 4]], "group_id": None,
            "shape_type": "polygon", "flags": {}}


def hostile_files(max_input_bytes: int) -> dict[str, tuple[bytes, list[str]]]:
    """name → (content, substrings the failure report's ``where: message`` must contain)."""
    nan = coco_bytes().replace(b'"width": 8', b'"width": NaN')
    inf = coco_bytes().replace(b'"area": 15.0', b'"area": -Infinity')
    assert nan != coco_bytes() and inf != coco_bytes()
    cases: dict[str, tuple[bytes, list[str]]] = {
        # --- archives: refused by name and by numbers before anything is decoded
        "slip.zip": (make_zip([("labelmap.txt", _LABELMAP), ("../evil.png", b"x")]),
                     ["'../evil.png'", "'..'"]),
        "slip_backslash.zip": (make_zip([("a\\..\\..\\evil.png", b"x")]), ["backslash"]),
        "absolute.zip": (make_zip([("/etc/x", b"x")]), ["'/etc/x'", "absolute"]),
        "symlink_member.zip": (make_zip([(_symlink_member(), b"/etc/passwd")]), ["symbolic link"]),
        "duplicate.zip": (make_zip([("labelmap.txt", _LABELMAP), ("labelmap.txt", b"dog:1,2,3::\n")]),
                          ["'labelmap.txt'", "duplicate name"]),
        "case.zip": (make_zip([("SegmentationClass/A.png", b"1"), ("SegmentationClass/a.png", b"2")]),
                     ["when case is ignored"]),
        "ratio_bomb.zip": (make_zip([("SegmentationClass/a.png", bytes(8 << 20))],
                                zipfile.ZIP_DEFLATED), ["compression ratio", "over the limit"]),
        "size_bomb.zip": (_declared_bomb(), ["expands to more than"]),
        "entries.zip": (_claims_entries(600_000), ["600000 entries", "limit"]),
        "overlap.zip": (_overlapping(), ["overlaps"]),
        "truncated.zip": (_truncated(), ["truncated"]),
        "huge_png.zip": (_mask_zip(_png_claiming(100_000, 100_000)),
                         ["SegmentationClass/a.png", "100000x100000", "before decoding"]),
        # --- JSON: refused by the safe loader
        "nan.json": (nan, ["NaN", "line 1 column"]),
        "infinity.json": (inf, ["Infinity"]),
        "bad_utf8.json": (b'{"images": [], "note": "caf\xe9"}', ["UTF-8", "byte offset"]),
        "deep.json": (b"[" * 100_000 + b"]" * 100_000, ["nesting", "512"]),
        # --- JSON: wrong types at several levels, each named by its JSON path
        "coco_images_dict.json": (_json(_coco_with(images={"id": 1})),
                                  ["images", "expected a list", "an object"]),
        "coco_width_string.json": (_json(_coco_with(images__0__width="8")),
                                   ["images[0].width", "expected an integer"]),
        "coco_category_name.json": (_json(_coco_with(categories__0__name=7)),
                                    ["categories[0].name", "expected a string"]),
        "coco_segmentation_string.json": (
            _json(_coco_with(annotations__0__segmentation="1 1 6 1 6 4")),
            ["annotations[0].segmentation", "expected a list"]),
        "coco_bbox_strings.json": (
            _json(_coco_with(annotations__0__segmentation=[],
                             annotations__0__bbox=["1", "1", 5, 3])),
            ["annotations[0].bbox[0]", "expected a number"]),
        "coco_odd_points.json": (
            _json(_coco_with(annotations__0__segmentation=[[1, 1, 6, 1, 6, 4, 1]])),
            ["annotations[0].segmentation[0]", "multiple of 2"]),
        "coco_rle_counts.json": (
            _json(_coco_with(annotations__0__segmentation={"counts": [1, "2"], "size": [6, 8]})),
            ["annotations[0].segmentation.counts[1]", "expected an integer"]),
        "datumaro_items_number.json": (_json(_datumaro([], items=5)),
                                       ["items", "expected a list", "a number"]),
        "datumaro_labels_dict.json": (
            _json(_datumaro([], categories={"label": {"labels": {"name": "cat"}}})),
            ["categories.label.labels", "expected a list"]),
        "datumaro_annotation_string.json": (_json(_datumaro(["polygon"])),
                                            ["items[0].annotations[0]", "expected an object"]),
        "datumaro_bbox_strings.json": (
            _json(_datumaro([{"id": 1, "type": "bbox", "label_id": 0, "bbox": [0, 0, "2", 2]}])),
            ["items[0].annotations[0].bbox[2]", "expected a number"]),
        "datumaro_odd_points.json": (
            _json(_datumaro([{"id": 1, "type": "polygon", "label_id": 0,
                              "points": [0, 0, 3, 0, 3, 2, 1]}])),
            ["items[0].annotations[0].points", "multiple of 2"]),
        "datumaro_size_wrong.json": (
            _json(_datumaro([], items=[{"id": "a", "image": {"size": "6x8"}}])),
            ["items[0].image.size", "expected a list"]),
        "labelme_shapes_null.json": (_json(_labelme(None)), ["shapes", "expected a list", "null"]),
        "labelme_point_strings.json": (
            _json(_labelme([{**_square(), "points": [["1", 1], [5, 1], [5, 4]]}])),
            ["shapes[0].points[0][0]", "expected a number"]),
        "labelme_point_triple.json": (
            _json(_labelme([{**_square(), "points": [[1, 1, 0], [5, 1], [5, 4]]}])),
            ["shapes[0].points[0]", "expected a point [x, y]"]),
        "labelme_label_number.json": (_json(_labelme([{**_square(), "label": 3}])),
                                      ["shapes[0].label", "expected a string"]),
        # --- size cap: refused by the daemon before a worker opens it
        "huge.json": (b'{"images": [], "pad": "' + b"x" * (max_input_bytes + 1024) + b'"}',
                      ["max_input_bytes"]),
    }
    return cases


# ------------------------------------------------------------------------------ helpers


class BlockedWriter:
    """A thread blocked in ``open(fifo, O_WRONLY)``: it returns only if someone opens the
    FIFO for reading, so ``opened`` proves whether anybody (the daemon) ever did."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY)
        except OSError:
            return
        self.opened.set()
        os.close(fd)

    def release(self) -> None:
        """Unblock the thread (our own reader), so no thread outlives the test."""
        if self.thread.is_alive():
            try:
                fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                return
            self.thread.join(10)
            os.close(fd)


def _snapshot(root: Path, skip: set[str]) -> dict[str, tuple]:
    """Every path under ``root`` except the daemon's own folders: type, size, mtime, sha256."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = os.lstat(path)
            digest = None
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(rel_dir / name)] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, digest)
    return out


def _report(failed: Path, name: str) -> dict:
    return json.loads((failed / f"{name}.error.json").read_text())


# ------------------------------------------------------------------------------ the tests


def test_hostile_inputs_fail_specifically_and_the_daemon_carries_on(tmp_path: Path,
                                                                     daemon_factory) -> None:
    inbox, outbox, failed = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "inbox" / "failed"
    inbox.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_bytes(coco_bytes("secret"))
    trap = outside / "trap.fifo"
    os.mkfifo(trap)

    # Large enough for every hostile zip (the 60,000-entry one is ~5 MB), small enough that
    # huge.json is over it.
    max_input = 8 << 20
    cases = hostile_files(max_input)
    assert all(len(data) < max_input for n, (data, _) in cases.items() if n != "huge.json")
    config = base_config(tmp_path, max_input_bytes=max_input)
    config["inboxes"][0]["grace"] = "2s"  # the truncated zip waits this long for its end
    d = daemon_factory(config)
    before = _snapshot(tmp_path, {"inbox", "outbox", "state"})

    # The special files are there before the daemon starts (its start-up scan meets them), so
    # the writers are blocked in open() before the daemon could possibly open anything.
    os.symlink(secret, inbox / "link.json")
    os.symlink(trap, inbox / "link_to_fifo.json")
    os.mkfifo(inbox / "pipe.json")
    writers = [BlockedWriter(inbox / "pipe.json"), BlockedWriter(trap)]
    try:
        d.start()
        d.wait_ready(60)
        for name, (data, _) in cases.items():  # temp name + rename, as careful writers do
            (inbox / f".{name}.tmp").write_bytes(data)
            os.rename(inbox / f".{name}.tmp", inbox / name)
        expected = [*cases, "link.json", "link_to_fifo.json"]

        def missing() -> list[str]:
            return [n for n in expected if not (failed / f"{n}.error.json").exists()]

        try:
            d.wait_for(lambda: not missing() and d.events("file.special"), DEADLINE,
                       "a report in failed/ for every hostile file, and the FIFO skipped")
        except AssertionError as e:
            raise AssertionError(f"no report for {missing()}\n{e}") from None
        assert d.proc is not None and d.proc.poll() is None, "the daemon died"

        # The daemon carries on: a valid file is converted normally afterwards.
        (inbox / "good.json").write_bytes(coco_bytes("good"))
        d.wait_for(lambda: (inbox / "done" / "good.json").exists(), 60, "good.json done")
        assert (outbox / "good.zip").stat().st_size > 0

        # Neither the FIFO nor the FIFO behind a symlink was ever opened.
        assert not any(w.opened.is_set() for w in writers), "a FIFO was opened"
    finally:
        for w in writers:
            w.release()
    assert d.stop() == 0
    assert "Traceback" not in d.stderr()

    problems = []
    for name, (_, needles) in cases.items():
        report = _report(failed, name)
        error = report["error"]
        text = f"{error.get('where') or ''}: {error.get('message') or ''}"
        missing = [s for s in needles if s not in text]
        if missing or error.get("class") == "internal" or "traceback" in error:
            problems.append(f"{name}: {error.get('type')} {text!r} lacks {missing}")
        assert (failed / name).read_bytes() == cases[name][0], f"{name} changed in failed/"
    assert not problems, "unspecific or internal failures:\n" + "\n".join(problems)

    # A symlink is handled without being followed: moved as a link, target untouched.
    for link, target in (("link.json", secret), ("link_to_fifo.json", trap)):
        assert (failed / link).is_symlink() and os.readlink(failed / link) == str(target)
        assert "symlink" in _report(failed, link)["error"]["message"]
    assert secret.read_bytes() == coco_bytes("secret")
    assert stat.S_ISFIFO(os.lstat(trap).st_mode)
    # A FIFO is skipped where it is, and said so once.
    assert stat.S_ISFIFO(os.lstat(inbox / "pipe.json").st_mode)
    special = d.events("file.special")
    assert [e["path"] for e in special] == ["pipe.json"]

    # Nothing was written outside the daemon's folders; the outbox holds logs only (and the
    # one good result); no hostile input produced an output; no staging leftovers.
    assert _snapshot(tmp_path, {"inbox", "outbox", "state"}) == before
    assert not (tmp_path.parent / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    stems = sorted(Path(n).stem for n in [*cases, "link.json", "link_to_fifo.json", "good.json"])
    assert files(outbox) == sorted([f"{s}.log.jsonl" for s in stems] + ["good.zip"])
    for s in stems:
        last = json.loads((outbox / f"{s}.log.jsonl").read_text().splitlines()[-1])
        assert last["event"] == ("job.done" if s == "good" else "job.failed"), s
    assert sorted(p.name for p in inbox.iterdir()) == [".smaskd", "done", "failed", "pipe.json"]
    assert files(inbox / ".smaskd" / "processing" / "testhost") == []  # no claim left behind
    assert files(inbox / "done") == ["good.json"]


_CV2_PROBE = """
import sys, struct, zlib
import {module}
import cv2
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
ihdr = struct.pack(">IIBBBBB", 17000, 17000, 8, 0, 0, 0, 0)
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", ihdr)
       + chunk(b"IDAT", zlib.compress(b"\\0" * 64)) + chunk(b"IEND", b""))
import numpy as np
try:
    cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
except cv2.error as e:
    print("REFUSED" if "CV_IO_MAX_IMAGE_PIXELS" in str(e) else f"OTHER {{e}}")
else:
    print("DECODED")
"""


@pytest.mark.parametrize("module", ["smaskd.geometry.rasterize", "smaskd.geometry.polygons",
                                    "smaskd.cli", "smaskd.daemon.workers"])
def test_opencv_pixel_cap_is_set_before_cv2_loads(module: str) -> None:
    """OpenCV reads ``OPENCV_IO_MAX_IMAGE_PIXELS`` once, when it loads: whichever smaskd module
    imports cv2 first (the worker's and the CLI's import paths included), the cap must already
    be in the environment, so cv2 itself refuses a 17000 x 17000 header (2^28 < 2.9e8 < its
    default 2^30)."""
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    out = subprocess.run([sys.executable, "-c", _CV2_PROBE.format(module=module)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "REFUSED", out.stdout + out.stderr
