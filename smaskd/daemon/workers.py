"""Worker processes: one process per job, supervised by the daemon's main loop.

Why one process per job: a worker that segfaults, is OOM-killed or hangs must fail only its
own job. ``ProcessPoolExecutor`` turns one abrupt death into ``BrokenProcessPool`` for every
job and cannot kill a job that runs too long; a process per job can be SIGTERMed/SIGKILLed
alone. Workers are forked by multiprocessing's ``forkserver``: a clean single-threaded
process started once, with this module and structlog already imported, so a job costs a
``fork`` (~5 ms) instead of a fresh interpreter (~80 ms of CPU per job with ``spawn``, which
capped a burst of small files at ~20 jobs/s on two cores). Never plain ``fork``: watchdog
threads live in the daemon. A worker dies with its parent (``PR_SET_PDEATHSIG`` plus a
parent check): its parent is the fork server, which exits as soon as the daemon is gone
(its end of multiprocessing's "alive" pipe closes), so an orphan never keeps writing.

The worker is a pure ``run_job``: it reads the claimed input and writes the result to a
staging name in the outbox; the parent owns the journal, renames and the summary log line.
It sends its structlog events back over the pipe so they land in the job's log file.

**Reuse after a clean job.** A worker whose job ended with a result (not an error, not a
memory limit) and whose heap stayed small (``REUSE_RSS``) sends ``("end", True)`` and waits
for the next spec, up to ``REUSE_JOBS`` jobs; after anything else it exits as before. Why:
in a burst of small files the fork did most of the work: ~26 ms of CPU per job (copy-on-write
faults of the preloaded modules, start-up, exit) against ~4 ms of conversion, and the main
loop blocked ~16 ms per job on the fork server's reply under load (benchmarks/README.md,
"Burst throughput"). Isolation is what it was where it matters: one job at a time per
process, so a crash, a kill on timeout or a memory limit still ends only the job that was
running; a job that failed, or grew the heap (``keep_heap_between_items`` keeps the peak),
never hands its process to the next one.

``worker_memory`` becomes the worker's ``RLIMIT_AS``: an allocation beyond it fails with
MemoryError instead of waking the kernel's OOM killer (which might pick the daemon). The
worker reports that as its own outcome (``memory``), which is retried like a crash and in the
end fails with "memory limit exceeded (worker_memory=…)", not with a bare traceback.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import stat
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from smaskd.convert import ConvertOptions
from smaskd.daemon.backoff import TRANSIENT_ERRNOS
from smaskd.daemon.faults import read_fault, worker_faults
from smaskd.procs import die_with_parent, keep_heap_between_items

__all__ = ["JobSpec", "Outcome", "Supervisor", "describe_error", "memory_error", "worker_main"]

KILL_GRACE = 5.0
MEMORY_EXIT = 4  # a worker out of memory that could not even send its report
REUSE_JOBS = 64  # jobs one worker process serves at most (module doc: "Reuse")
REUSE_RSS = 256 * 1024 * 1024  # a worker larger than this after a job exits instead


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a worker needs, picklable; nothing else crosses the boundary."""

    job_id: str
    rule: str
    input_name: str
    src: str
    staging: str
    action: str  # resolved: export | import
    options: ConvertOptions
    attempt: int
    memory_limit: int | None
    parent_pid: int


