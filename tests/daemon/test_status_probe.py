"""Issue 17: ``smaskd status`` as a probe — LSB exit codes, a live-pid check at once,
failed reloads listed, ``--json`` for scripts. Real daemons, real signals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import yaml

from tests.conftest import run_cli
from tests.daemon.conftest import base_config


def _status(d, *args: str):
    return run_cli("status", "-c", d.config_path, *args)


def test_status_exit_codes_follow_lsb(tmp_path: Path, daemon_factory) -> None:
    (tmp_path / "inbox").mkdir()
    d = daemon_factory(base_config(tmp_path))
    d.config_path.write_text(yaml.safe_dump(base_config(tmp_path)))
    never = _status(d)
    assert never.returncode == 3, never.stdout  # before: 0 with no daemon at all
    assert "daemon: not running" in never.stdout
    d.start()
    d.wait_ready()
    up = _status(d)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"daemon: running (pid {d.proc.pid}" in up.stdout
    assert d.stop() == 0
    stopped = _status(d)
    assert stopped.returncode == 3 and "daemon: not running: stopped" in stopped.stdout


def test_status_after_kill_9_is_dead_at_once(tmp_path: Path, daemon_factory) -> None:
    """The pid is checked when asked (a zombie not yet reaped is dead too), not inferred from
    the age of the last status."""
    (tmp_path / "inbox").mkdir()
    d = daemon_factory(base_config(tmp_path)).start()
    d.wait_ready()
    assert _status(d).returncode == 0
    os.kill(d.proc.pid, signal.SIGKILL)  # not reaped yet: a zombie, as under a slow parent
    out = _status(d)
    assert out.returncode == 1, out.stdout
    assert "daemon: dead" in out.stdout and "without stopping" in out.stdout
    d.wait(30)
    assert _status(d).returncode == 1


def test_unreadable_journal_is_unknown(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.sqlite").write_bytes(b"not a database\n" * 100)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base_config(tmp_path)))
    out = run_cli("status", "-c", cfg)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "daemon: unknown: journal unreadable" in out.stdout and "journal.sqlite" in out.stdout
    assert "Traceback" not in out.stderr


def test_failed_reload_is_a_problem_until_one_works(tmp_path: Path, daemon_factory) -> None:
    config = base_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    d = daemon_factory(config).start()
    d.wait_ready()
    good = d.config_path.read_text()
    (tmp_path / "afile").write_text("a file where the new inbox's parent should be\n")
    bad = base_config(tmp_path)  # valid YAML (status reads it too), but cannot be set up
    bad["inboxes"].append({"name": "new", "path": str(tmp_path / "afile" / "inbox")})
    d.config_path.write_text(yaml.safe_dump(bad))
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.events("config.reload_failed"), 30, "config.reload_failed")
    d.wait_for(lambda: "reload failed" in _status(d).stdout, 30, "the failed reload in status")
    out = _status(d)
    assert out.returncode == 0, "a plain probe does not fail a running daemon"
    assert "problem: reload failed at" in out.stdout and "old config" in out.stdout
    strict = _status(d, "--problems-exit")
    assert strict.returncode == 150
    data = json.loads(_status(d, "--json").stdout)
    assert data["state"] == "running" and data["pid"] == d.proc.pid and data["exit_code"] == 0
    assert any("reload failed" in p for p in data["problems"])
    assert data["jobs"]["done"] == 0 and data["failures"] == []
    d.config_path.write_text(good)
    d.signal(signal.SIGHUP)
    d.wait_for(lambda: d.events("config.reloaded"), 30, "config.reloaded")
    d.wait_for(lambda: _status(d, "--problems-exit").returncode == 0, 30, "problem cleared")
    assert d.stop() == 0


def test_config_that_no_longer_passes_is_a_problem_not_78(tmp_path: Path, daemon_factory) -> None:
    """The daemon runs on the config it loaded; a file that stopped passing since (its rule's
    labelmap deleted) is a problem of that daemon, and a file that is not even YAML leaves the
    state unknown (4) unless --state-dir says where it is."""
    labelmap = tmp_path / "labelmap.txt"
    labelmap.write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:255,0,0::\n")
    config = base_config(tmp_path)
    config["rules"][0]["options"] = {"labelmap": str(labelmap)}
    (tmp_path / "inbox").mkdir()
    d = daemon_factory(config).start()
    d.wait_ready()
    labelmap.unlink()
    out = _status(d)
    assert out.returncode == 0, out.stdout + out.stderr  # before: 78, whatever the daemon did
    assert f"daemon: running (pid {d.proc.pid}" in out.stdout
    assert "problem: config" in out.stdout and "labelmap" in out.stdout
    assert _status(d, "--problems-exit").returncode == 150
    d.config_path.write_text("inboxes: [\n")
    unknown = _status(d)
    assert unknown.returncode == 4 and "daemon: unknown: config unreadable" in unknown.stdout
    assert "--state-dir" in unknown.stdout and "Traceback" not in unknown.stderr
    given = _status(d, "--state-dir", str(tmp_path / "state"))
    assert given.returncode == 0 and "problem: config" in given.stdout, given.stdout
    assert d.stop() == 0
