"""The running daemon's STATUS line, also kept in ``<state_dir>/status.json`` for ``smaskd status``.

Why a file: ``STATUS=`` reaches only systemd (``systemctl status``), and ``smaskd status`` reads
the journal, which knows jobs but not *why* they wait. An operator asking "why is nothing
coming out?" should get "outbox /srv/out is not writable: No space left on device; 12 jobs
waiting" from either. The file is replaced atomically and carries the pid, so a reader can tell
a live daemon's words from a stopped one's last ones.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from smaskd.atomicio import atomic_writer

__all__ = ["FILE", "read_status", "write_status"]

FILE = "status.json"


def write_status(state_dir: Path, status: str, problems: list[str], state: str = "running",
                 unmarked: dict[str, int] | None = None) -> None:
    """Replace the status file; never raises (a full state disk must not stop the loop).
    ``unmarked``: per inbox, the files waiting for their ready marker (for scripts)."""
    data = {"pid": os.getpid(), "state": state, "updated": time.time(), "status": status,
            "problems": problems, "waiting_for_marker": unmarked or {}}
    try:
        with atomic_writer(state_dir / FILE, mode=0o640) as fh:
            fh.write((json.dumps(data) + "\n").encode())
    except OSError:
        pass


def read_status(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