@dataclass(slots=True)
class Outcome:
    job_id: str
    status: str  # ok | error | crash | timeout | memory
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    sha256: str | None = None
    exitcode: int | None = None
    duration: float = 0.0

    @property
    def reason(self) -> str:
        if self.status == "timeout":
            return "timeout"
        if self.status == "memory":
            return (self.error or {}).get("message", "memory limit exceeded")
        if self.status == "crash":
            if self.exitcode is not None and self.exitcode < 0:
                return f"worker crashed (signal {-self.exitcode})"
            return f"worker crashed (exit status {self.exitcode})"
        return (self.error or {}).get("message", "")


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as plain data for the report (type, message, where, notes)."""
    from smaskd.errors import SmaskdError

    if isinstance(exc, MemoryError):
        return {"type": "MemoryError", "class": "limit",
                "message": "worker memory limit (RLIMIT_AS) exceeded", "where": None}
    # ``job_error``: an OSError that is the job's own, not a bug (dirs.SymlinkedSubfolder)
    ours = isinstance(exc, SmaskdError) or getattr(exc, "job_error", False)
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": exc.message if isinstance(exc, SmaskdError) else str(exc),
        "where": getattr(exc, "where", None),
        "notes": list(getattr(exc, "__notes__", [])),
        "class": ("input" if isinstance(exc, SmaskdError) else "unsafe") if ours else "internal",
    }
    if not ours:
        data["traceback"] = "".join(traceback.format_exception(exc))[-16384:]
    context = exc.__context__
    if isinstance(exc, SmaskdError) and isinstance(context, OSError) \
            and context.errno in TRANSIENT_ERRNOS:
        exc = context  # "cannot read file: Input/output error": the share's fault, say so
    if isinstance(exc, OSError) and exc.errno is not None:
        # The daemon tells "the outbox is full / not writable" (wait and retry, backoff.py)
        # from "this input is bad" (fail) by these two, not by parsing the message.
        data["errno"] = exc.errno
        data["filename"] = os.fsdecode(exc.filename) if exc.filename else None
    return data


# ---------------------------------------------------------------- in the worker process

def _limit_memory(limit: int | None) -> int | None:
    """Apply ``worker_memory`` as RLIMIT_AS; return the soft limit now in force (None: none)."""
    import resource

    if limit:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY and hard < limit:
            limit = hard  # an unprivileged process cannot raise its hard limit
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    else:  # a reused worker must not keep the limit an earlier job's config set
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _size(n: int | None) -> str:
    if not n:
        return "unlimited"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n}B"


def memory_error(limit: int | None) -> dict[str, Any]:
    """The report for a worker that ran out of its address-space limit."""
    return {"type": "MemoryLimitExceeded", "class": "limit", "where": None, "retry": True,
            "message": f"memory limit exceeded (worker_memory={_size(limit)})"}


def _configure_events(conn: Connection) -> Any:
    import logging

    import structlog

    def send(logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        event_dict.setdefault("level", method)
        event_dict["logger"] = "smaskd.worker"
        conn.send(("event", {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict))
                                  else str(v)) for k, v in event_dict.items()}))
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), send],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("smaskd.worker")


def _inject(spec: JobSpec, limit: int | None, sha256: str) -> bool:
    """Test-only misbehaviour (``faults.py`` lists it); True means "fake the conversion"."""
    fake = False
    for directive in worker_faults(spec.input_name, sha256):
        arg = directive[2] if len(directive) > 2 else None
        if directive[0] == "worker_crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif directive[0] == "worker_segv":
            import ctypes
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test's cwd
            ctypes.string_at(0)
        elif directive[0] == "worker_hog":
            # calloc'ed pages are not touched: without a limit this costs no real memory
            bytes(2 * limit if limit else 64 * 1024**3)  # made and dropped: MemoryError or not
        elif directive[0] == "worker_sleep":
            time.sleep(float(arg) if arg else 3600)
        elif directive[0] == "fake_convert":
            fake = True
        elif directive[0] == "slow_write":
            from smaskd.atomicio import atomic_writer

            until = time.monotonic() + (float(arg) if arg else 30.0)
            with atomic_writer(spec.staging) as out:
                while time.monotonic() < until:
                    out.write(b"\0" * 65536)
                    out.flush()
                    time.sleep(0.1)
        elif directive[0] == "kill_parent":
            os.kill(spec.parent_pid, signal.SIGKILL)
            time.sleep(0.5)  # keep going, as an orphan would, until the pdeath signal lands
    return fake


def _hash(path: str, name: str = "") -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    read_fault(name, path)  # test-only: an injected EIO/ESTALE/... at the read point
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            from smaskd.errors import InputError

            raise InputError("not a regular file", os.path.basename(path))
        try:
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
                size += len(chunk)
        except OSError as e:  # os.read names no file: the daemon needs it to tell whose fault
            raise OSError(e.errno, e.strerror, path) from None
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _rss() -> int:
    """This process's resident size now, in bytes (0 if unknown)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def worker_main(conn: Connection, parent_pid: int) -> None:
    """Entry point of a forked worker: run the specs sent over ``conn`` one at a time, each
    ended by ``("end", stay)``; exit after a job that may not hand the process on."""
    die_with_parent(parent_pid)  # the fork server dies with the daemon
    keep_heap_between_items()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    import structlog

    try:
        for served in range(1, REUSE_JOBS + 1):
            try:
                spec = conn.recv()
            except (EOFError, OSError):  # the daemon retired us (or is gone)
                return
            structlog.contextvars.clear_contextvars()
            clean = _run_job(spec, conn)
            stay = clean and served < REUSE_JOBS and _rss() < REUSE_RSS
            try:
                conn.send(("end", stay))
            except OSError:
                return
            if not stay:
                return
    finally:
        conn.close()


