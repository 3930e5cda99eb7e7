"""A worker takes the next job after one that gave a result, and never after one that failed
(workers.py, "Reuse"): a fork per small file cost more than converting it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.daemon.conftest import base_config, coco_bytes


def test_a_worker_takes_the_next_job_after_a_clean_one_never_after_a_failed_one(
        tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = base_config(tmp_path, workers=1, inboxes=[
        {"name": "in", "path": str(inbox), "settle": "0s", "rescan": "1h"}])
    d = daemon_factory(config).start()
    d.wait_ready()

    def run(name: str, data: bytes, outcome: str) -> int:
        """Rename ``name`` in, wait for its outcome, return the pid of the worker that ran it."""
        (tmp_path / f".{name}").write_bytes(data)
        os.rename(tmp_path / f".{name}", inbox / name)
        d.wait_for(lambda: [e for e in d.events(outcome) if e["input"] == name], 60,
                   f"{outcome} of {name}")
        return next(e["pid"] for e in d.events("job.started") if e["input"] == name)

    first = run("a.json", coco_bytes("a"), "job.done")
    second = run("b.json", coco_bytes("b"), "job.done")
    failed = run("bad.json", b'{"images": [', "job.failed")
    after = run("c.json", coco_bytes("c"), "job.done")
    assert d.stop() == 0
    assert first == second == failed, "a worker whose job gave a result takes the next one"
    assert after != failed, "a failed job's worker must exit, not run the next job"
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["a.json", "b.json", "c.json"]
    assert (inbox / "failed" / "bad.json").exists()


def test_a_reused_worker_drops_the_memory_limit_of_an_earlier_job() -> None:
    """A worker serves several jobs: one whose config sets no ``worker_memory`` (after a
    reload) must not run under the RLIMIT_AS an earlier job set. Run in a child process:
    the limit would otherwise stay on the test runner."""
    import subprocess
    import sys

    code = ("from smaskd.daemon.workers import _limit_memory\n"
            "print(_limit_memory(1 << 30), _limit_memory(None))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(1 << 30), "None"]
