"""Journal and state_dir problems are the operator's to fix: named, explained, the right exit.

Issue 12 case 4: a corrupt or read-only journal was exit 70 "internal error: DatabaseError"
with no path; an unwritable state_dir ``OperationalError: unable to open database file``; two
daemons on one state_dir ran side by side (and the status then called the live one stopped).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import yaml

from smaskd.daemon.journal import Journal
from tests.conftest import run_cli
from tests.daemon.conftest import NOBODY, as_nobody, base_config


def _config_file(tmp: Path, **overrides) -> Path:
    path = tmp / "c.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp, **overrides)))
    return path


def test_a_corrupt_journal_is_an_io_error_naming_it_and_what_to_do(tmp_path: Path,
                                                                   daemon_factory) -> None:
    state = tmp_path / "state"
    state.mkdir()
    journal = state / "journal.sqlite"
    journal.write_bytes(b"this is not a database, it was overwritten by something\n" * 100)
    d = daemon_factory(base_config(tmp_path), "--once").start()
    assert d.wait(60) == 74
    err = d.stderr()
    assert "internal error" not in err
    assert str(journal) in err and "not a readable SQLite database" in err
    assert f"mv {journal} {journal}.broken" in err
    failed = d.events("daemon.start_failed")
    assert failed and str(journal) in failed[0]["error"] and failed[0]["exit_code"] == 74
    assert not (tmp_path / "inbox").exists(), "nothing is created before the journal opens"
    out = run_cli("status", "-c", d.config_path)
    assert out.returncode == 4 and str(journal) in out.stdout  # LSB: status unknown
    assert "not a readable SQLite database" in out.stdout
    assert "internal error" not in out.stderr


def test_an_unwritable_state_dir_names_it_and_the_user(tmp_path: Path, daemon_factory) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # root's; the daemon runs as nobody
    d = daemon_factory(base_config(tmp_path), "--once", prefix=as_nobody()).start()
    assert d.wait(60) == 73
    err = d.stderr()
    assert f"{state}: state_dir cannot be written (Permission denied)" in err
    assert "'nobody'" in err and f"chown nobody {state}" in err
    assert "internal error" not in err and "OperationalError" not in err


def test_a_read_only_journal_names_it(tmp_path: Path, daemon_factory) -> None:
    state = tmp_path / "state"
    Journal(state).close()  # root's journal, then the state_dir is handed to nobody
    os.chown(state, NOBODY, NOBODY)
    for leftover in state.glob("journal.sqlite-*"):
        leftover.unlink()
    (state / "journal.sqlite").chmod(0o644)
    d = daemon_factory(base_config(tmp_path), "--once", prefix=as_nobody()).start()
    assert d.wait(60) == 73
    err = d.stderr()
    assert f"{state / 'journal.sqlite'}: the journal cannot be written" in err
    assert "internal error" not in err and "DatabaseError" not in err


def test_a_second_daemon_on_one_state_dir_is_refused(tmp_path: Path, daemon_factory) -> None:
    first = daemon_factory(base_config(tmp_path)).start()
    first.wait_ready()
    other = dict(base_config(tmp_path), host_id="otherhost",
                 inboxes=[{"name": "b", "path": str(tmp_path / "inbox2"), "settle": "0.3s"}],
                 rules=[{"name": "auto", "outbox": str(tmp_path / "outbox2")}])
    second = daemon_factory(other)
    second.config_path = tmp_path / "second.yaml"
    second.config_path.write_text(yaml.safe_dump(other))
    second.args = ["-c", str(second.config_path)]
    second.start()
    assert second.wait(60) == 75, second.stderr()
    busy = second.events("daemon.busy")
    assert busy and f"another smaskd (pid {first.proc.pid})" in busy[0]["error"]
    assert "give each daemon its own state_dir" in busy[0]["error"]
    assert not (tmp_path / "inbox2").exists(), "the refused daemon created nothing"
    assert first.proc.poll() is None, "the first daemon lives on"
    out = run_cli("status", "-c", second.config_path)
    assert out.returncode == 0, out.stderr
    assert f"daemon: running (pid {first.proc.pid}" in out.stdout
    assert first.stop() == 0
    rows = sqlite3.connect(tmp_path / "state" / "journal.sqlite").execute(
        "SELECT COUNT(*) FROM jobs").fetchone()
    assert rows == (0,)
