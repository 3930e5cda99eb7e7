"""Claimed inputs whose writer was not done: they wait in the claim folder, not in failed/.

Why: for a file written in place, "stable for ``settle`` and ends in ``}``" is a guess, and
some guesses are wrong: a legacy writer that holds the file open and pauses at a ``}``, a
file already being written when the daemon started, a share where inotify is blind. The
claim is a rename, so the writer's descriptor follows the inode into the claim folder and
goes on writing there. Two things show such a job after its run:

* the claimed file's (device, inode, size, mtime) changed after the claim: whatever the
  worker read is not the file, so its result (or error) is thrown away;
* its parse failed at the end of the file (``IncompleteInputError``) or its bytes do not
  look complete (a zip without its central directory), and it was not renamed in (a renamed
  file is complete: its parse failure is a real error).

Such a job waits here, its input still claimed. It runs again once the file has changed
since the run that failed, has then been stable for ``settle`` and looks complete. If it
stays unchanged and incomplete for ``grace`` it fails with "incomplete after <grace>", never
with a parse error about a file that was still growing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smaskd.daemon.intake import Signature, looks_complete

__all__ = ["Unfinished", "format_seconds", "signature_of"]

#: How often a held file is looked at (one ``lstat``): a writer in the claim folder sends
#: no event we listen to.
LOOK_EVERY = 0.5


def signature_of(path: Path) -> Signature | None:
    """(device, inode, size, mtime) of ``path`` itself, None if it is gone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def format_seconds(seconds: float) -> str:
    """``grace`` as a user wrote it, roughly: 600 → "10m", 90 → "90s", 2.5 → "2.5s"."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


@dataclass(slots=True)
class _Held:
    job: Any
    refused: Signature | None  # the bytes the failed run saw: a rerun needs other bytes
    current: Signature | None  # the last look
    stable_since: float  # monotonic time of the last change (or of the hold)
    settle: float
    grace: float
    why: str


class Unfinished:
    """Jobs waiting for their claimed input to be complete; used from the main loop only."""

    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self.held)

    def hold(self, job: Any, refused: Signature | None, current: Signature | None,
             stable_since: float, settle: float, why: str) -> None:
        self.held[job.job_id] = _Held(job, refused, current, stable_since, settle,
                                      job.inbox.grace, why)

    def tick(self, now: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
        """(complete now: run again, incomplete for ``grace``: fail, claim gone: lost)."""
        now = time.monotonic() if now is None else now
        ready, expired, gone = [], [], []
        for job_id, held in list(self.held.items()):
            sig = signature_of(held.job.claim_path)
            if sig is None:
                del self.held[job_id]
                gone.append(held.job)
                continue
            if sig != held.current:
                held.current, held.stable_since = sig, now
            stable = now - held.stable_since
            if sig != held.refused and stable >= held.settle \
                    and looks_complete(held.job.claim_path):
                del self.held[job_id]
                held.job.claim_signature = sig
                held.job.incomplete_since = held.stable_since  # if it fails again: since then
                ready.append(held.job)
            elif stable >= held.grace:
                del self.held[job_id]
                expired.append(held.job)
        return ready, expired, gone

    def next_due(self, now: float | None = None) -> float | None:
        if not self.held:
            return None
        now = time.monotonic() if now is None else now
        return now + LOOK_EVERY

    def describe(self) -> list[str]:
        """One phrase for STATUS= and ``smaskd status`` while inputs wait to be complete."""
        if not self.held:
            return []
        names = sorted(h.job.name for h in self.held.values())
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return [f"{len(names)} claimed input(s) still being written, waiting up to grace: "
                f"{shown}"]
