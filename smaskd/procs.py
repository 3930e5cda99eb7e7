"""Process lifetimes and settings: is a process alive, dying with the process that started
us, and the allocator settings of a process that runs one conversion and exits.

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

__all__ = ["die_with_parent", "keep_heap_between_items", "pid_alive"]

_PR_SET_PDEATHSIG = 1
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_HEAP_BLOCKS = 32 << 20  # blocks up to this size come from the heap, not their own mmap
_HEAP_SLACK = 64 << 20  # free memory at the top of the heap kept instead of given back


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


def keep_heap_between_items() -> None:
    """Fix glibc's heap thresholds for a process that converts one file and exits.

    By default glibc gives the top of the heap back to the kernel once more than a threshold
    is free there, and adapts that threshold to the largest block freed so far. An export
    or import frees a few MB of frame buffers after every item and, since items are no
    longer held in memory, nothing sits above them: every item was trimmed and faulted back
    in (1,000,000 page faults and ~15 % of the time for 2,000 images of 640x480). With fixed
    thresholds the freed memory is reused instead. It does not raise the peak (the memory
    kept is what the previous item used), but it does keep that peak until exit, so only
    short-lived processes call this: the CLI, job workers and render helpers, never the
    daemon itself. Without glibc (musl, macOS) this does nothing.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCKS)
    mallopt(_M_TRIM_THRESHOLD, _HEAP_SLACK)
