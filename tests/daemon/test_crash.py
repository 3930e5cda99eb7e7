"""kill -9 of the daemon at every named moment, and at random ones: nothing lost, nothing twice.

The invariant checked after every restart (``assert_settled``): each dropped file ends with
exactly one result + log in the outbox, or exactly one report in failed/; nothing is left in
processing/ (claims, plan markers); no staging or temp file remains in the inbox tree or the
outbox; every journal row is in a terminal state. The crash points are listed in
``smaskd/daemon/faults.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from smaskd.daemon.faults import CRASH_POINTS
from tests.daemon.conftest import base_config, coco_bytes, journal_rows

BAD = b'{"images": [{"id": 1}], "annotations": [], "categories": "nope"}'


def names(folder: Path) -> list[str]:
    """Every name in a folder, hidden ones included (a hidden staging name is a bug here)."""
    return sorted(os.listdir(folder)) if folder.exists() else []


def stray_files(inbox: Path, *outboxes: Path) -> list[str]:
    """Temp, staging, claim and marker files anywhere under the inbox or in the outboxes.

    Allowed: hosts' heartbeats and processing locks under ``.smaskd``; nothing else there.
    """
    stray = []
    for root in (inbox, *outboxes):
        for folder, dirs, found in os.walk(root):
            rel = Path(folder).relative_to(root)
            for name in found:
                if rel == Path(".smaskd/hosts") and name.endswith(".heartbeat") \
                        and not name.startswith("."):
                    continue
                if rel == Path(".smaskd/processing") and name.endswith(".lock"):
                    continue
                if rel.parts[:1] == (".smaskd",) or name.startswith("."):
                    stray.append(str(Path(folder, name)))
    return stray


def assert_settled(tmp: Path, ok: set[str], failed: set[str], state_dirs: list[Path] | None = None,
                   inbox: Path | None = None, outbox: Path | None = None,
                   lost_allowed: bool = False) -> None:
    """The crash-safety invariant; names are the dropped file names (``a.json``)."""
    inbox = inbox or tmp / "inbox"
    outbox = outbox or tmp / "outbox"
    stem = lambda n: n.rsplit(".", 1)[0]  # noqa: E731
    expected_out = sorted([f"{stem(n)}.zip" for n in ok]
                          + [f"{stem(n)}.log.jsonl" for n in ok | failed])
    assert names(outbox) == expected_out, "outbox: not exactly one result and log per file"
    assert names(inbox / "done") == sorted(ok), "done/: not exactly the converted inputs"
    assert names(inbox / "failed") == sorted([*failed, *(f"{n}.error.json" for n in failed)]), \
        "failed/: not exactly one input and one report per failed file"
    assert sorted(p for p in names(inbox) if p not in {".smaskd", "done", "failed"}) == [], \
        "files left in the inbox"
    assert stray_files(inbox, outbox) == [], "leftover claim/marker/staging/temp files"
    for name in failed:
        report = json.loads((inbox / "failed" / f"{name}.error.json").read_text())
        assert report["input"] == name and report["error"]["message"], report
    rows = [r for d in (state_dirs or [tmp / "state"]) for r in journal_rows(d)]
    finished = [r for r in rows if r["state"] in ("done", "failed")]
    assert sorted(r["name"] for r in finished) == sorted(ok | failed), \
        f"journal: not one finished row per file: {[(r['name'], r['state']) for r in rows]}"
    assert {r["name"] for r in finished if r["state"] == "done"} == ok
    others = {r["state"] for r in rows} - {"done", "failed"}
    assert others <= ({"lost"} if lost_allowed else set()), f"non-terminal journal rows: {others}"


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(process_gone(p) for p in pids):
            return
        time.sleep(0.05)
    pytest.fail(f"worker(s) {[p for p in pids if not process_gone(p)]} outlived the daemon")


def drop(inbox: Path, name: str, data: bytes, old: bool = True) -> None:
    """Write via a temp name and rename, the way careful writers drop files."""
    inbox.mkdir(exist_ok=True)
    tmp = inbox / f".{name}.tmp"
    tmp.write_bytes(data)
    if old:  # settled at once on the start-up scan
        past = time.time() - 60
        os.utime(tmp, (past, past))
    os.rename(tmp, inbox / name)


# point → (is the victim a file that fails, expected exit of the first run)
SCENARIOS: dict[str, bool] = {
    "after_claim": False, "after_start": False, "kill_parent": False, "after_temp_write": False,
    "before_publish": False, "mid_publish": False, "after_publish": False, "after_journal": False,
    "mid_input_move": False, "after_input_move": False,
    "failing": True, "after_fail_log": True, "after_fail_move": True, "after_fail_report": True,
}


def test_every_crash_point_has_a_scenario() -> None:
    assert set(CRASH_POINTS) <= set(SCENARIOS)


@pytest.mark.parametrize("point", list(SCENARIOS))
def test_kill9_at_each_point_then_restart(tmp_path: Path, daemon_factory, point: str) -> None:
    """Die at ``point`` while converting ``victim``; a clean restart settles everything."""
    inbox = tmp_path / "inbox"
    bad_victim = SCENARIOS[point]
    drop(inbox, "victim.json", BAD if bad_victim else coco_bytes("victim"))
    drop(inbox, "other.json", coco_bytes("other"))
    drop(inbox, "broken.json", BAD)
    config = base_config(tmp_path, workers=1)
    first = daemon_factory(config, "--once", env={"SMASKD_FAULT": f"{point}:victim"}).start()
    code = first.wait(90)
    assert code == (-signal.SIGKILL if point == "kill_parent" else 137), \
        f"the daemon did not die at {point} (exit {code}):\n" + "".join(first.lines[-30:])
    rows = {r["name"]: r["state"] for r in journal_rows(tmp_path / "state")}
    assert point == "after_claim" or rows.get("victim.json") not in (None, "done", "failed"), rows

    second = daemon_factory(config, "--once").start()
    assert second.wait(90) == 65, "".join(second.lines[-30:]) + second.stderr()  # broken.json
    ok = {"other.json"} | (set() if bad_victim else {"victim.json"})
    failed = {"broken.json"} | ({"victim.json"} if bad_victim else set())
    assert_settled(tmp_path, ok, failed)
    if point in ("before_publish", "mid_publish", "after_publish", "after_journal",
                 "mid_input_move", "after_input_move", "after_fail_log", "after_fail_move",
                 "after_fail_report"):
        # past the worker: the restart finishes the recorded plan, it does not convert again
        assert not [e for e in second.events("job.started") if e["input"] == "victim.json"]


def _started_pids(d: Any) -> list[int]:
    return [e["pid"] for e in d.events("job.started")]


@pytest.mark.slow
def test_kill9_at_random_moments_three_times(tmp_path: Path, daemon_factory) -> None:
    """100 files dropped while the daemon runs; SIGKILL it 3 times at random; then settle."""
    seed = int(os.environ.get("SMASKD_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = base_config(tmp_path, workers=2)
    config["inboxes"][0]["settle"] = "0.1s"
    env = {"SMASKD_FAULT": "fake_convert:g"}  # the moments matter here, not the conversion
    good = {f"g{i:03d}.json" for i in range(90)}
    bad = {f"b{i:02d}.json" for i in range(10)}  # really converted: they fail in the worker
    pending = sorted(good | bad)
    rng.shuffle(pending)

    def put(name: str, old: bool) -> None:
        drop(inbox, name, BAD if name in bad else coco_bytes(name), old=old)

    for kill in range(3):
        d = daemon_factory(config, env=env).start()
        d.wait_ready(60)
        for _ in range(25):  # keep dropping while it works, so claims and admits get hit too
            if pending:
                put(pending.pop(), old=False)
        target = rng.randint(3, 20)
        d.wait_for(lambda: len(d.events("job.done")) + len(d.events("job.failed")) >= target, 90,
                   f"{target} jobs finished before kill {kill + 1} (seed {seed})")
        time.sleep(rng.uniform(0, 0.4))
        workers = _started_pids(d)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        wait_gone(workers)
    for name in pending:
        put(name, old=True)
    last = daemon_factory(config, "--once", env=env).start()
    assert last.wait(120) == 65, f"seed {seed}:\n" + "".join(last.lines[-30:]) + last.stderr()
    try:
        assert_settled(tmp_path, good, bad)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {e}") from None


def test_orphaned_worker_stops_writing_when_the_daemon_is_killed(tmp_path, daemon_factory) -> None:
    """kill -9 the daemon while its worker writes the output: the worker dies, writes no more,
    and the restart removes the partial file and publishes one whole result."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    drop(inbox, "slow.json", coco_bytes("slow"))
    config = base_config(tmp_path, workers=1)
    d = daemon_factory(config, env={"SMASKD_FAULT": "slow_write:slow:60"}).start()
    started = d.wait_for(lambda: d.events("job.started"), 60, "job.started")
    pid = started[0]["pid"]

    def partial() -> Path | None:
        found = [outbox / n for n in names(outbox) if n.endswith(".tmp")]
        return found[0] if found and found[0].stat().st_size > 0 else None

    temp = d.wait_for(partial, 60, "the worker writing its output")
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    wait_gone([pid])
    size = temp.stat().st_size
    time.sleep(0.5)  # the worker was writing every 0.1 s: a survivor would show here
    assert temp.stat().st_size == size, "a worker kept writing after its daemon died"
    assert names(outbox) == [temp.name]  # nothing was published by the orphan

    again = daemon_factory(config, "--once").start()
    assert again.wait(90) == 0, "".join(again.lines[-20:])
    assert_settled(tmp_path, {"slow.json"}, set())
    row = journal_rows(tmp_path / "state")[0]
    assert row["attempts"] == 2  # the killed run counted; the file ran once more, whole


