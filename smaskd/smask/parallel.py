"""The items of one large job spread over processes, with the results handed back in order.

Why this shape:

* **Helpers are plain child interpreters** (``python -c``, talking over two pipes), not
  ``multiprocessing`` workers: the daemon runs each job in a ``daemon=True`` process, which
  ``multiprocessing`` forbids from having children, and a helper must never outlive its
  parent. A helper reads its tasks on a thread and exits on end-of-file, so when the parent
  ends in any way (return, exception, ``kill -9``) its helpers end with it.
* **The calling process works too.** A helper needs ~0.2 s to start (an interpreter plus
  numpy, OpenCV, pycocotools); until it says it is ready, and whenever it already has
  enough queued, the caller renders the next item itself. So starting helpers never makes
  a job slower, only costs the second core some start-up time.
* **Results come back in input order** through a bounded window, so an output built from
  them (zip members, JSON) is byte for byte the one a single process writes, and memory
  stays bounded by ``window`` results however long the job.
* **Errors are the single-process errors.** A task's exception travels back pickled (every
  ``SmaskdError`` pickles) and is raised when its turn in the input order comes, so the
  error a user sees names the same item as with ``jobs=1``.

``func`` must be a module-level function ``func(context, task) -> result``; ``context`` is
sent to each helper once, tasks and results one by one. Both must pickle.
"""

from __future__ import annotations

import importlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smaskd.errors import InternalError
from smaskd.procs import die_with_parent, keep_heap_between_items

__all__ = ["PoolPolicy", "PoolStats", "default_jobs", "ordered_map"]


