"""The unit files: the directives the daemon relies on, and `systemd-analyze verify`."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UNITS = [REPO / "systemd" / "smaskd.service", REPO / "systemd" / "smaskd@.service"]


def _service(unit: Path) -> dict[str, str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]
    parser.read_string(unit.read_text())
    return dict(parser["Service"])


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_directives(unit: Path) -> None:
    s = _service(unit)
    assert s["Type"] == "notify" and s["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert s["Restart"] == "on-failure" and s["OOMPolicy"] == "continue"
    assert s["KillMode"] == "mixed" and s["StateDirectory"].startswith("smaskd")
    assert s["User"] == "smaskd" and "DynamicUser" not in s
    assert s["ProtectSystem"] == "strict" and s["ReadWritePaths"]
    assert s["NoNewPrivileges"] == "yes" and s["PrivateTmp"] == "yes" and s["WatchdogSec"]
    assert " run " in s["ExecStart"] + " "
    # the stop timeout must leave room for the default 60 s drain
    assert int(s["TimeoutStopSec"].rstrip("s")) > 60


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_opencv_pixel_cap_is_the_codes(unit: Path) -> None:
    """The unit's environment wins over the package's default (``setdefault``): a smaller
    cap there made OpenCV refuse frames the code accepts (16384², as CVAT exports them)."""
    from smaskd import MAX_IMAGE_PIXELS

    env = dict(line.split("=", 2)[1:] for line in unit.read_text().splitlines()
               if line.startswith("Environment=") and line.count("=") >= 2)
    assert int(env["OPENCV_IO_MAX_IMAGE_PIXELS"]) == MAX_IMAGE_PIXELS == 16384 * 16384


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists that ExecStart exists; the user and paths need not (not a syntax matter).
    name = unit.name.replace("@.", "@test.")
    text = unit.read_text().replace("/opt/smaskd/venv/bin/smaskd", "/usr/bin/true")
    (tmp_path / name).write_text(text)
    out = subprocess.run([tool, "verify", "--man=no", str(tmp_path / name)],
                         capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if any(s in line for s in ("Unknown key", "Unknown section", "Failed to parse",
                                           "Invalid", "ignoring", "bad-setting", "Missing"))]
    assert not problems, "\n".join(problems)
    assert out.returncode == 0, out.stdout + out.stderr
