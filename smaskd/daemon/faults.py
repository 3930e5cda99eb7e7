"""Test-only fault injection: named points where the daemon or a worker misbehaves on purpose.

Why: "a kill -9 at any moment is harmless" is a claim about specific moments, and a test can
only check it if it can stop the daemon exactly there. ``SMASKD_FAULT`` holds comma-separated
directives ``<point>[:<substring of the input name>[:<argument>]]``; nothing reads it unless
it is set, and production code paths only call :func:`crash_point` / :func:`worker_faults`.

Crash points in the daemon (the process ends with ``os._exit(137)``, as after SIGKILL; the
workers die with it, see ``smaskd.procs.die_with_parent``):

==================  ====================================================================
point               where the daemon dies
==================  ====================================================================
after_claim         the file is renamed into processing/, the journal has no row yet
after_start         a worker was just spawned for the job (the job is ``running``)
after_temp_write    the worker wrote the result under its staging name and exited;
                    the journal still says ``running``
before_publish      staging result and log written, journal says ``publishing``
                    (alias: ``exit_before_publish``)
mid_publish         the first output has its final name, the log does not yet
after_publish       every output has its final name, journal still ``publishing``
after_journal       journal says ``published``, the input is still in processing/
                    (alias: ``exit_after_publish``; this is also "before the input move")
mid_input_move      the input is linked into done/ (or failed/) but not yet unlinked
                    from processing/
after_input_move    the input is in done/, the journal does not say ``done`` yet
failing            a failed job's log is staged and the journal says ``failing``
after_fail_log      the failed job's log is published, the input is still claimed
after_fail_move     the failed input is in failed/, its ``.error.json`` is not written
after_fail_report   its ``.error.json`` is written, the journal does not say ``failed``
                    yet (a re-run must reuse that report, not keep both)
==================  ====================================================================

Stalls in the daemon (the main loop sleeps ``<argument>`` seconds, default 10, once per
process, as a host frozen by its hypervisor or a hung share would):

==================  ====================================================================
stall_publish       a job passed its claim check in ``publish`` and has not decided
                    to publish yet (the decision marker is not made)
stall_decided       a job decided to publish (its marker holds the plan), nothing is
                    published yet
==================  ====================================================================

Conditions (no input name): ``blind_locks`` makes ``flock`` a no-op, as on a share whose
locks other hosts cannot see, so only heartbeats and leases speak for a host.

Faults in a worker (``workers.worker_main``), after the input is hashed:

==================  ====================================================================
worker_crash        SIGKILL itself
worker_segv         a real segmentation fault (reads address 0; core dumps disabled)
worker_hog          allocate twice ``worker_memory`` (or 64 GiB when unlimited); with
                    RLIMIT_AS in force this is a clean MemoryError, without it nothing
                    is touched (calloc'ed pages are never written)
worker_sleep        sleep ``<argument>`` seconds (default 3600) before converting
fake_convert        copy the input to the staging name instead of converting
slow_write          write the staging output in 64 KiB steps every 0.1 s for
                    ``<argument>`` seconds (default 30), then convert normally
kill_parent         SIGKILL the daemon from inside the worker, then keep going
read_error          reading the input fails with errno ``<argument>`` (a name: EIO,
                    ESTALE, ...; default EIO) while the file named by a fourth field
                    exists (always, without one): a share's transient error, which a
                    test cannot make without FUSE or a failing block device
==================  ====================================================================
"""

from __future__ import annotations

import errno
import os
import time

__all__ = ["CRASH_POINTS", "STALL_POINTS", "WORKER_FAULTS", "crash_point", "fault_active",
           "read_fault", "stall_point", "worker_faults"]

CRASH_POINTS = ("after_claim", "after_start", "after_temp_write", "before_publish", "mid_publish",
                "after_publish", "after_journal", "mid_input_move", "after_input_move",
                "failing", "after_fail_log", "after_fail_move", "after_fail_report")
STALL_POINTS = ("stall_publish", "stall_decided")
WORKER_FAULTS = ("worker_crash", "worker_segv", "worker_hog", "worker_sleep", "fake_convert",
                 "slow_write", "kill_parent", "read_error")
_ALIASES = {"exit_before_publish": "before_publish", "exit_after_publish": "after_journal"}


def _matches(pattern: str, name: str, sha256: str | None) -> bool:
    """A name substring, or ``sha256=<prefix>``: two drops under one name told apart."""
    if pattern.startswith("sha256="):
        return sha256 is not None and sha256.startswith(pattern[len("sha256="):])
    return pattern in name


def _directives(name: str, sha256: str | None = None) -> list[list[str]]:
    spec = os.environ.get("SMASKD_FAULT", "")
    if not spec:
        return []
    found = []
    for directive in spec.split(","):
        parts = directive.split(":")
        if parts[0] and (len(parts) < 2 or _matches(parts[1], name, sha256)):
            found.append([_ALIASES.get(parts[0], parts[0]), *parts[1:]])
    return found


def crash_point(point: str, name: str) -> None:
    """Die here, like kill -9, if ``SMASKD_FAULT`` names this point (and this input)."""
    assert point in CRASH_POINTS, point
    if any(d[0] == point for d in _directives(name)):
        os._exit(137)


_stalled: set[str] = set()


def stall_point(point: str, name: str) -> None:
    """Sleep here (once per process and point) if ``SMASKD_FAULT`` names this point."""
    assert point in STALL_POINTS, point
    for d in _directives(name):
        if d[0] == point and point not in _stalled:
            _stalled.add(point)
            time.sleep(float(d[2]) if len(d) > 2 and d[2] else 10.0)


def fault_active(condition: str) -> bool:
    """A condition directive without an input name (``blind_locks``) is set."""
    return any(d[0] == condition for d in _directives(""))


def worker_faults(name: str, sha256: str | None = None) -> list[list[str]]:
    """The worker-side directives that apply to input ``name`` (``[fault, substr, arg...]``);
    ``substr`` may be ``sha256=<prefix>`` of the input's content instead."""
    return [d for d in _directives(name, sha256) if d[0] in WORKER_FAULTS]


def read_fault(name: str, path: str) -> None:
    """Raise ``read_error``'s OSError for input ``name`` (read at ``path``), if one is set."""
    for directive in _directives(name):
        if directive[0] != "read_error":
            continue
        if len(directive) > 3 and not os.path.exists(directive[3]):
            continue
        code = getattr(errno, directive[2] if len(directive) > 2 and directive[2] else "EIO")
        raise OSError(code, os.strerror(code), path)
