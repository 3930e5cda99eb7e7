"""Is a process alive? One answer for the worker's parent check and the status file."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["pid_alive"]


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
