"""``smaskd status`` as a health probe: what state the daemon is in, as an LSB exit code.

Why its own module: a monitoring system (systemd's ``ExecCondition``, Nagios, a Kubernetes
exec probe, a shell ``until``) reads the exit code, not the text. LSB's ``status`` codes say
0 running, 1 dead but state left behind, 3 not running, 4 unknown; "running with problems"
(an unwritable outbox, a failed reload) is 150 only when asked for (``--problems-exit``), so a
plain probe never restarts a daemon that is waiting for a share to come back.

Liveness comes from the pid in ``daemon.lock`` checked *now*: alive, not a zombie, and a
smaskd process (a reused pid is someone else). The lock itself is not probed: taking it, even
shared and for a microsecond, could make a daemon starting at that instant refuse to start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smaskd.daemon.statedir import LOCK_FILE
from smaskd.daemon.statusfile import read_status
from smaskd.procs import pid_alive

__all__ = ["DEAD", "NOT_RUNNING", "PROBLEMS", "RUNNING", "UNKNOWN", "Probe", "probe"]

RUNNING, DEAD, NOT_RUNNING, UNKNOWN = 0, 1, 3, 4
PROBLEMS = 150  # LSB reserves 150-199 for the application


@dataclass
class Probe:
    """The daemon's state as ``smaskd status`` reports it (``--json`` prints this)."""

    state: str  # running | dead | not running | unknown
    code: int
    pid: int | None
    state_dir: str
    reason: str
    status: str = ""
    problems: list[str] = field(default_factory=list)
    status_age: float | None = None
    #: inbox name → files waiting for their ready marker (not a problem: writers' pace)
    waiting_for_marker: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "exit_code": self.code, "pid": self.pid,
                "state_dir": self.state_dir, "reason": self.reason, "status": self.status,
                "problems": self.problems, "status_age": self.status_age,
                "waiting_for_marker": self.waiting_for_marker}


def _lock_pid(state_dir: Path) -> int | None:
    try:
        text = (state_dir / LOCK_FILE).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _is_live_smaskd(pid: int | None) -> bool:
    """Alive, not a zombie (a daemon killed -9 whose parent has not reaped it yet), and running
    smaskd (cmdline names it): a pid reused by another program is not our daemon."""
    if pid is None or not pid_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)  # no /proc (or hidepid): kill(0) is all we have
    if stat[stat.rfind(")") + 2:].startswith(("Z", "X")):
        return False
    return b"smaskd" in cmdline


def probe(state_dir: Path, now: float) -> Probe:
    """Classify the daemon of ``state_dir``; never raises."""
    where = str(state_dir)
    if not state_dir.exists():
        return Probe("not running", NOT_RUNNING, None, where,
                     f"no state_dir {state_dir} (the daemon has not run with it)")
    if not os.access(state_dir, os.R_OK | os.X_OK):
        return Probe("unknown", UNKNOWN, None, where, f"state_dir {state_dir} is not readable "
                     "by this user (run as the daemon's user or root)")
    live = read_status(state_dir) or {}
    pid = _lock_pid(state_dir) or (live.get("pid") if isinstance(live.get("pid"), int) else None)
    age = None
    if isinstance(live.get("updated"), (int, float)):
        age = round(max(0.0, now - float(live["updated"])), 1)
    status = str(live.get("status", ""))
    problems = [str(p) for p in live.get("problems") or []]
    if _is_live_smaskd(pid):
        marker = live.get("waiting_for_marker")
        unmarked = ({str(k): v for k, v in marker.items() if isinstance(v, int)}
                    if isinstance(marker, dict) else {})
        n = len(problems)
        return Probe("running", RUNNING, pid, where,
                     f"{n} problem{'s' if n != 1 else ''}" if n else "no problems", status,
                     problems, age, unmarked)
    if live.get("state") == "running":  # it never wrote "stopped": killed, crashed, OOM
        return Probe("dead", DEAD, pid, where, f"pid {pid} ended without stopping (killed or "
                     "crashed); its claims and journal are picked up by the next start",
                     status, problems, age)
    return Probe("not running", NOT_RUNNING, pid, where,
                 "stopped" if live else "no status file (the daemon has not run here)",
                 status, problems, age)