def _run_job(spec: JobSpec, conn: Connection) -> bool:
    """Convert one file and report over ``conn``; True if it gave a result (reusable)."""
    limit = None
    try:
        limit = _limit_memory(spec.memory_limit)
        log = _configure_events(conn)
        import structlog

        structlog.contextvars.bind_contextvars(job_id=spec.job_id, rule=spec.rule,
                                               input=spec.input_name, attempt=spec.attempt)
        log.debug("worker.start", pid=os.getpid(), action=spec.action, rlimit_as=limit)
        sha256, size = _hash(spec.src, spec.input_name)
        conn.send(("sha256", sha256))
        log.debug("input.hashed", sha256=sha256, size=size)
        fake = _inject(spec, limit, sha256)
        started = time.monotonic()
        if fake:
            Path(spec.staging).write_bytes(Path(spec.src).read_bytes())
            result: dict[str, Any] = {"action": spec.action, "items": 1, "instances": 1,
                                      "labels": 1, "warnings": ["fake_convert (test fault)"]}
        else:
            from smaskd.convert import convert_file

            res = convert_file(Path(spec.src), Path(spec.staging), spec.action, spec.options)
            result = {"action": res.action, "items": res.items, "instances": res.instances,
                      "labels": res.labels, "warnings": list(res.warnings)}
        result["convert_ms"] = round((time.monotonic() - started) * 1000, 1)
        for warning in result["warnings"]:
            log.warning("convert.warning", warning=warning)
        log.debug("convert.done", **{k: v for k, v in result.items() if k != "warnings"})
        conn.send(("result", result))
        return True
    except MemoryError:
        # The frames that held the big allocations are gone by now; a small dict still fits.
        try:
            conn.send(("error", memory_error(limit)))
        except BaseException:  # noqa: BLE001 - even that failed: the exit status says enough
            os._exit(MEMORY_EXIT)
    except BaseException as e:  # noqa: BLE001 - every failure becomes data for the report
        try:
            conn.send(("error", describe_error(e)))
        except Exception:
            os._exit(3)
    return False


# ---------------------------------------------------------------- in the daemon

@dataclass(slots=True)
class _Running:
    spec: JobSpec
    process: Any
    conn: Connection
    started: float
    deadline: float
    outcome: Outcome
    term_sent: float | None = None
    closed: bool = False
    ended: bool = False  # the worker sent ("end", stay): the job is over, the process may not be
    stay: bool = False  # ... and it waits for the next spec (module doc: "Reuse")


#: Imported once by the fork server, so each job's fork starts with numpy, OpenCV,
#: pycocotools and the core already loaded: a small file then costs milliseconds of
#: conversion instead of ~100 ms of imports in every worker.
PRELOAD = [
    "smaskd.daemon.workers",
    "structlog",
    "smaskd.annotations.detect",
    "smaskd.smask.export",
    "smaskd.importjob",
    "smaskd.smask.labelmap",
    "cv2",  # the core loads it on first use (pngio.opencv): not in every job's fork
]


