"""Process lifetimes: is a process alive, and dying with the process that started us.

Shared by the daemon's job workers and the core's per-item helpers (``smask/parallel.py``):
neither may outlive what started it, or it would keep using CPU and memory that nobody
accounts for (and, for a worker, write into an outbox after its job was given up).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

__all__ = ["die_with_parent", "pid_alive"]

_PR_SET_PDEATHSIG = 1


def pid_alive(pid: Any) -> bool:
    """True if ``pid`` names a live process, ours or another user's.

    ``kill(pid, 0)`` delivers nothing; EPERM still proves the process exists. Anything that
    is not a positive int (a status file from another version, say) is "not alive".
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when our parent dies, and exit now if ``parent_pid`` is already gone.

    ``PR_SET_PDEATHSIG`` fires when the *direct* parent exits (for a daemon worker that is
    the fork server, which exits with the daemon). It only takes effect from the call on, so
    a parent that died just before is caught by the check after it; a thread repeats the
    check once a second where prctl is unavailable.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    ppid = os.getppid()
    if ppid == 1 or not pid_alive(parent_pid):
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != ppid or not pid_alive(parent_pid):
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()
