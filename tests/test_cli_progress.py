"""The CLI's progress line: drawn on a terminal, never into a pipe, cleared before anything else.

The real CLI runs with its stderr on a pseudo-terminal (``pty``), as a person at a terminal
sees it. ``SMASKD_PROGRESS_AFTER=0`` makes the line appear at once, so a small file shows it
without a timed wait.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from smaskd.convert import ConvertOptions, export_file, import_file
from smaskd.progress import ProgressLine
from tests.conftest import CORPUS, needs_corpus

LINE = re.compile(r"(export|import) (checking|writing|converting) \[[#.]+\] (\d+)/(\d+) items +"
                  r"\d+% [\d.]+ items/s ETA [\d:?]+")


def _coco(tmp_path: Path, images: int = 3, size: int = 8) -> Path:
    doc = {"images": [{"id": i, "file_name": f"f{i}.png", "width": size, "height": size}
                      for i in range(1, images + 1)],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "bbox": [1, 1, size - 2, size - 2],
                            "segmentation": [[1, 1, size - 1, 1, size - 1, size - 1, 1, size - 1]]}
                           for i in range(1, images + 1)],
           "categories": [{"id": 1, "name": "car", "color": "#ff0000"}]}
    path = tmp_path / "in.json"
    path.write_text(json.dumps(doc))
    return path


def _env(after: str | None = "0") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SMASKD_PROGRESS_AFTER"}
    if after is not None:
        env["SMASKD_PROGRESS_AFTER"] = after
    return env


def _on_terminal(*args: str | Path, env: dict[str, str],
                 until: str | None = None, then: int | None = None) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pty: (exit code, what the terminal got, stdout). With
    ``until``/``then``: send signal ``then`` once ``until`` has appeared on the terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "smaskd", *map(str, args)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    os.close(slave)
    seen = b""
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not data:
                break
            seen += data
            if until and then and until.encode() in seen:
                proc.send_signal(then)
                then = None
        out = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait(60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, seen.decode(), out


def _cleared_before(text: str, what: str) -> bool:
    """The progress line was blanked (``\\r``, spaces, ``\\r``) before ``what`` was printed."""
    head = text[: text.index(what)] if what else text
    return re.search(r"\r {20,}\r$", head) is not None


def test_export_and_import_show_progress_on_a_terminal(tmp_path: Path) -> None:
    src = _coco(tmp_path)
    code, terminal, out = _on_terminal("export", src, "-o", tmp_path / "out.zip", "-j", "1",
                                       env=_env())
    assert code == 0, terminal
    lines = [m.groups() for m in LINE.finditer(terminal)]
    assert lines and lines[0] == ("export", "checking", "1", "3"), terminal
    assert ("writing", "3") in {(stage, total) for _, stage, _, total in lines}, terminal
    assert _cleared_before(terminal, ""), repr(terminal)  # nothing left on the line
    assert out.startswith("export: ")  # the summary on stdout, as without a terminal

    code, terminal, out = _on_terminal("import", tmp_path / "out.zip", "-o", tmp_path / "b.json",
                                       env=_env())
    assert code == 0, terminal
    assert [m.groups() for m in LINE.finditer(terminal)][0] == ("import", "converting", "0", "3")
    assert _cleared_before(terminal, ""), repr(terminal)


def test_no_progress_into_a_pipe_nor_with_no_progress(tmp_path: Path) -> None:
    src = _coco(tmp_path)
    done = subprocess.run([sys.executable, "-m", "smaskd", "export", str(src), "-o",
                           str(tmp_path / "b.zip")], capture_output=True, text=True, env=_env(),
                          timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    code, terminal, _ = _on_terminal("export", src, "-o", tmp_path / "c.zip", "--no-progress",
                                     env=_env())
    assert code == 0 and terminal == "", repr(terminal)


def test_progress_forces_the_line_into_a_pipe(tmp_path: Path) -> None:
    src = _coco(tmp_path)
    done = subprocess.run([sys.executable, "-m", "smaskd", "export", str(src), "-o",
                           str(tmp_path / "a.zip"), "--progress"], capture_output=True,
                          text=True, env=_env(), timeout=120)
    assert done.returncode == 0 and LINE.search(done.stderr), done.stderr


def test_the_line_is_cleared_on_a_signal(tmp_path: Path) -> None:
    src = _coco(tmp_path, images=300, size=1024)
    code, terminal, _ = _on_terminal("export", src, "-o", tmp_path / "a.zip", "-j", "1",
                                     env=_env(), until="items/s", then=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, terminal
    assert LINE.search(terminal) and _cleared_before(terminal, ""), repr(terminal[-300:])
    assert not (tmp_path / "a.zip").exists()


def test_the_line_waits_and_redraws_at_most_ten_times_a_second() -> None:
    now = [0.0]
    stream = io.StringIO()
    line = ProgressLine(stream, "export", after=1.0, clock=lambda: now[0])
    for done in range(100):  # 100 items in 0.99 s: a job that short shows nothing
        line(done, 1000)
        now[0] += 0.0099
    assert stream.getvalue() == ""
    line.clear()
    assert stream.getvalue() == ""  # nothing drawn, nothing to clear
    for done in range(100, 1000):  # 900 more in ~9 s: at most 10 redraws a second
        line(done, 1000)
        now[0] += 0.01
    draws = stream.getvalue().count("\r")
    assert 80 <= draws <= 91, draws
    assert "ETA" in stream.getvalue() and "100 items/s" in stream.getvalue()
    line.clear()
    assert re.search(r"\r {30,}\r$", stream.getvalue())


CORPUS_INPUTS = {  # one input per reader: the callback lives in export_dataset/import_masks
    "datumaro": "golden/s01a_polygons_basic/input/annotations.json",
    "labelme": "labelme-instance-json/data_annotated/2011_000003.json",
    "cvat-bundle": "tracks/hand_s01_rect_rotation/input/scene.json",
    "import": "golden/s01a_polygons_basic/expected/export.zip",
}


@needs_corpus
@pytest.mark.parametrize("case", [*CORPUS_INPUTS, "coco"])
def test_every_reader_reports_items_in_order_to_the_total(tmp_path: Path, case: str) -> None:
    src = _coco(tmp_path) if case == "coco" else CORPUS / CORPUS_INPUTS[case]
    calls: list[tuple[int, int, str]] = []
    options = ConvertOptions(on_progress=lambda *call: calls.append(call))
    convert = import_file if case == "import" else export_file
    result = convert(src, tmp_path / "out", options)
    n = result.items
    stages = ["converting"] if case == "import" else ["checking", "writing"]
    assert n > 0 and list(dict.fromkeys(stage for *_, stage in calls)) == stages, calls
    for stage in stages:  # each pass counts up to the item count, in order
        done = [d for d, total, s in calls if s == stage and total == n]
        assert done == sorted(done) and done[-1] == n and len(done) == n + (stage != "checking")