class Supervisor:
    """Starts, watches and (on timeout or shutdown) kills the per-job worker processes."""

    def __init__(self, kill_grace: float = KILL_GRACE) -> None:
        # BLAS thread pools are useless for mask work and would be forked half-alive.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        self.kill_grace = kill_grace
        self.running: dict[str, _Running] = {}
        self.idle: list[tuple[Any, Connection]] = []  # workers waiting for their next spec
        self.retiring: list[Any] = []  # workers that said they exit: reaped when they have

    def start(self, spec: JobSpec, timeout: float) -> int:
        while self.idle:
            process, conn = self.idle.pop()
            if process.exitcode is None:
                try:
                    conn.send(spec)
                    break
                except OSError:  # it died while idle: start another
                    pass
            self._retire(process, conn)
        else:
            conn, child = self.ctx.Pipe(duplex=True)
            process = self.ctx.Process(target=worker_main, args=(child, spec.parent_pid),
                                       daemon=True, name="smaskd-worker")
            process.start()
            child.close()  # the child has its copy; EOF on conn then means the child is gone
            conn.send(spec)
        now = time.monotonic()
        self.running[spec.job_id] = _Running(spec, process, conn, now, now + timeout,
                                             Outcome(spec.job_id, "crash"))
        return process.pid

    def _retire(self, process: Any, conn: Connection | None = None) -> None:
        """Close our end (an idle worker's ``recv`` ends: it exits); reap it later."""
        if conn is not None:
            conn.close()
        self.retiring.append(process)

    def _reap(self) -> None:
        for process in list(self.retiring):
            if process.exitcode is not None:
                process.close()
                self.retiring.remove(process)

    def waitables(self) -> list[Any]:
        items: list[Any] = []
        for run in self.running.values():
            items.append(run.process.sentinel)
            if not run.closed:
                items.append(run.conn)
        return items

    def _drain(self, run: _Running) -> None:
        while not run.closed:
            try:
                if not run.conn.poll():
                    return
                kind, payload = run.conn.recv()
            except (EOFError, OSError):
                run.closed = True
                run.conn.close()
                return
            if kind == "event":
                run.outcome.events.append(payload)
            elif kind == "sha256":
                run.outcome.sha256 = payload
            elif kind == "result":
                run.outcome.result = payload
            elif kind == "error":
                run.outcome.error = payload
            elif kind == "end":
                run.ended, run.stay = True, bool(payload)
                return  # what follows on this pipe is the next job's

    def poll(self) -> list[Outcome]:
        """Collect events; return the outcomes of jobs that ended; enforce timeouts."""
        now = time.monotonic()
        done = []
        self._reap()
        for job_id, run in list(self.running.items()):
            self._drain(run)
            if run.ended and run.term_sent is None:
                done.append(self._ended(job_id, run, now))
                continue
            if run.process.exitcode is None:
                if run.term_sent is None and now >= run.deadline:
                    run.outcome.status = "timeout"
                    run.term_sent = now
                    run.process.terminate()
                elif run.term_sent is not None and now - run.term_sent >= self.kill_grace:
                    run.process.kill()
                continue
            self._drain(run)
            run.process.join()
            out = run.outcome
            out.exitcode = run.process.exitcode
            out.duration = now - run.started
            if out.exitcode == MEMORY_EXIT and not out.result and not out.error:
                out.error = memory_error(run.spec.memory_limit)
            if out.status != "timeout":
                out.status = ("ok" if out.result else "crash" if not out.error
                              else "memory" if out.error.get("retry") else "error")
            if not run.closed:
                run.conn.close()
            run.process.close()
            del self.running[job_id]
            done.append(out)
        return done

    def _ended(self, job_id: str, run: _Running, now: float) -> Outcome:
        """The worker reported its job over: the outcome, and the process kept or retired."""
        out = run.outcome
        out.exitcode, out.duration = 0, now - run.started
        out.status = ("ok" if out.result else "crash" if not out.error
                      else "memory" if out.error.get("retry") else "error")
        del self.running[job_id]
        if run.stay and not run.closed:
            self.idle.append((run.process, run.conn))
        else:
            self._retire(run.process, None if run.closed else run.conn)
        return out

    def stop_all(self, grace: float = KILL_GRACE) -> list[str]:
        """SIGTERM every worker, SIGKILL after ``grace``; return the interrupted job ids."""
        ids = list(self.running)
        for run in self.running.values():
            if run.process.exitcode is None:
                run.process.terminate()
        deadline = time.monotonic() + grace
        for run in self.running.values():
            run.process.join(max(0.0, deadline - time.monotonic()))
            if run.process.exitcode is None:
                run.process.kill()
                run.process.join()
            if not run.closed:
                run.conn.close()
        self.running.clear()
        for process, conn in self.idle:  # waiting for a spec: EOF ends them, SIGTERM if not
            conn.close()
            self.retiring.append(process)
        self.idle.clear()
        for process in self.retiring:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.terminate()
                process.join(1)
        self.retiring.clear()
        return ids