def test_journal_of_an_older_smaskd_gains_the_new_columns(tmp_path: Path) -> None:
    """A journal written before ``failing``/``moved_to`` existed opens, migrates, and reads."""
    import sqlite3

    from smaskd.daemon.journal import Journal

    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "journal.sqlite")
    db.execute("CREATE TABLE jobs (job_id TEXT PRIMARY KEY, host_id TEXT NOT NULL, inbox TEXT NOT "
               "NULL, name TEXT NOT NULL, claim_path TEXT NOT NULL, rule TEXT, action TEXT, state "
               "TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, size INTEGER, sha256 TEXT, "
               "outputs TEXT, error TEXT, created REAL NOT NULL, updated REAL NOT NULL)")
    db.execute("INSERT INTO jobs VALUES ('20260101T000000-00000000', 'h', 'in', 'a.json', '/x', "
               "NULL, NULL, 'claimed', 1, 3, NULL, NULL, NULL, 1.0, 1.0)")
    db.commit()
    db.close()
    old = Journal(state, create=False).get("20260101T000000-00000000")  # read-only: as it is
    assert old is not None and old.detail is None and old.moved_to is None
    journal = Journal(state)
    journal.update("20260101T000000-00000000", state="failing", detail={"type": "X"},
                   moved_to="/failed/a.json")
    row = journal.get("20260101T000000-00000000")
    assert row is not None and row.detail == {"type": "X"} and row.moved_to == "/failed/a.json"
    assert row.state == "failing" and row.attempts == 1
