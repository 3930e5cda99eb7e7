"""Folders an inbox writer can swap: done/, failed/ and the claim area ``<inbox>/.smaskd``.

Anyone who may drop a file into an inbox may also rename its folders and plant symlinks. The
daemon works through directory descriptors re-validated against the path (``dirs.py``), so:
a loop swapping done/ and failed/ for symlinks moves nothing outside the inbox and the
journal records no done/ path that does not exist; a ``.smaskd`` renamed away with
``processing`` and ``hosts`` symlinks planted gets nothing created, moved or written through
them, and the inbox is reported and skipped until the folder is back.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from smaskd.daemon import dirs
from tests.daemon.conftest import base_config, coco_bytes, files, journal_rows
from tests.daemon.test_crash import assert_settled, drop, names

_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange(a: Path, b: Path) -> None:
    """``renameat2(RENAME_EXCHANGE)``: the attacker's best tool, the two names swap
    atomically, so there is never a moment without a ``done`` to be recreated."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                       _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(a))


def _exchange_supported(tmp: Path) -> bool:
    (tmp / "xa").mkdir()
    os.symlink(tmp, tmp / "xb")
    try:
        exchange(tmp / "xa", tmp / "xb")
    except (OSError, AttributeError):
        return False
    finally:
        for name in ("xa", "xb"):
            p = tmp / name
            p.unlink() if p.is_symlink() else p.rmdir()
    return True


