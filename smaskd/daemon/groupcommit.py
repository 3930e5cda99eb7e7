"""Group commit: the jobs finished in one loop pass share their fsyncs.

Why: publishing a job needs two durability barriers (journal.py, "Group commit"): its plan is
durable before the outputs are renamed into the outbox, and its ``moved_to`` before the claim
leaves ``processing/``; and the outbox and done/ folders are fsynced before the records that
describe their new entries. Done job by job, that is four fsyncs per job on top of the staged
log and the decision marker. Here the steps after each barrier are queued instead, and the
pass runs them round by round: every job's renames, then one fsync per outbox folder and one
of the journal's WAL, every job's records and links into done/, one fsync per done/ and
one of the WAL, every claim unlink. Each job still takes its steps in its own order; only
the waits are shared.

Outside a pass (start-up recovery, a job resumed after a fault) a step runs at once, after its
barrier, so callers write the same code for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from smaskd.daemon import dirs
from smaskd.daemon.journal import Journal

__all__ = ["GroupCommit"]

#: (job, step, outcome, error) → None: what becomes of a job whose queued step raised
#: (``Jobs.settle_error``: park it or fail it, never stop the other jobs of the pass)
OnError = Callable[[Any, Exception, str, Any], None]


class GroupCommit:
    """Durability barriers shared by the jobs of one loop pass."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._steps: list[tuple[Any, str, Any, Callable[[], None]]] | None = None
        self._folders: dict[str, Path] = {}

    @contextlib.contextmanager
    def batch(self, on_error: OnError) -> Iterator[None]:
        """Queue the steps ``then`` is given in the block; run them round by round after it."""
        self._steps = []
        try:
            yield
            while self._steps:
                steps, self._steps = self._steps, []
                try:
                    self._barrier()
                except Exception as e:  # noqa: BLE001 - each job waits for it (backoff.py)
                    for job, step, out, _ in steps:
                        on_error(job, e, step, out)
                    continue
                for job, step, out, run in steps:
                    try:
                        run()
                    except Exception as e:  # noqa: BLE001 - as in Jobs.collect: one job only
                        on_error(job, e, step, out)
        finally:
            self._steps = None
            folders, self._folders = self._folders, {}
            for folder in folders.values():  # left by a step that raised: synced all the same
                with contextlib.suppress(OSError):
                    dirs.place(folder).sync()

    def then(self, job: Any, step: str, out: Any, run: Callable[[], None]) -> None:
        """Run ``run`` once the folders touched and the journal's commits so far are durable.

        ``step``/``out``: where ``job`` resumes if ``run`` or the barrier fails (queued only).
        """
        if self._steps is None:
            self._barrier()
            run()
        else:
            self._steps.append((job, step, out, run))

    def touched(self, folder: Path) -> None:
        """``folder`` got a new entry that must be durable before the next step (now, outside
        a batch)."""
        if self._steps is None:
            dirs.place(folder).sync()
        else:
            self._folders[str(folder)] = folder

    def _barrier(self) -> None:
        folders, self._folders = self._folders, {}
        for folder in folders.values():  # first: the records committed after them say so
            dirs.place(folder).sync()
        self.journal.sync()