def default_jobs() -> int:
    """CPUs this process may run on (the CLI's default for ``--jobs``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """When a job is worth helpers, and how work is shared.

    The thresholds are where a helper starts to pay (benchmarks/README.md): below ~60 frames
    of 640x480 the caller finishes before a helper would be ready.
    """

    min_items: int = 16
    min_pixels: int = 20_000_000  # total frame pixels of the items to render
    main_works: bool = True  # False: the caller only hands out work (tests use it)
    per_helper: int = 2  # tasks queued at a helper: one running, one waiting

    def helpers_for(self, jobs: int, items: int, pixels: int) -> int:
        if jobs <= 1 or items < self.min_items or pixels < self.min_pixels:
            return 0
        return min(jobs - 1, items) if self.main_works else min(jobs, items)


@dataclass(slots=True)
class PoolStats:
    """Who rendered what: ``helper_items`` were rendered in helper processes."""

    helpers: int = 0
    helper_items: int = 0
    local_items: int = 0
    waited_s: float = 0.0  # time the caller spent waiting for helpers


# -- the helper process --------------------------------------------------------------------


def _wait(conns: list) -> list:
    from multiprocessing.connection import wait  # loaded by then: a helper exists

    return wait(conns)


def _helper_main() -> None:  # pragma: no cover - runs in the child interpreter
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes pipes
    task_fd, result_fd, module = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    die_with_parent(int(sys.argv[4]))  # a killed job must not leave its helpers rendering
    keep_heap_between_items()
    from multiprocessing.connection import Connection

    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    mod = importlib.import_module(module)  # the slow part: numpy, cv2, ... load here
    try:
        name, context = pickle.loads(tasks.recv_bytes())
    except (EOFError, OSError):
        return
    func = getattr(mod, name)
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    cancelled: set[int] = set()  # tasks the parent took back before we started them

    def read() -> None:  # keeps the task pipe drained, so the parent never blocks on it
        try:
            while True:
                data = tasks.recv_bytes()
                if data.startswith(_CANCEL):
                    cancelled.add(int(data[len(_CANCEL):]))
                else:
                    inbox.put(data)
        except (EOFError, OSError):
            inbox.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        results.send_bytes(pickle.dumps(("ready", -1, os.getpid())))
        while (data := inbox.get()) is not None:
            idx, task = pickle.loads(data)
            if idx in cancelled:
                cancelled.discard(idx)
                results.send_bytes(pickle.dumps(("cancelled", idx, None)))
                continue
            try:
                reply = ("ok", idx, func(context, task))
            except Exception as e:  # sent back and raised in the parent, in input order
                reply = ("err", idx, e)
            try:
                out = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:
                out = pickle.dumps(("err", idx, InternalError(
                    f"helper could not send back {reply[0]} result: {type(e).__name__}: {e}")))
            results.send_bytes(out)
    except (BrokenPipeError, OSError):
        pass  # the parent has gone: nothing to report to


_CANCEL = b"cancel:"  # not a pickle (those start with b"\x80")


class _Helper:
    """One child interpreter and its two pipes, seen from the parent."""

    def __init__(self, module: str) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding ``smaskd/``
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        code = "from smaskd.smask.parallel import _helper_main; _helper_main()"
        task_r, task_w = os.pipe()
        try:
            result_r, result_w = os.pipe()
        except BaseException:
            os.close(task_r)
            os.close(task_w)
            raise
        try:
            # -P: the current folder is not put on sys.path, so a stray smaskd/ or numpy.py
            # where the user stands cannot replace the code the parent runs.
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-c", code, str(task_r), str(result_w), module,
                 str(os.getpid())],
                pass_fds=(task_r, result_w), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, env=env,
            )
        except BaseException:
            os.close(task_w)
            os.close(result_r)
            raise
        finally:
            os.close(task_r)
            os.close(result_w)
        # imported here: a job that starts no helper (most imports, small exports) never
        # needs multiprocessing (~3 % of the CLI's import time)
        from multiprocessing.connection import Connection

        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.ready = False
        self.alive = True
        self.in_flight = 0
        self.order: deque[int] = deque()  # ids in flight, oldest (probably running) first

    def start(self, name: str, context: Any) -> None:
        self.tasks.send_bytes(pickle.dumps((name, context), protocol=pickle.HIGHEST_PROTOCOL))

    def send(self, idx: int, task: Any) -> None:
        self.tasks.send_bytes(pickle.dumps((idx, task), protocol=pickle.HIGHEST_PROTOCOL))
        self.in_flight += 1
        self.order.append(idx)

    def cancel(self, idx: int) -> None:
        """Take a task back; the helper skips it unless it has already started it."""
        self.tasks.send_bytes(_CANCEL + str(idx).encode())

    def receive(self) -> tuple[str, int, Any] | None:
        """One message, or None when the helper has gone (it is then marked dead)."""
        try:
            kind, idx, value = pickle.loads(self.results.recv_bytes())
        except (EOFError, OSError):
            self.alive = False
            return None
        if kind == "ready":
            self.ready = True
        else:
            self.in_flight -= 1
            self.order.remove(idx)
        return kind, idx, value

    def close(self) -> None:
        """End the helper without waiting for it: end-of-file makes it exit."""
        if not self.ready and self.proc.poll() is None:
            self.proc.kill()  # still importing: nothing to lose
        for conn in (self.tasks, self.results):
            try:
                conn.close()
            except OSError:
                pass
        threading.Thread(target=self.proc.wait, daemon=True).start()  # reap, off the hot path


# -- the parent's loop ---------------------------------------------------------------------


class _Slot:
    __slots__ = ("done", "error", "helper", "task", "value")

    def __init__(self, task: Any) -> None:
        self.task, self.done, self.error, self.value, self.helper = task, False, None, None, None


def ordered_map(
    func: Callable[[Any, Any], Any],
    context: Any,
    tasks: Iterable[Any],
    helpers: int,
    policy: PoolPolicy = PoolPolicy(),
    stats: PoolStats | None = None,
    describe: Callable[[Any], str] = lambda task: "a task",
) -> Iterator[Any]:
    """``func(context, task)`` for every task, yielded in input order, over ``helpers`` children.

    With ``helpers == 0`` this is a plain loop in the caller (no process, no pickling).
    ``describe(task)`` names a task in the error raised when its helper dies.
    """
    stats = stats if stats is not None else PoolStats()
    if helpers <= 0:
        for task in tasks:
            stats.local_items += 1
            yield func(context, task)
        return
    pool: list[_Helper] = []
    for _ in range(helpers):
        try:
            pool.append(_Helper(func.__module__))
        except OSError:  # no interpreter to start (embedded Python, fd limits): fewer helpers
            break
    stats.helpers = len(pool)
    if not pool:
        yield from ordered_map(func, context, tasks, 0, policy, stats, describe)
        return
    for h in pool:
        h.start(func.__name__, context)
    try:
        yield from _run(func, context, iter(tasks), pool, policy, stats, describe)
    finally:
        for h in pool:
            h.close()


def _run(func, context, tasks: Iterator[Any], pool: list[_Helper], policy: PoolPolicy,
         stats: PoolStats, describe) -> Iterator[Any]:
    # results held for the order: large enough that a slow helper rarely stalls the caller,
    # small enough that memory stays a few items' worth
    window = 4 * len(pool) * policy.per_helper + 8
    pending: deque[_Slot] = deque()
    sent: dict[int, _Slot] = {}
    counter = 0
    held: _Slot | None = None  # a task taken from ``tasks`` but not yet placed
    exhausted = False

    def absorb(h: _Helper) -> None:
        msg = h.receive()
        if msg is None:
            lost = [s for s in sent.values() if s.helper is h]
            if lost:
                first = min(lost, key=pending.index)
                raise InternalError(
                    f"helper process {h.proc.pid} ended unexpectedly (exit status "
                    f"{h.proc.poll()}) while rendering {describe(first.task)}"
                )
            return
        kind, idx, value = msg
        slot = sent.pop(idx, None)
        if kind in ("ready", "cancelled") or slot is None:  # None: taken back and done here
            return
        slot.done = True
        if kind == "ok":
            slot.value = value
        else:
            slot.error = value
        stats.helper_items += 1

    while True:
        for h in pool:  # take in whatever has arrived, without waiting
            while h.alive and h.results.poll():
                absorb(h)
        while pending and pending[0].done:
            slot = pending.popleft()
            if slot.error is not None:
                raise slot.error
            yield slot.value
        if held is None and not exhausted and len(pending) < window:
            try:
                held = _Slot(next(tasks))
            except StopIteration:
                exhausted = True
        if held is not None:
            free = [h for h in pool if h.alive and h.ready and h.in_flight < policy.per_helper]
            if free:
                h = min(free, key=lambda h: h.in_flight)
                held.helper = h
                sent[counter] = held
                h.send(counter, held.task)
                counter += 1
                pending.append(held)
                held = None
                continue
            if policy.main_works or not any(h.alive for h in pool):
                _run_here(held, func, context, stats)
                pending.append(held)
                held = None
                continue
        if exhausted and not pending:
            return
        if policy.main_works and _take_back(pool, sent, func, context, stats):
            continue  # did a task a helper had queued instead of waiting for it
        waiting = [h.results for h in pool if h.alive and (not h.ready or h.in_flight)]
        if not waiting:
            if any(s.helper is not None and not s.done for s in pending):  # pragma: no cover
                raise InternalError("no helper left to finish the queued work")
            continue
        t0 = time.perf_counter()
        ready = _wait(waiting)
        stats.waited_s += time.perf_counter() - t0
        for h in pool:
            if h.results in ready and h.alive:
                absorb(h)


def _take_back(pool: list[_Helper], sent: dict[int, _Slot], func, context,
               stats: PoolStats) -> bool:
    """Instead of waiting, do the oldest task a helper has queued but (probably) not started."""
    queued = [idx for h in pool if h.alive for idx in list(h.order)[1:] if idx in sent]
    if not queued:
        return False
    idx = min(queued)
    slot = sent.pop(idx)
    assert slot.helper is not None
    slot.helper.cancel(idx)
    _run_here(slot, func, context, stats)
    return True


def _run_here(slot: _Slot, func: Callable[[Any, Any], Any], context: Any,
              stats: PoolStats) -> None:
    """Do a task in the calling process; its error is kept and raised in its turn."""
    try:
        slot.value = func(context, slot.task)
    except Exception as e:
        slot.error = e
    slot.done = True
    stats.local_items += 1
