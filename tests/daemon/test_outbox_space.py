"""A full outbox (issue 11 case 8) on a real, tiny tmpfs: never refilled by retries.

A result that can never fit fails at once; one that may fit later waits without a byte
written until the outbox has room for it, while smaller results go through and the wait's
backoff keeps growing; ``--once`` ends instead of waiting, saying what waits and why.
Root only (mounting a tmpfs); skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from tests.conftest import run_cli
from tests.daemon.conftest import base_config, coco, coco_bytes, files, tmpfs

MiB = 1024 * 1024


def _padded(size: int) -> bytes:
    """A COCO file of about ``size`` bytes (``fake_convert`` copies it as the result)."""
    return json.dumps({**coco(), "pad": "x" * size}).encode()


def _fill(path: Path, size: int | None = None) -> None:
    """Write ``size`` bytes, or until ENOSPC."""
    with open(path, "wb") as fh:
        written = 0
        with contextlib.suppress(OSError):
            while size is None or written < size:
                fh.write(b"\0" * 65536)
                fh.flush()
                written += 65536


def _claims(inbox: Path) -> list[str]:
    folder = inbox / ".smaskd" / "processing" / "testhost"
    return sorted(n for n in os.listdir(folder) if not n.startswith(".")) if folder.exists() else []


def test_result_larger_than_the_outbox_filesystem_fails_at_once(tmp_path: Path,
                                                              daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with tmpfs(tmp_path / "outbox", "1m") as box:
        d = daemon_factory(base_config(tmp_path, fault_backoff="2s"),
                           env={"SMASKD_FAULT": "fake_convert"}).start()
        d.wait_ready()
        (inbox / "big.json").write_bytes(_padded(3 * MiB // 2))
        (inbox / "small.json").write_bytes(coco_bytes())
        failed = d.wait_for(lambda: d.events("job.failed"), 60, "big.json failed")
        d.wait_for(lambda: d.events("job.done"), 30, "small.json done")
        assert d.stop() == 0
        assert failed[0]["input"] == "big.json" and failed[0]["error_type"] == "OutputTooLarge"
        assert "larger than the outbox" in failed[0]["error"] and "1048576 bytes" in \
            failed[0]["error"], failed[0]
        report = json.loads((inbox / "failed" / "big.json.error.json").read_text())
        assert report["error"]["type"] == "OutputTooLarge"
        assert files(inbox / "failed") == ["big.json", "big.json.error.json"]
        assert files(inbox / "done") == ["small.json"] and _claims(inbox) == []
        assert files(box) == ["big.log.jsonl", "small.log.jsonl", "small.zip"]


def test_full_outbox_waits_without_refilling_and_backoff_is_not_reset(tmp_path: Path,
                                                                    daemon_factory) -> None:
    """mid.json's result does not fit the room left: after the first attempt (which met
    ENOSPC) no retry writes into the outbox; small results go through meanwhile and the
    wait's backoff still grows (1, 2, 4, 4 s); freeing space publishes it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with tmpfs(tmp_path / "outbox", "2m") as box:
        _fill(box / ".filler", 13 * MiB // 10)
        d = daemon_factory(base_config(tmp_path, fault_backoff="4s"),
                           env={"SMASKD_FAULT": "fake_convert"}).start()
        d.wait_ready()
        (inbox / "mid.json").write_bytes(_padded(MiB))

        def space_waits() -> list[dict]:
            return [e for e in d.events() if e.get("event") in ("fault.blocked", "fault.persists")
                    and "needed" in str(e.get("reason"))]

        d.wait_for(space_waits, 60, "mid.json waiting for room")
        for n in range(6):
            (inbox / f"s{n}.json").write_bytes(coco_bytes(f"s{n}"))
        d.wait_for(lambda: len(d.events("job.done")) >= 6, 60, "the small ones done")
        d.wait_for(lambda: len(space_waits()) >= 5, 60, "five looks at the room")
        status = run_cli("status", "-c", d.config_path).stdout
        assert f"problem: outbox {box} has" in status and "needed; 1 job(s) waiting" in status
        delays = [e["retry_in_s"] for e in space_waits()]
        assert delays[:4] == [1.0, 2.0, 4.0, 4.0] and set(delays[4:]) <= {4.0}, delays
        no_space = [e for e in d.events("job.waiting") if e.get("input") == "mid.json"
                    and "No space" in str(e.get("reason"))]
        assert len(no_space) == 1, f"retries wrote into the full outbox: {no_space}"
        assert not d.events("job.failed")

        (box / ".filler").unlink()
        d.wait_for(lambda: len(d.events("job.done")) >= 7, 60, "mid.json done once there is room")
        assert d.stop() == 0
        assert (box / "mid.zip").read_bytes() == _padded(MiB)
        assert files(inbox / "done") == sorted(["mid.json"] + [f"s{n}.json" for n in range(6)])
        assert files(inbox / "failed") == [] and _claims(inbox) == []
        assert not [p for p in os.listdir(tmp_path / "state" / "spool")]


def test_once_ends_and_says_what_waits(tmp_path: Path, daemon_factory) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with tmpfs(tmp_path / "outbox", "1m") as box:
        _fill(box / ".filler")
        (inbox / "a.json").write_bytes(coco_bytes())
        d = daemon_factory(base_config(tmp_path), "--once",
                           env={"SMASKD_FAULT": "fake_convert"}).start()
        assert d.wait(60) == 75
        waiting = d.events("once.waiting")
        assert waiting and waiting[0]["waiting"] == 1, d.lines[-10:]
        assert any(f"outbox {box} is not writable: No space left" in p
                   for p in waiting[0]["problems"]), waiting
        assert _claims(inbox) and files(inbox / "failed") == []
        status = run_cli("status", "-c", d.config_path).stdout
        assert "daemon: not running" in status and "No space left" in status, status
        (box / ".filler").unlink()
        d2 = daemon_factory(base_config(tmp_path), "--once", env={"SMASKD_FAULT": "fake_convert"})
        assert d2.start().wait(60) == 0
        assert files(inbox / "done") == ["a.json"] and files(box) == ["a.log.jsonl", "a.zip"]
