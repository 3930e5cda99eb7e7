"""Issue 17: when stdout is journald, every log line carries its ``<N>`` priority so that
``journalctl -p err`` finds errors; anywhere else the lines stay plain JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.daemon.conftest import base_config

_PREFIX = re.compile(r"^<([0-7])>(.*)$")
_EXPECTED = {"debug": 7, "info": 6, "warning": 4, "error": 3}


def _run_once(tmp_path: Path, journal_stream: str | None) -> list[str]:
    """``smaskd run --once`` with stdout on a file; one bad input makes an error line."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "bad.json").write_text('{"bogus": 1}')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base_config(tmp_path)))
    out = tmp_path / "stdout"
    with open(out, "wb") as fh:
        st = os.fstat(fh.fileno())
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOURNAL_STREAM", None)
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream.format(dev=st.st_dev, ino=st.st_ino)
        proc = subprocess.run([sys.executable, "-m", "smaskd", "run", "-c", str(cfg), "--once"],
                              stdout=fh, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                              timeout=120)
    assert proc.returncode == 65, proc.stderr
    return out.read_text().splitlines()


def test_lines_carry_priorities_when_stdout_is_journald(tmp_path: Path) -> None:
    lines = _run_once(tmp_path, "{dev}:{ino}")
    assert lines
    levels = set()
    for line in lines:
        m = _PREFIX.match(line)
        assert m, f"no <N> prefix: {line!r}"
        event = json.loads(m.group(2))
        assert int(m.group(1)) == _EXPECTED[event["level"]], line
        levels.add(event["level"])
    assert {"info", "warning"} <= levels  # job.failed: `journalctl -p warning` shows it


def test_no_prefix_when_stdout_is_not_the_journal(tmp_path: Path) -> None:
    """A redirected stdout inherits JOURNAL_STREAM from the unit but is not the journal."""
    lines = _run_once(tmp_path, "{dev}:1")
    assert lines and all(line.startswith("{") for line in lines)
    assert any(json.loads(line)["level"] == "warning" for line in lines)
