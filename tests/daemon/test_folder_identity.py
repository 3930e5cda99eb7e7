"""Folders that alias each other are refused by identity, at check-config, start-up and later.

Issue 12 case 2: check-config compared path strings, so an outbox that is a symlink into the
inbox converted its own results in a loop, inbox A's done/ inside inbox B converted every file
twice, and an outbox equal to a failed/ passed.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files


def _inbox(tmp: Path, name: str, **extra) -> dict:
    return {"name": name, "path": str(tmp / name), "settle": "0.3s", **extra}


def _aliased_outbox(tmp: Path) -> tuple[dict, str, str]:
    (tmp / "in").mkdir()
    os.symlink(tmp / "in", tmp / "results")  # looks like a folder of its own
    config = base_config(tmp, inboxes=[_inbox(tmp, "in")],
                         rules=[{"name": "r", "outbox": str(tmp / "results" / "out")}])
    return config, "rules[0].outbox", "inboxes[0].path"


def _done_in_other_inbox(tmp: Path) -> tuple[dict, str, str]:
    (tmp / "b").mkdir()
    os.symlink(tmp / "b" / "archive", tmp / "a-done")
    config = base_config(tmp, inboxes=[_inbox(tmp, "a", done=str(tmp / "a-done")),
                                       _inbox(tmp, "b")],
                         rules=[{"name": "r", "outbox": str(tmp / "out")}])
    return config, "inboxes[0].done", "inboxes[1].path"


def _outbox_is_a_failed_folder(tmp: Path) -> tuple[dict, str, str]:
    config = base_config(tmp, inboxes=[_inbox(tmp, "a", failed=str(tmp / "bad"))],
                         rules=[{"name": "r", "outbox": str(tmp / "bad")}])
    return config, "rules[0].outbox", "inboxes[0].failed"


def _inbox_inside_an_outbox(tmp: Path) -> tuple[dict, str, str]:
    config = base_config(tmp, inboxes=[_inbox(tmp, "a"), {"name": "b",
                                                          "path": str(tmp / "out" / "b")}],
                         rules=[{"name": "r", "outbox": str(tmp / "out")}])
    return config, "inboxes[1].path", "rules[0].outbox"


def _inbox_behind_a_symlink_into_another(tmp: Path) -> tuple[dict, str, str]:
    (tmp / "a").mkdir()
    os.symlink(tmp / "a", tmp / "link")
    config = base_config(tmp, inboxes=[_inbox(tmp, "a"), {"name": "b",
                                                          "path": str(tmp / "link" / "sub")}],
                         rules=[{"name": "r", "outbox": str(tmp / "out")}])
    return config, "inboxes[1].path", "inboxes[0].path"


@pytest.mark.parametrize("case", [_aliased_outbox, _done_in_other_inbox, _outbox_is_a_failed_folder,
                                  _inbox_inside_an_outbox, _inbox_behind_a_symlink_into_another],
                         ids=lambda f: f.__name__.strip("_"))
def test_check_config_and_start_refuse_aliased_folders_naming_both_keys(
        tmp_path: Path, daemon_factory, case) -> None:
    config, inner, outer = case(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_cli("check-config", path)
    assert out.returncode == 78, out.stdout
    assert out.stderr.splitlines()[0].startswith(f"smaskd check-config: error: {inner}: ")
    assert f"({outer} = " in out.stderr
    d = daemon_factory(config, "--once").start()
    assert d.wait(60) == 78
    assert inner in d.stderr() or any(inner in e["error"] for e in d.events("daemon.config_error"))
    assert not (tmp_path / "state").exists(), "a refused config creates nothing"


def _status(tmp: Path) -> dict:
    try:
        return json.loads((tmp / "state" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def test_an_outbox_that_appears_later_inside_the_inbox_is_refused(tmp_path: Path,
                                                                  daemon_factory) -> None:
    """The outbox's share is not mounted at start; what then appears at its mount point is a
    symlink into the inbox. Nothing is published there (no loop), STATUS says why; once the
    mount point is a real folder the waiting job goes through."""
    inbox = tmp_path / "inbox"
    share = tmp_path / "share"
    config = base_config(tmp_path, rules=[{"name": "r", "outbox": str(share / "out")}])
    d = daemon_factory(config).start()
    d.wait_ready()
    os.symlink(inbox, share)
    d.wait_for(lambda: d.events("outbox.refused"), 30, "outbox.refused")
    (inbox / "a.json").write_bytes(coco_bytes())
    problem = d.wait_for(lambda: [p for p in _status(tmp_path).get("problems", [])
                                  if "rules[0].outbox" in p], 30, "the problem in status.json")
    assert "inbox 'in' (inboxes[0].path = " in problem[0] and "picked up again" in problem[0]
    d.wait_for(lambda: d.events("job.waiting"), 30, "the job waiting")
    out = run_cli("status", "-c", d.config_path)
    assert "problem: outbox of rule r not used: rules[0].outbox" in out.stdout
    time.sleep(2.0)  # a loop would have published (and re-claimed) by now
    assert not (inbox / "out").exists() or files(inbox / "out") == []
    assert not d.events("job.done")
    os.unlink(share)  # the real share is mounted
    share.mkdir()
    d.wait_for(lambda: d.events("job.done"), 60, "job.done once the outbox is fine")
    assert d.events("outbox.accepted")
    assert d.stop() == 0
    assert files(share / "out") == ["a.log.jsonl", "a.zip"]
    assert files(inbox / "done") == ["a.json"]


def test_a_state_dir_behind_a_symlink_into_an_inbox_is_refused(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "in", tmp_path / "var")
    config = base_config(tmp_path, state_dir=str(tmp_path / "var" / "state"),
                         inboxes=[_inbox(tmp_path, "in")])
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_cli("check-config", path)
    assert out.returncode == 78
    assert "state_dir: state_dir is inside inbox 'in'" in out.stderr


def test_an_inbox_that_appears_later_inside_another_is_not_scanned(tmp_path: Path,
                                                                   daemon_factory) -> None:
    """Inbox b's share is mounted after start, and it turns out to be inside inbox a: neither
    nested inbox is scanned (each would claim the other's files), STATUS says why, and the
    other rules and folders are untouched; when it is fixed both work again."""
    a, share = tmp_path / "a", tmp_path / "share"
    config = base_config(tmp_path, inboxes=[_inbox(tmp_path, "a", recursive=True),
                                            {"name": "b", "path": str(share / "b"),
                                             "settle": "0.3s"}])
    d = daemon_factory(config).start()
    d.wait_ready()
    os.symlink(a, share)
    # one line per inbox: wait for both (the test's reader can be between the two lines)
    refused = d.wait_for(lambda: {e["inbox"] for e in d.events("inbox.refused")} >= {"a", "b"}
                         and d.events("inbox.refused"), 60, "inbox.refused for a and b")
    assert "inboxes[1].path" in refused[0]["reason"] and "inboxes[0].path" in refused[0]["reason"]
    (a / "b").mkdir()
    (a / "b" / "x.json").write_bytes(coco_bytes())
    (a / "y.json").write_bytes(coco_bytes())
    # status.json is rewritten by the loop: wait for it to say so, rather than read it once
    d.wait_for(lambda: any("inbox b not used: inboxes[1].path" in p
                           for p in _status(tmp_path).get("problems", [])), 60, "b in status")
    time.sleep(2.0)  # nothing is claimed in either (settle 0.3 s: a scan would have by now)
    assert (a / "b" / "x.json").exists() and (a / "y.json").exists()
    assert not d.events("job.claimed")
    os.unlink(share)
    share.mkdir()
    # a is recursive: b is now an ordinary sub-folder of it
    d.wait_for(lambda: len(d.events("job.done")) >= 2, 60, "inbox a works again")
    assert d.events("inbox.accepted")
    assert d.stop() == 0
    assert files(a / "done") == ["x.json", "y.json"]



def test_an_outbox_bind_mounted_onto_the_inbox_is_seen_through(tmp_path: Path) -> None:
    """A bind mount has another real path but the same device and inode: compared by path
    string (even resolved) it passes; by identity it is the inbox."""
    inbox, mirror = tmp_path / "in", tmp_path / "mirror"
    inbox.mkdir()
    mirror.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    done = subprocess.run(["mount", "--bind", str(inbox), str(mirror)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount: {done.stderr.strip()}")
    try:
        config = base_config(tmp_path, inboxes=[_inbox(tmp_path, "in")],
                             rules=[{"name": "r", "outbox": str(mirror / "out")}])
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        out = run_cli("check-config", path)
        assert out.returncode == 78, out.stdout
        assert "rules[0].outbox: is inside inbox 'in' (inboxes[0].path = " in out.stderr
    finally:
        subprocess.run(["umount", str(mirror)], check=False)
