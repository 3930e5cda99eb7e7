"""Issue 17, day one for an operator: the shipped configs under the shipped units, and a
``check-config`` that catches what would otherwise fail every job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smaskd.config import load_config
from smaskd.overlaps import config_folders
from tests.conftest import REPO, run_cli
from tests.daemon.conftest import base_config
from tests.daemon.test_systemd import UNITS, _service

CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
@pytest.mark.parametrize("example", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_works_under_the_unit(example: Path, unit: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal goes where the unit's StateDirectory= is (the only writable state path under
    ProtectSystem=strict), and every folder the daemon writes lies inside ReadWritePaths=."""
    service = _service(unit)
    state = Path("/var/lib") / service["StateDirectory"].replace("%i", "site-a")
    monkeypatch.setenv("STATE_DIRECTORY", str(state))
    config = load_config(example)
    assert config.state_dir == state, f"{example.name} overrides $STATE_DIRECTORY"
    writable = [Path(p) for p in service["ReadWritePaths"].split()]
    for folder in config_folders(config):
        assert any(folder.path.is_relative_to(w) for w in writable), \
            f"{example.name} {folder.key} {folder.path} is outside ReadWritePaths={writable}"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_labelmap_is_refused_by_check_config_and_run(tmp_path: Path) -> None:
    """Before: check-config said ok, and every job of the rule failed as [internal]."""
    missing = tmp_path / "labelmap.txt"
    cfg = _write(tmp_path, base_config(tmp_path, rules=[
        {"name": "x", "action": "export", "options": {"labelmap": str(missing)},
         "outbox": str(tmp_path / "outbox")}]))
    out = run_cli("check-config", cfg)
    assert out.returncode == 78, out.stdout
    assert "rules[0].options.labelmap" in out.stderr and "no such file" in out.stderr
    assert str(missing) in out.stderr
    (tmp_path / "inbox").mkdir()
    out = run_cli("run", "-c", cfg, "--once")
    assert out.returncode == 78 and "rules[0].options.labelmap" in out.stderr


def test_malformed_labelmap_is_refused_with_its_line(tmp_path: Path) -> None:
    labelmap = tmp_path / "labelmap.txt"
    labelmap.write_text("background:0,0,0::\ncat:1,2\n")
    cfg = _write(tmp_path, base_config(tmp_path, rules=[
        {"name": "x", "action": "export", "options": {"labelmap": str(labelmap)},
         "outbox": str(tmp_path / "outbox")}]))
    out = run_cli("check-config", cfg)
    assert out.returncode == 78
    assert "rules[0].options.labelmap" in out.stderr and f"{labelmap}:2" in out.stderr
    labelmap.write_bytes(b"caf\xe9:1,2,3::\n")
    out = run_cli("check-config", cfg)
    assert out.returncode == 78 and "not UTF-8" in out.stderr
    labelmap.write_text("background:0,0,0::\ncat:1,2,3::\n")
    out = run_cli("check-config", cfg)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("unmatched,fate", [("fail", "failed/"), ("leave", "stays in the inbox")])
def test_config_without_rules_is_warned_about(tmp_path: Path, unmatched: str, fate: str) -> None:
    cfg = _write(tmp_path, base_config(tmp_path, rules=[], unmatched=unmatched))
    out = run_cli("check-config", cfg)
    assert out.returncode == 0
    assert "warning: rules: none" in out.stderr and fate in out.stderr, out.stderr
