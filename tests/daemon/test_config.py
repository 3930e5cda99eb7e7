"""Config: strict, typed, errors name the key path; the examples in config/ stay valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smaskd.config import load_config, parse_config, parse_duration, parse_size
from smaskd.errors import ConfigError
from tests.conftest import REPO, run_cli


def minimal(tmp: Path = Path("/srv/x")) -> dict:
    return {"state_dir": str(tmp / "state"),
            "inboxes": [{"name": "a", "path": str(tmp / "in")}],
            "rules": [{"name": "r", "action": "export", "outbox": str(tmp / "out")}]}


@pytest.mark.parametrize("example", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(example: Path) -> None:
    config = load_config(example)
    assert config.inboxes and config.rules


def test_defaults() -> None:
    config = parse_config(minimal())
    inbox, rule = config.inboxes[0], config.rules[0]
    assert inbox.done_dir == Path("/srv/x/in/done") and inbox.failed_dir == Path("/srv/x/in/failed")
    assert rule.on_conflict == "rename" and rule.on_success == "move"
    assert config.job_timeout == 300 and config.file_mode == 0o640 and config.umask == 0o027
    assert config.unmatched == "fail" and config.workers >= 1


@pytest.mark.parametrize("value,seconds", [("2s", 2), ("500ms", 0.5), ("1.5m", 90), (3, 3),
                                           ("1h", 3600), (0.25, 0.25)])
def test_durations(value, seconds) -> None:
    assert parse_duration(value, "x") == seconds


@pytest.mark.parametrize("value,size", [("512MiB", 512 * 2**20), ("4GiB", 4 * 2**30),
                                        ("10MB", 10**7), (1024, 1024)])
def test_sizes(value, size) -> None:
    assert parse_size(value, "x") == size


def _with(path: str, value) -> dict:
    data = minimal()
    target, *keys = path.split(".")
    node = data
    parts = [target, *keys]
    for part in parts[:-1]:
        name, _, index = part.partition("[")
        node = node[name] if not index else node[name][int(index[:-1])]
    last = parts[-1]
    name, _, index = last.partition("[")
    if index:
        node[name][int(index[:-1])] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize("path,value,where,message", [
    ("rules[0].action", "convert", "rules[0].action", "expected export|import|auto"),
    ("rules[0].on_conflict", "overwrite", "rules[0].on_conflict", "rename|replace|skip"),
    ("rules[0].outbox", "out", "rules[0].outbox", "absolute"),
    ("rules[0].outbox", "/srv/x/in/out", "rules[0].outbox", "inside inbox"),
    ("rules[0].match", {"inbox": "nope"}, "rules[0].match.inbox", "unknown inbox"),
    ("rules[0].match", {"regex": "(["}, "rules[0].match.regex", "does not compile"),
    ("rules[0].match", {"kind": "images"}, "rules[0].match.kind", "annotations|masks"),
    ("rules[0].options", {"polygons": "yes"}, "rules[0].options.polygons", "true or false"),
    ("rules[0].options", {"colour": 1}, "rules[0].options.colour", "unknown option"),
    ("rules[0].options", {"labelmap": "lm.txt"}, "rules[0].options.labelmap", "absolute"),
    ("rules[0].typo", 1, "rules[0].typo", "unknown key"),
    ("inboxes[0].observer", "fanotify", "inboxes[0].observer", "auto|inotify|polling"),
    ("inboxes[0].settle", "soon", "inboxes[0].settle", "duration"),
    ("inboxes[0].recursive", "yes", "inboxes[0].recursive", "true or false"),
    ("inboxes[0].path", "inbox", "inboxes[0].path", "absolute"),
    ("workers", 0, "workers", "integer"),
    ("workers", "2", "workers", "integer"),
    ("unmatched", "drop", "unmatched", "fail|leave"),
    ("max_input_bytes", "lots", "max_input_bytes", "size"),
    ("file_mode", "rw-r-----", "file_mode", "octal"),
    ("state_dir", "/srv/x/in/state", "state_dir", "inside inbox"),
    ("host_id", "a/b", "host_id", "folder name"),
    ("extra", 1, "extra", "unknown key"),
])
def test_errors_name_the_key_path(path, value, where, message) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(path, value))
    assert info.value.where == where
    assert message in info.value.message
    assert str(info.value).startswith(f"{where}: ")


def test_nested_inboxes_and_duplicates() -> None:
    data = minimal()
    data["inboxes"].append({"name": "b", "path": "/srv/x/in/sub"})
    with pytest.raises(ConfigError, match="nest"):
        parse_config(data)
    data = minimal()
    data["rules"].append(dict(data["rules"][0]))
    with pytest.raises(ConfigError, match="duplicate rule"):
        parse_config(data)


def test_yaml_python_tags_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workers: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(bad)


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(minimal(tmp_path)))
    out = run_cli("check-config", good)
    assert out.returncode == 0 and "ok" in out.stdout
    data = minimal(tmp_path)
    data["rules"].insert(0, {"name": "first", "outbox": str(tmp_path / "o")})
    data["rules"][1]["action"] = "convert"
    good.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", good)
    assert out.returncode == 78
    assert "rules[1].action: expected export|import|auto" in out.stderr
    assert run_cli("check-config", tmp_path / "missing.yaml").returncode == 78


def test_route_cli(tmp_path: Path) -> None:
    data = minimal(tmp_path)
    data["rules"] = [
        {"name": "masks", "match": {"kind": "masks"}, "action": "import", "outbox": str(tmp_path / "m")},
        {"name": "json", "match": {"inbox": "a", "glob": "*.json"}, "outbox": str(tmp_path / "j")},
    ]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.json").write_text("{}")
    (tmp_path / "in" / "y.json").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip, misnamed
    out = run_cli("route", "-c", cfg, tmp_path / "in" / "x.json", tmp_path / "in" / "y.json",
                  tmp_path / "elsewhere.txt")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "rule json" in lines[0] and str(tmp_path / "j") in lines[0]
    assert "rule masks" in lines[1]  # by content, not by name
    assert "no rule matched" in lines[2]


@pytest.mark.parametrize("value", ["256MiB", "100MB", 300 * 2**20, "511MiB"])
def test_worker_memory_below_what_a_worker_needs_is_refused(tmp_path: Path, value) -> None:
    """Issue 12 case 5: 256 MiB passed check-config, then every job failed with a memory error
    and good inputs landed in failed/ (a worker needs ~360 MiB of address space to start)."""
    data = minimal(tmp_path)
    data["worker_memory"] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", path)
    assert out.returncode == 78, out.stdout
    assert "worker_memory: " in out.stderr and "less than a worker needs to start" in out.stderr
    assert "at least 512MiB" in out.stderr


@pytest.mark.parametrize("value,expected", [("512MiB", 512 * 2**20), (0, None),
                                            ("4GiB", 4 * 2**30)])
def test_worker_memory_at_or_above_the_floor_or_unlimited(value, expected) -> None:
    data = minimal()
    data["worker_memory"] = value
    assert parse_config(data).worker_memory == expected


def test_check_config_warns_below_what_the_largest_frame_needs(tmp_path: Path) -> None:
    """Issue 12 cases 5/7: valid, but a 16384² frame would fail with a memory error."""
    data = minimal(tmp_path)
    path = tmp_path / "c.yaml"
    data["worker_memory"] = "1GiB"
    path.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", path)
    assert out.returncode == 0 and "ok" in out.stdout
    assert "warning: worker_memory: 1024 MiB is less than a worker needs for the largest " \
           "accepted frame (16384x16384 pixels" in out.stderr
    data["worker_memory"] = "4GiB"
    path.write_text(yaml.safe_dump(data))
    out = run_cli("check-config", path)
    assert out.returncode == 0 and "warning" not in out.stderr
