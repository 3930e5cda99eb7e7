"""Issue 17 notifications: a configured command runs on a failed job and on a fault that starts
or ends, with the facts in ``SMASKD_*`` variables and as JSON on stdin; it is time-limited and
never holds the main loop up; a missing one is refused by ``check-config``.

The command is a real shell script written into tmp_path. The fault is a transient read error
injected at the worker's read point (``SMASKD_FAULT=read_error``, as in test_transient.py),
lasting while a flag file exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco_bytes, files

RECORDER = """#!/bin/sh
# one file per run: the SMASKD_ variables, a separator, then stdin
out="$1/$$.txt"
{ env | grep '^SMASKD_' | sort; echo ---; cat; } > "$out.tmp" && mv "$out.tmp" "$out"
"""

HANG = """#!/bin/sh
# a notifier that hangs: a child that sleeps, the shell waiting for it
sleep 30 &
echo "$$ $!" > "$1/pids.tmp" && mv "$1/pids.tmp" "$1/pids"
wait
"""


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def _drop(inbox: Path, name: str, data: bytes) -> None:
    tmp = inbox.parent / f".{name}"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def _records(folder: Path) -> list[tuple[dict[str, str], dict]]:
    """(environment, stdin JSON) of each finished run of the recorder."""
    found = []
    for path in sorted(folder.glob("*.txt")):
        env_text, _, stdin = path.read_text().partition("---\n")
        env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
        found.append((env, json.loads(stdin)))
    return found


def _of(records: list[tuple[dict[str, str], dict]], event: str) -> list[tuple[dict, dict]]:
    return [r for r in records if r[0].get("SMASKD_EVENT") == event]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_command_runs_on_failed_job_and_fault_start_and_end(tmp_path: Path, daemon_factory) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    script = _script(tmp_path, "notify.sh", RECORDER)
    flag = tmp_path / "share-is-flaky"
    flag.touch()
    config = base_config(tmp_path, notify={"command": [str(script), str(notes)], "timeout": "10s"})
    d = daemon_factory(config, env={"SMASKD_FAULT": f"read_error:flaky:EIO:{flag}"})
    d.start()
    d.wait_ready()
    inbox = tmp_path / "inbox"
    _drop(inbox, "bad.json", b'{"neither": "coco nor datumaro"}')
    d.wait_for(lambda: _of(_records(notes), "job_failed"), 30, "the job_failed notification")
    _drop(inbox, "flaky.json", coco_bytes())
    d.wait_for(lambda: _of(_records(notes), "fault_started"), 30, "fault_started")
    flag.unlink()  # the share is back
    d.wait_for(lambda: _of(_records(notes), "fault_ended"), 60, "fault_ended")
    d.wait_for(lambda: "flaky.zip" in files(tmp_path / "outbox"), 30, "the result")

    [(env, data)] = _of(_records(notes), "job_failed")
    assert env["SMASKD_INPUT"] == "bad.json" and env["SMASKD_RULE"] == "auto"
    assert env["SMASKD_INBOX"] == "in" and env["SMASKD_HOST_ID"] == "testhost"
    assert env["SMASKD_ERROR"] and env["SMASKD_ERROR_TYPE"]
    assert env["SMASKD_MOVED_TO"] == str(inbox / "failed" / "bad.json")
    assert "SMASKD_FAULT" not in env  # the daemon's own variables are not passed on
    assert data["event"] == "job_failed" and data["input"] == "bad.json"
    assert data["error"] == env["SMASKD_ERROR"] and data["job_id"] == env["SMASKD_JOB_ID"]
    [(env, data)] = _of(_records(notes), "fault_started")
    assert env["SMASKD_FAULT_KIND"] == "read" and "EIO" in env["SMASKD_FAULT_REASON"]
    assert "flaky.json" in env["SMASKD_FAULT_PATH"] and data["fault_kind"] == "read"
    [(env, data)] = _of(_records(notes), "fault_ended")
    assert env["SMASKD_FAULT_PATH"] == data["fault_path"] and data["released"] == 1

    inbox.rename(tmp_path / "unmounted")  # an inbox gone with no job waiting for it
    d.wait_for(lambda: len(_of(_records(notes), "fault_started")) == 2, 30, "inbox missing")
    (tmp_path / "unmounted").rename(inbox)
    d.wait_for(lambda: len(_of(_records(notes), "fault_ended")) == 2, 30, "inbox back")
    started = _of(_records(notes), "fault_started")
    assert [env["SMASKD_FAULT_PATH"] for env, _ in started].count(str(inbox)) == 1
    assert {env["SMASKD_FAULT_KIND"] for env, _ in started} == {"read", "dir"}
    assert not d.events("notify.failed")


def test_slow_command_does_not_block_and_is_killed_at_its_timeout(tmp_path: Path,
                                                                   daemon_factory) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    script = _script(tmp_path, "hang.sh", HANG)
    config = base_config(tmp_path, notify={"command": [str(script), str(notes)],
                                           "timeout": "8s", "on": ["job_failed"]})
    d = daemon_factory(config)
    d.start()
    d.wait_ready()
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    _drop(inbox, "bad.json", b"[1, 2")
    pids = d.wait_for(lambda: (notes / "pids").exists() and (notes / "pids").read_text().split(),
                      30, "the notifier to start")
    shell, sleeper = map(int, pids)
    for name in ("a.json", "b.json"):
        _drop(inbox, name, coco_bytes())
    d.wait_for(lambda: {"a.zip", "b.zip"} <= set(files(outbox))
               and len(d.events("job.done")) == 2, 30, "both results")
    # the loop went on while the notifier hung: both jobs were done before it was killed (the
    # timeout leaves a loaded machine 8 s for two tiny jobs; a blocked loop would do none)
    order = [e["event"] for e in d.events() if e.get("event") in ("job.done", "notify.timeout")]
    assert order[:2] == ["job.done", "job.done"], order
    [timeout] = d.wait_for(lambda: d.events("notify.timeout"), 30, "notify.timeout")
    assert timeout["pid"] == shell and timeout["notify_event"] == "job_failed"
    d.wait_for(lambda: not _alive(shell) and not _alive(sleeper), 10,
               "the notifier's whole process group to be killed")
    assert d.stop() == 0


def test_check_config_refuses_a_missing_or_non_executable_command(tmp_path: Path) -> None:
    script = tmp_path / "notify.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    path = tmp_path / "c.yaml"
    for command, needle in (([str(tmp_path / "nope.sh")], "no such program"),
                            ([str(script)], "not executable"),
                            (["no-such-notifier-xyz"], "not found on PATH"),
                            (["relative/notify.sh"], "absolute path")):
        path.write_text(yaml.safe_dump(base_config(tmp_path, notify={"command": command})))
        out = run_cli("check-config", path)
        assert out.returncode == 78, out
        assert "notify.command[0]" in out.stderr and needle in out.stderr, out.stderr
    script.chmod(0o755)
    path.write_text(yaml.safe_dump(base_config(tmp_path, notify={"command": [str(script)]})))
    assert run_cli("check-config", path).returncode == 0


def test_an_inbox_missing_at_start_is_told_and_its_return_too(tmp_path: Path,
                                                            daemon_factory) -> None:
    """An inbox whose share is not mounted when the daemon starts was only logged: no
    fault_started, and so its fault_ended was dropped as never started."""
    notes = tmp_path / "notes"
    notes.mkdir()
    script = _script(tmp_path, "notify.sh", RECORDER)
    share = tmp_path / "share"  # not there yet: the daemon creates only the inbox's last part
    config = base_config(tmp_path, notify={"command": [str(script), str(notes)]},
                         inboxes=[{"name": "in", "path": str(share / "inbox"), "settle": "0.3s",
                                   "rescan": "5s"}])
    d = daemon_factory(config).start()
    d.wait_for(lambda: _of(_records(notes), "fault_started"), 30, "fault_started")
    (share / "inbox").mkdir(parents=True)  # the share is mounted, its inbox folder on it
    d.wait_for(lambda: _of(_records(notes), "fault_ended"), 30, "fault_ended")
    [(env, _)] = _of(_records(notes), "fault_started")
    assert env["SMASKD_FAULT_PATH"] == str(share / "inbox") and env["SMASKD_FAULT_KIND"] == "dir"
    assert len(_of(_records(notes), "fault_ended")) == 1
    assert d.stop() == 0