def test_symlink_swap_loop_on_done_and_failed_moves_nothing_outside(tmp_path: Path,
                                                                    daemon_factory) -> None:
    """40 files (30 good, 10 bad) while a thread swaps done/ and failed/ with symlinks to a
    folder of the attacker's choice and back, as fast as it can: nothing (input, report or
    log) lands outside the inbox and outbox, every input ends in done/ or failed/, and
    every ``moved_to`` the journal recorded exists."""
    if not _exchange_supported(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not supported on this filesystem")
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    elsewhere.mkdir()
    inbox.mkdir()
    config = base_config(tmp_path, fault_backoff="1s", workers=2)
    config["inboxes"][0]["settle"] = "0.1s"
    d = daemon_factory(config, env={"SMASKD_FAULT": "fake_convert:good"}).start()
    d.wait_ready()
    links = {}
    for name in ("done", "failed"):
        links[name] = inbox / f".{name}.swap"
        os.symlink(elsewhere, links[name])
    stop = threading.Event()
    swaps = [0]

    def swap_loop() -> None:
        while not stop.is_set():
            for name in ("done", "failed"):
                exchange(inbox / name, links[name])  # now a symlink
                time.sleep(0.0005)
                exchange(inbox / name, links[name])  # real again
                swaps[0] += 1
            time.sleep(0.0005)

    swapper = threading.Thread(target=swap_loop, daemon=True)
    swapper.start()
    ok = {f"good{i:02d}.json" for i in range(30)}
    bad = {f"bad{i:02d}.json" for i in range(10)}
    try:
        for name in sorted(ok | bad):
            drop(inbox, name, coco_bytes(name) if name in ok else b'{"images": [}', old=False)
        d.wait_for(lambda: len(d.events("job.done")) + len(d.events("job.failed")) >= 40
                   or len(d.events("job.waiting")) >= 20, 120, "the run under the swap loop")
        time.sleep(2)  # let the parked jobs retry under the loop too
    finally:
        stop.set()
        swapper.join(10)
    assert swaps[0] > 100
    d.wait_for(lambda: len(d.events("job.done")) + len(d.events("job.failed")) >= 40, 120,
               "all 40 finished once the loop stopped")
    assert d.stop() == 0
    assert list(elsewhere.iterdir()) == [], "moved through a symlinked done/ or failed/"
    for name in ("done", "failed"):
        assert not (inbox / name).is_symlink() and links[name].is_symlink()
        links[name].unlink()
    assert_settled(tmp_path, ok, bad)
    for row in journal_rows(tmp_path / "state"):
        assert row["moved_to"] and os.path.lexists(row["moved_to"]), row
        assert Path(row["moved_to"]).parent in (inbox / "done", inbox / "failed")


def _plant(inbox: Path, evil: Path) -> None:
    """Rename ``.smaskd`` away and plant ``processing`` and ``hosts`` symlinks in a new one."""
    if (inbox / ".smaskd").exists():
        os.rename(inbox / ".smaskd", inbox / ".smaskd.away")
    (inbox / ".smaskd").mkdir()
    for name in ("processing", "hosts"):
        (evil / name).mkdir(parents=True, exist_ok=True)
        os.symlink(evil / name, inbox / ".smaskd" / name)


def _tree(folder: Path) -> list[str]:
    return sorted(str(Path(root, n).relative_to(folder))
                  for root, dirs_, found in os.walk(folder) for n in dirs_ + found)


def test_planted_claim_area_before_start_is_skipped_not_followed(tmp_path: Path,
                                                                 daemon_factory) -> None:
    """A ``.smaskd`` with ``processing`` and ``hosts`` symlinks found at start-up: nothing is
    created or moved through them; STATUS names the inbox; once the folder is real again
    (the administrator removed the plant) the inbox is used, without a restart."""
    inbox, evil = tmp_path / "inbox", tmp_path / "evil"
    inbox.mkdir()
    _plant(inbox, evil)
    drop(inbox, "a.json", coco_bytes("a"))
    config = base_config(tmp_path)
    config["inboxes"].append({"name": "other", "path": str(tmp_path / "other"), "settle": "0.3s"})
    d = daemon_factory(config).start()
    d.wait_ready()
    drop(tmp_path / "other", "b.json", coco_bytes("b"))  # the other inbox works meanwhile
    d.wait_for(lambda: d.events("job.done"), 60, "b.json from the other inbox")
    time.sleep(1.5)
    assert _tree(evil) == ["hosts", "processing"], "something was created through the plant"
    assert names(inbox) == [".smaskd", "a.json", "done", "failed"]
    line = d.wait_for(lambda: next((x for x in d.notify.lines()
                                    if "inbox in skipped" in x), None), 30, "STATUS naming it")
    assert "processing is a symlink" in line
    assert [e["inbox"] for e in d.events("inbox.claim_area_swapped")] == ["in"]
    for name in ("processing", "hosts"):
        (inbox / ".smaskd" / name).unlink()
    d.wait_for(lambda: len(d.events("job.done")) == 2, 60, "a.json once the plant is gone")
    assert d.stop() == 0
    assert d.events("inbox.claim_area_back")
    assert files(inbox / "done") == ["a.json"] and _tree(evil) == ["hosts", "processing"]


def test_claim_area_swapped_while_running(tmp_path: Path, daemon_factory) -> None:
    """``.smaskd`` renamed away under a running daemon and ``processing``/``hosts`` symlinks
    planted in a new one: no host folder, claim or heartbeat appears in the attacker's
    folders; new drops stay in the inbox; the job claimed before the swap waits (its claim is
    in the folder that was renamed away) and finishes once the original is back."""
    inbox, box, evil = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "evil"
    config = base_config(tmp_path, heartbeat_interval="0.2s", lease="1s", fault_backoff="1s")
    d = daemon_factory(config, env={"SMASKD_FAULT": "worker_sleep:slow:3"}).start()
    d.wait_ready()
    drop(inbox, "slow.json", coco_bytes("slow"), old=False)
    d.wait_for(lambda: d.events("job.started"), 30, "slow.json running")
    _plant(inbox, evil)
    drop(inbox, "late.json", coco_bytes("late"), old=False)
    time.sleep(5)  # heartbeats every 0.2 s, scans, slow.json's worker ends after 3 s
    assert _tree(evil) == ["hosts", "processing"], "something was created through the plant"
    assert "late.json" in names(inbox)
    assert [n for n in files(box) if not n.startswith(".")] == []
    assert not d.events("job.done") and not d.events("job.failed")
    assert d.events("inbox.claim_area_swapped")
    d.wait_for(lambda: d.events("job.waiting"), 30, "slow.json waiting for its claim folder")
    line = d.wait_for(lambda: next((x for x in d.notify.lines()
                                    if "inbox in skipped" in x), None), 30, "STATUS")
    assert ".smaskd" in line
    # the administrator puts the real one back
    for name in ("processing", "hosts"):
        (inbox / ".smaskd" / name).unlink()
    (inbox / ".smaskd").rmdir()
    os.rename(inbox / ".smaskd.away", inbox / ".smaskd")
    d.wait_for(lambda: len(d.events("job.done")) == 2, 60, "both converted once it is back")
    assert d.stop() == 0
    assert _tree(evil) == ["hosts", "processing"]
    assert_settled(tmp_path, {"slow.json", "late.json"}, set())


def test_folder_descriptor_is_revalidated_at_every_use(tmp_path: Path) -> None:
    """A place reopens a real folder that replaced it and refuses a symlink; a pinned
    folder (the claim area) refuses both, and is fine again once its own folder is back."""
    victim = tmp_path / "victim"
    victim.mkdir()
    done = dirs.place(tmp_path / "done")
    first = os.fstat(done.fd()).st_ino
    os.rename(tmp_path / "done", tmp_path / "done.away")
    os.symlink(victim, tmp_path / "done")
    with pytest.raises(dirs.FolderSwapped) as info:
        done.fd()
    assert info.value.errno == errno.ELOOP and info.value.filename == str(tmp_path / "done")
    (tmp_path / "done").unlink()
    assert os.fstat(done.fd()).st_ino != first  # a new real done/: reopened, not followed
    area = dirs.claim_area(tmp_path)
    area.check("me")
    os.rename(tmp_path / ".smaskd", tmp_path / ".smaskd.away")
    os.mkdir(tmp_path / ".smaskd")
    os.symlink(victim, tmp_path / ".smaskd" / "processing")
    with pytest.raises(dirs.FolderSwapped):
        area.check("me")
    assert dirs.recheck(tmp_path / ".smaskd" / "processing" / "me") is not None
    (tmp_path / ".smaskd" / "processing").unlink()
    os.mkdir(tmp_path / ".smaskd" / "processing")  # a real one, but not ours
    with pytest.raises(dirs.FolderSwapped):
        area.check("me")
    os.rename(tmp_path / ".smaskd", tmp_path / ".smaskd.planted")
    os.rename(tmp_path / ".smaskd.away", tmp_path / ".smaskd")
    area.check("me")
    assert dirs.recheck(tmp_path / ".smaskd" / "processing" / "me") is None
    assert list(victim.iterdir()) == []
    dirs.forget(tmp_path)
