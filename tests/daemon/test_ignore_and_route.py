"""Issue 17: desktop litter is ignored by default, rule globs ignore case, and ``smaskd route``
says what the daemon itself would do with each file (and why)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files

LITTER = ["Thumbs.db", "desktop.ini", ".DS_Store", "._scan.json", "THUMBS.DB", "ehthumbs.db"]


def _config(tmp_path: Path, **match) -> dict:
    return base_config(tmp_path, rules=[{"name": "json", "match": {"glob": "*.json", **match},
                                         "action": "export", "outbox": str(tmp_path / "outbox")}])


def test_desktop_litter_is_ignored_and_globs_ignore_case(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in LITTER:
        (inbox / name).write_bytes(b"\0junk from a desktop\n")
    (inbox / "SCAN.JSON").write_bytes(coco_bytes())  # a Windows client's upper-case name
    d = daemon_factory(_config(tmp_path), "--once").start()
    assert d.wait(120) == 0, d.lines[-5:]
    assert files(tmp_path / "outbox") == ["SCAN.log.jsonl", "SCAN.zip"]
    assert not (inbox / "failed").exists() or files(inbox / "failed") == []
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == sorted(LITTER)


def test_case_sensitive_glob_opt_out(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "SCAN.JSON").write_bytes(coco_bytes())
    d = daemon_factory(_config(tmp_path, case_sensitive=True), "--once").start()
    assert d.wait(120) == 65
    assert "SCAN.JSON" in files(inbox / "failed")


def test_route_uses_the_daemons_listing_and_says_why(tmp_path: Path) -> None:
    config = _config(tmp_path)
    config["inboxes"][0]["ignore"] = ["*.bak"]
    config["rules"].insert(0, {"name": "masks", "match": {"kind": "masks"}, "action": "import",
                               "outbox": str(tmp_path / "m")})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / "done").mkdir()
    (inbox / "SCAN.JSON").write_bytes(coco_bytes())
    (inbox / "y.json").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip, misnamed
    for name in ("Thumbs.db", "old.json.bak", "sub/x.json", "done/a.json"):
        (inbox / name).write_bytes(coco_bytes())
    paths = ["SCAN.JSON", "y.json", "Thumbs.db", "old.json.bak", "sub/x.json", "done/a.json"]
    out = run_cli("route", "-c", cfg, *[inbox / p for p in paths])
    assert out.returncode == 0, out.stderr
    lines = dict(zip(paths, out.stdout.splitlines()))
    assert "rule json (matched glob '*.json')" in lines["SCAN.JSON"]
    assert "rule masks" in lines["y.json"] and "kind masks by content" in lines["y.json"]
    assert "not taken" in lines["Thumbs.db"] and "ignore glob" in lines["Thumbs.db"]
    assert "not taken" in lines["old.json.bak"] and "'*.bak'" in lines["old.json.bak"]
    assert "not taken" in lines["sub/x.json"] and "not recursive" in lines["sub/x.json"]
    assert "not taken" in lines["done/a.json"] and "done/" in lines["done/a.json"]
    config["inboxes"][0]["recursive"] = True
    cfg.write_text(yaml.safe_dump(config))
    out = run_cli("route", "-c", cfg, inbox / "sub" / "x.json")
    assert "rule json" in out.stdout, out.stdout


def test_route_knows_ready_markers(tmp_path: Path) -> None:
    """The daemon's marker convention (markers.py), not a copy: a marker is never a job, a data
    file without its marker waits, one with it is routed."""
    config = _config(tmp_path)
    config["inboxes"][0]["ready_marker"] = ".done"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("a.json", "b.json"):
        (inbox / name).write_bytes(coco_bytes())
    (inbox / "b.json.done").write_bytes(b"")
    paths = ["a.json", "b.json", "b.json.done"]
    out = run_cli("route", "-c", cfg, *[inbox / p for p in paths])
    assert out.returncode == 0, out.stderr
    lines = dict(zip(paths, out.stdout.splitlines()))
    assert "waiting for its ready marker a.json.done" in lines["a.json"], lines
    assert "rule json" in lines["b.json"], lines
    assert "a ready marker, never a job" in lines["b.json.done"], lines
