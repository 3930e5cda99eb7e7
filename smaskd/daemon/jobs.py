"""A job's life in the daemon: admit → claim → queue → worker → publish | retry | fail.

Why here and not in the worker: the parent owns every state change that must survive a
crash, and orders them so a kill -9 at any point is harmless: outputs are published first,
then the journal says so, and only then is the input moved to done/. A failed input goes to
failed/ with ``<name>.error.json`` beside it, and its log still lands in the outbox. Failing is
journalled like publishing (``failing`` + the staged log), and the move of an input records
its target between ``link`` and ``unlink``, so a crash half way through either is finished by
``recovery.py``, never repeated. ``faults.crash_point`` marks every moment tests kill us at.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from smaskd.config import Config, Inbox, Rule
from smaskd.convert import output_suffix, resolve_action
from smaskd.daemon import claims as claims_mod
from smaskd.daemon import (dirs, inputs, joblog, journalwait, markers, outbox, publishing, recovery,
                           scheduling, space, trees)
from smaskd.daemon.backoff import Fault, Waiter, Waiting, classify
from smaskd.daemon.faults import crash_point
from smaskd.daemon.groupcommit import GroupCommit
from smaskd.daemon.intake import Candidate, Intake, Signature, looks_complete
from smaskd.daemon.joblog import LOG_SUFFIX
from smaskd.daemon.journal import Journal
from smaskd.daemon.routing import route, safe_kind
from smaskd.daemon.unfinished import Unfinished, format_seconds, signature_of
from smaskd.daemon.workers import JobSpec, Outcome, Supervisor, describe_error
from smaskd.errors import JournalError, SmaskdError
from smaskd.log import JOB_LOGS

__all__ = ["Job", "Jobs", "MAX_RETRIES"]

MAX_RETRIES = 2  # a crashed, timed-out or out-of-memory job runs at most 1 + 2 times
_GIVE_UP = {"timeout": ("Timeout", "worker"), "memory": ("MemoryLimitExceeded", "limit")}


@dataclass(slots=True)
class Job:
    job_id: str
    inbox: Inbox
    name: str
    claim_path: Path
    rule: Rule | None = None
    action: str | None = None
    size: int = 0
    attempts: int = 0
    sha256: str | None = None
    claimed_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    duplicate_of: str | None = None
    log: Any = None
    stale: bool = False  # adopted after a crash: staging files of an earlier run may be left
    # completion (unfinished.py): what the claimed file was when the run started, whether
    # it was renamed in (complete), since when it looked incomplete, the inbox's settle
    claim_signature: Signature | None = None
    moved_in: bool = False
    incomplete_since: float | None = None
    settle: float | None = None
    rel: str = ""  # the path relative to the inbox it was dropped at (routing uses it)
    taken_from: tuple[str, str] | None = None  # (host, job id) whose claim we took over
    spool: bool = False  # the outbox ran out of room: convert into the spool (space.py)
    journaled: str | None = None  # last state past "running" the journal took (journalwait.py)
    events: list[dict[str, Any]] | None = None  # its log's events, once taken for writing


def _errno(error: Any) -> int | None:
    """The errno of an exception or of a worker's error report."""
    return error.get("errno") if isinstance(error, dict) else getattr(error, "errno", None)


class Jobs:
    """The queue, the running set, and every transition; called from the main loop only.

    Methods without a leading underscore are the API other modules drive, named by their
    Protocols (``recovery.JobQueue``, ``inputs.UnmovableJobs``, ``space.SpoolingJobs``):
    those modules never import this one, so they may call only what is public here.
    """

    def __init__(self, config: Config, journal: Journal, supervisor: Supervisor, log: Any) -> None:
        self.config, self.journal, self.supervisor, self.log = config, journal, supervisor, log
        self.group = GroupCommit(journal)  # one pass's finished jobs share their fsyncs
        self.queue: deque[Job] = deque()
        self.running: dict[str, Job] = {}
        self.done = 0
        self.failed = 0
        self.accepting = True
        self.waiting = Waiting(log, config.fault_backoff,  # jobs blocked by the filesystem
                               probes={"overlap": self._overlap_probe})
        #: rule name → why its outbox may not be used now (overlaps.py; the service updates it)
        self.refused_rules: dict[str, str] = {}
        self.unfinished = Unfinished()  # jobs whose input was still being written
        self.spawn_delay = 0.0  # backoff after a worker could not be started
        self.spawn_retry_at = 0.0
        self.spool = config.state_dir / "spool"  # results that did not fit (space.py)
        trees.register(config)  # keep_tree outboxes: sub-folders through descriptors only
        #: told of an input failed in place (inbox, path, reason): the service's intake
        #: leaves it alone until it changes and STATUS names it
        self.on_left: Callable[[Inbox, Path, str], None] | None = None
        #: told of every job that ends here, with its outcome: done | failed | lost (metrics.py)
        self.on_end: list[Callable[[Job, str], None]] = []
        #: told each ``job.failed`` summary (notifications.py); must not raise
        self.on_failed: Callable[[dict[str, Any]], None] | None = None

    # ------------------------------------------------------------ intake → queue

    def new_job(self, inbox: Inbox, claim: claims_mod.Claim, size: int) -> Job:
        job = Job(claim.job_id, inbox, claim.name, claim.path, size=size, rel=claim.rel)
        job.log = self.log.bind(job_id=job.job_id, input=job.name, inbox=inbox.name)
        JOB_LOGS.open(job.job_id)
        return job

    def admit(self, cand: Candidate, inbox: Inbox, intake: Intake) -> None:
        """Route a stable candidate, claim it, and queue it (or fail it at once)."""
        if cand.kind == "special":
            self.log.warning("file.special", inbox=inbox.name, path=cand.rel,
                             mode=oct(stat.S_IFMT(cand.st.st_mode)), action="skipped, not opened")
            intake.leave(cand)
            return
        # A symlink is routed by name only (its target is never read) so its log finds an outbox.
        rule = route(self.config, inbox.name, cand.rel,
                     (lambda: safe_kind(cand.path)) if cand.kind == "file" else (lambda: None))
        if cand.kind == "file":
            if rule is None and self.config.unmatched == "leave":
                self.log.info("file.unmatched", inbox=inbox.name, path=cand.rel, action="left")
                intake.leave(cand)
                return
        if self.waiting.has("journal"):
            return  # nothing is claimed that the journal cannot record (journalwait.py)
        claim = claims_mod.claim(cand.path, inbox, self.config.host_id, rel=cand.rel)
        intake.forget(cand.path)
        if claim is None:
            self.log.debug("claim.lost", inbox=inbox.name, path=cand.rel)
            return
        if claim.rel != cand.rel:  # too deep to fit in a claim name: routed by name later
            self.log.warning("claim.path_not_kept", inbox=inbox.name, path=cand.rel,
                             reason="the path does not fit in a claim name (255 bytes); a "
                                    "restart or takeover routes it by its name alone")
        crash_point("after_claim", claim.name)
        try:
            self.journal.add(claim.job_id, self.config.host_id, inbox.name, claim.name,
                             claim.path, cand.st.st_size)
        except JournalError as e:
            if journalwait.undo_claim(self, claim, cand, e):
                return
            job = self.new_job(inbox, claim, cand.st.st_size)
            job.rule = rule
            journalwait.wait(self, job, e, "admit")
            return
        markers.consume(inbox, cand.rel, cand.st)  # claimed and journalled: its marker goes
        job = self.new_job(inbox, claim, cand.st.st_size)
        job.rule = rule
        job.claim_signature = signature_of(claim.path)
        job.moved_in, job.incomplete_since = cand.moved_in, cand.incomplete_since
        job.settle = intake.settle
        job.log.debug("job.claimed", path=cand.rel, size=job.size, claim=str(claim.path),
                      complete="renamed in" if cand.moved_in else "settled")
        try:
            if cand.kind == "symlink":
                target = os.readlink(claim.path.name, dir_fd=self.claim_dir(job).fd())
                self.fail(job, {"type": "UnsafeInput", "class": "input", "where": job.name,
                                "message": f"a symlink (to {target!r}); symlinks are never "
                                           "followed"})
                return
            self.prepare(job)
        except JournalError as e:
            journalwait.wait(self, job, e, "run")

    def prepare(self, job: Job) -> None:
        """Route (if not yet), check limits, resolve ``auto``; queue or fail."""
        if job.rule is None:
            job.rule = route(self.config, job.inbox.name, job.rel or job.name,
                             lambda: safe_kind(job.claim_path))
        if job.rule is None:
            self.fail(job, {"type": "NoRuleMatched", "class": "routing", "where": job.name,
                            "message": "no rule matched this file (unmatched: fail)"})
            return
        job.log = job.log.bind(rule=job.rule.name)
        try:
            st = self.claim_dir(job).lstat(job.claim_path.name)
        except FileNotFoundError:
            job.log.warning("claim.vanished")
            JOB_LOGS.close(job.job_id)
            self.journal.update(job.job_id, state="lost", error="claimed file vanished")
            self.ended(job, "lost")
            return
        job.size = st.st_size
        if not stat.S_ISREG(st.st_mode):
            self.fail(job, {"type": "UnsafeInput", "class": "input", "where": job.name,
                            "message": "not a regular file; never opened"})
            return
        if st.st_size > self.config.max_input_bytes:
            self.fail(job, {"type": "InputTooLarge", "class": "limit", "where": job.name,
                            "message": f"{st.st_size} bytes > max_input_bytes "
                                       f"{self.config.max_input_bytes}"})
            return
        unreadable = inputs.unreadable(job.claim_path, st)
        if unreadable is not None:
            self.fail(job, {"type": "PermissionDenied", "class": "input", "where": job.name,
                            "message": unreadable})
            return
        try:
            job.action = resolve_action(job.claim_path, job.rule.action)
        except SmaskdError as e:
            self.fail(job, describe_error(e))
            return
        except OSError as e:  # reading its first bytes failed (a share's EIO: backoff.py)
            if not self.park(job, e, "run"):
                self.fail(job, describe_error(e))
            return
        self.journal.update(job.job_id, rule=job.rule.name, action=job.action, state="claimed")
        job.log.debug("job.queued", action=job.action)
        self.queue.append(job)

    # ------------------------------------------------------------ queue → workers

    def start_ready(self) -> None:
        if time.monotonic() < self.spawn_retry_at:
            return
        while self.accepting and self.queue and len(self.running) < self.config.workers:
            job = scheduling.next_job(self.queue, list(self.running.values()), self.config)
            if job is None:
                break  # every queued job's rule is at its max_jobs (scheduling.py)
            if self._held(job):
                continue
            try:
                self._start(job)
            except JournalError as e:
                job.attempts = max(0, job.attempts - 1)
                journalwait.wait(self, job, e, "run")
                continue
            except OSError as e:  # cannot spawn now (EAGAIN, ENOMEM): keep the job, try later
                if self.park(job, e, "run"):
                    continue  # the outbox's share is gone: wait for it (backoff.py)
                job.attempts -= 1
                self.queue.appendleft(job)
                # 1 s, doubling to fault_backoff: a lasting cause (no memory, no fork server)
                # must not become an error line per tick
                self.spawn_delay = min(max(1.0, self.spawn_delay * 2), self.config.fault_backoff)
                self.spawn_retry_at = time.monotonic() + self.spawn_delay
                job.log.error("worker.spawn_failed", error=str(e),
                              retry_in_s=round(self.spawn_delay, 1))
                return
            self.spawn_delay = 0.0

    def _start(self, job: Job) -> None:
        assert job.rule is not None and job.action is not None
        if job.stale:
            self.cleanup_staging(job, worker_temps=True)
            job.stale = False
        job.attempts += 1
        job.started_at = time.monotonic()
        if job.claim_signature is None:  # adopted after a restart: from here on
            job.claim_signature = signature_of(job.claim_path)
        # The outbox itself, never its parents: under an unmounted share's mount point a
        # local folder would swallow the results (the parent missing is a fault: park).
        dirs.place(job.rule.outbox).fd()
        if job.spool:
            space.spool_dir(self.config.state_dir)
        staging = self.result_path(job)
        spec = JobSpec(job.job_id, job.rule.name, job.name, str(job.claim_path), str(staging),
                       job.action, replace(job.rule.options, source_name=job.name,
                               limits=self.config.limits),
                       job.attempts, self.config.worker_memory,
                       os.getpid())
        self.journal.update(job.job_id, state="running", attempts=job.attempts)
        pid = self.supervisor.start(spec, job.rule.timeout or self.config.job_timeout)
        self.running[job.job_id] = job
        job.log.debug("job.started", attempt=job.attempts, pid=pid, action=job.action)
        crash_point("after_start", job.name)

    def collect(self, retry: bool = True) -> None:
        """Finish the jobs whose worker ended; their publishing steps share the pass's
        durability barriers (groupcommit.py)."""
        with self.group.batch(self.settle_error):
            for out in self.supervisor.poll():
                job = self.running.pop(out.job_id)
                for event in out.events:
                    JOB_LOGS.add(job.job_id, event)
                try:
                    if out.sha256:
                        job.sha256 = out.sha256
                        self.journal.update(job.job_id, sha256=out.sha256)
                    self._finish(job, out, retry)
                except JournalError as e:  # only a result is worth keeping; the rest runs again
                    ok = out.status == "ok"
                    journalwait.wait(self, job, e, "publish" if ok else "run",
                                     out if ok else None)
                except Exception as e:  # noqa: BLE001 - one job's I/O error must not stop us
                    self.settle_error(job, e, "publish", out)

    def _finish(self, job: Job, out: Outcome, retry: bool) -> None:
        if self._still_written(job, out):
            return
        if out.status == "ok":
            self.publish(job, out)
        elif out.status == "error":
            if not self.park(job, out.error, "run"):
                self.fail(job, out.error or {})
        else:  # the worker was killed, crashed or timed out: its temp file may be left
            self.cleanup_staging(job, worker_temps=True)
            if retry and job.attempts <= MAX_RETRIES:
                job.log.warning("job.retry", reason=out.reason, attempt=job.attempts)
                self.journal.update(job.job_id, state="claimed", error=out.reason)
                # not at once: a crash loop or a timeout under load gets a pause (1 s, then
                # doubling per retry of this input, jittered) before the next worker
                self.waiting.park(Fault("worker for", job.claim_path,
                                        f"ended: {out.reason}; retry {job.attempts} of "
                                        f"{MAX_RETRIES} after a pause", "after"),
                                  Waiter(job, "run"))
            elif not retry:  # draining: leave the claim for the next start
                self.journal.update(job.job_id, state="claimed")
                JOB_LOGS.close(job.job_id)
            else:
                kind, klass = _GIVE_UP.get(out.status, ("WorkerCrashed", "worker"))
                error = {"type": kind, "class": klass, "message": out.reason,
                         "exitcode": out.exitcode, "where": None}
                if out.exitcode is not None and out.exitcode < 0:
                    with contextlib.suppress(ValueError):
                        error["signal"] = signal.Signals(-out.exitcode).name
                self.fail(job, error)

    def result_path(self, job: Job) -> Path:
        """Where the worker writes the result: the outbox, or the spool after no room."""
        assert job.rule is not None and job.action is not None
        folder = self.spool if job.spool else job.rule.outbox
        return outbox.staging_path(folder, job.job_id, output_suffix(job.action))

    def cleanup_staging(self, job: Job, worker_temps: bool = False) -> None:
        """Remove this job's staging files, and with ``worker_temps`` the worker's temp file.

        Staging names are known (``.smaskd-<job id><suffix>``), so they are unlinked by name:
        listing the outbox for them cost a scan of the whole outbox per failed job. The
        worker's temp file (``..smaskd-<job id>…``, a random name) needs the listing, but only
        when the worker did not end on its own (killed, crashed, timed out) or the job
        survived a restart; otherwise the worker's atomic writer removed it.
        """
        known = [(job.inbox.failed_dir, LOG_SUFFIX), (job.inbox.failed_dir, ".error.json")]
        if job.rule:
            known.append((job.rule.outbox, LOG_SUFFIX))
            if job.action:
                known.append((job.rule.outbox, output_suffix(job.action)))
                known.append((self.spool, output_suffix(job.action)))
        for folder, suffix in known:
            with contextlib.suppress(OSError):
                os.unlink(outbox.staging_path(folder, job.job_id, suffix))
        if worker_temps and job.rule:
            for entry, job_id in outbox.staging_files([job.rule.outbox, self.spool]):
                if job_id == job.job_id:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    # ---------------------------------------------------- publish / fail (publishing.py)

    def publish(self, job: Job, out: Outcome) -> None:
        """Decide, journal and publish ``job``'s result, then complete its input."""
        publishing.publish(self, job, out)

    def publish_plan(self, plan: list[list[str]], replace: bool, name: str = "",
                     defer: bool = False) -> list[str]:
        """Rename each staged file of ``plan`` to its planned name (publishing.py)."""
        return publishing.publish_plan(self, plan, replace, name, defer)

    def complete(self, job: Job, summary: dict[str, Any] | None = None) -> bool:
        """The input's completion action, once ``published`` (publishing.py)."""
        return publishing.complete(self, job, summary)

    def finish_failure(self, job: Job, plan: list[list[str]], error: dict[str, Any],
                       summary: dict[str, Any] | None = None) -> None:
        """Publish the staged log, move the input to failed/, write its report."""
        publishing.finish_failure(self, job, plan, error, summary)

    def summary(self, job: Job, event: str, **fields: Any) -> dict[str, Any]:
        """The job's ``job.done`` / ``job.failed`` summary (joblog.py)."""
        return joblog.summary(job, event, **fields)

    def claim_dir(self, job: Job) -> dirs.Folder:
        """This host's claim folder, through its (pinned) descriptor."""
        return claims_mod.area(job.inbox).host(self.config.host_id)

    def lost(self, job: Job, why: str) -> None:
        """The claim left this host under our feet: drop our work, report nothing."""
        job.log.error("claim.lost", reason=why, action="our outputs discarded")
        self.cleanup_staging(job, worker_temps=True)
        JOB_LOGS.close(job.job_id)
        self.journal.update(job.job_id, state="lost", error=why)
        self.ended(job, "lost")

    def ended(self, job: Job, outcome: str) -> None:
        """Tell ``on_end`` (metrics) that ``job`` ended here: done, failed or lost."""
        for hook in self.on_end:
            hook(job, outcome)

    @staticmethod
    def reason(error: dict[str, Any]) -> str:
        return error.get("message") or error.get("type") or "failed"

    def fail(self, job: Job, error: dict[str, Any]) -> None:
        """Fail ``job`` (``publishing.fail_job``), unless a filesystem fault on the way (the inbox gone, a
        symlinked failed/) says to park it until the fault is gone (backoff.py)."""
        refused = self.refusal(job)
        if refused is not None:  # its log would land in an outbox that aliases an inbox
            self.park(job, error, "fail", None, refused)
            return
        try:
            publishing.fail_job(self, job, error)
        except JournalError as e:
            journalwait.wait(self, job, e, "fail", error)
        except OSError as e:
            if not self.park(job, e, "fail"):
                raise

    # ------------------------------------------------------------ waiting (backoff.py)

    def refusal(self, job: Job) -> Fault | None:
        """The fault "this rule's outbox aliases an inbox" (overlaps.py), if it does now."""
        reason = self.refused_rules.get(job.rule.name) if job.rule else None
        if reason is None or job.rule is None:
            return None
        return Fault(f"outbox of rule {job.rule.name}", job.rule.outbox, reason, "overlap")

    def _overlap_probe(self, fault: Fault) -> str | None:
        for rule in self.config.rules:
            if rule.outbox == fault.path and rule.name in self.refused_rules:
                return self.refused_rules[rule.name]
        return None

    def _held(self, job: Job) -> bool:
        """Park a job instead of starting it while its inbox or outbox is known to be broken."""
        box = job.rule.outbox if job.rule else None
        fault = self.waiting.blocking(job.inbox.path, box) or self.refusal(job)
        if fault is None and not os.path.isdir(job.inbox.path):
            fault = classify(job.inbox, box, None)
        if fault is None:
            return False
        self.waiting.park(fault, Waiter(job, "run"))
        return True

    def park(self, job: Job, error: Any, step: str, out: Outcome | None = None,
              fault: Fault | None = None) -> bool:
        """Hold ``job`` if a filesystem fault, not its input, stopped it; False to fail it.

        The input stays claimed. A job that has to run again gets its staging files
        removed, its attempt back (the fault was not its doing) and the journal state
        ``claimed``; a job past ``publishing`` keeps its journal state, which says exactly
        what is left to do, for ``retry_waiting`` and for a restart alike.
        """
        fault = fault or classify(job.inbox, job.rule.outbox if job.rule else None, error,
                                  job.claim_path, job.name)
        if fault is None:
            return False
        if fault.label == "outbox" and fault.probe == "write" and \
                _errno(error) in space.NO_ROOM:
            job.spool = True  # its next run must not fill the outbox again (space.py)
        JOB_LOGS.open(job.job_id)  # keep collecting: the log is written when it finishes
        try:
            row = self.journal.get(job.job_id)
        except JournalError:
            row = None
        if row is None and job.journaled is not None:
            step = "resume"
        elif row is None or row.state in ("claimed", "running"):
            staged = out is not None and step == "publish" and job.action is not None and \
                job.rule is not None and os.path.lexists(self.result_path(job))
            if not staged:
                step, out = "run", None
                self.cleanup_staging(job)
                job.attempts = max(0, job.attempts - 1)
            with contextlib.suppress(JournalError):  # that fault is waited for on its own
                self.journal.update(job.job_id, state="claimed", attempts=job.attempts,
                                    error=f"waiting: {fault.describe()}")
        else:
            step = "resume"
        self.waiting.park(fault, Waiter(job, step, out))
        return True

    def retry_waiting(self) -> None:
        """Jobs whose fault is gone (probed by backoff.py): run, publish or resume them."""
        for waiter in self.waiting.release():
            job = waiter.job
            job.log.info("job.resumed", step=waiter.step)
            try:
                if waiter.step == "run" and job.rule is not None and job.action is not None:
                    self.queue.appendleft(job)
                elif waiter.step == "run":  # never routed (it failed early): from the top
                    self.prepare(job)
                elif waiter.step == "publish":
                    self.publish(job, waiter.outcome)
                elif waiter.step == "fail":  # the journal refused to record the failure
                    self.fail(job, waiter.outcome)
                elif waiter.step == "admit":  # claimed; the journal refused its row
                    self.journal.add(job.job_id, self.config.host_id, job.inbox.name, job.name,
                                     job.claim_path, job.size)
                    self.prepare(job)
                else:
                    row = self.journal.get(job.job_id)
                    if row is not None:
                        recovery.resume(self, job, row)
            except Exception as e:  # noqa: BLE001 - as in collect(): park again or fail
                self.settle_error(job, e, waiter.step, waiter.outcome)

    def settle_error(self, job: Job, error: Exception, step: str,
                      out: Outcome | None = None) -> None:
        """An error while publishing, moving or failing a job: park it or fail it, and
        never let the error leave the loop (the other outcomes of this pass would be lost).

        A job whose result is already out (journal ``publishing``/``published``) is never
        failed: that would report a published file as failed and write a second log. It
        waits, whatever the error, until the step can be finished.
        """
        if isinstance(error, JournalError):
            journalwait.wait(self, job, error, step, out)
            return
        if self.park(job, error, step, out):
            return
        row = self.journal.get(job.job_id)
        state = row.state if row is not None else None
        unfinished = {
            "publishing": (job.rule.outbox if job.rule else job.inbox.failed_dir, "outbox"),
            "published": (job.inbox.done_dir, "done folder"),
            "failing": (job.inbox.failed_dir, "failed folder"),
        }
        if state in unfinished:
            folder, label = unfinished[state]
            self.park(job, error, step, out, Fault(
                label, folder, f"cannot finish the job there: {type(error).__name__}: {error}",
                "write"))
            return
        job.log.error("job.finish_error", error=f"{type(error).__name__}: {error}")
        try:
            self.fail(job, describe_error(error))
        except Exception as e:  # noqa: BLE001 - failed/ unusable too: wait for it
            self.park(job, e, "resume", None, Fault(
                "failed folder", job.inbox.failed_dir,
                f"cannot record the failure there: {type(e).__name__}: {e}", "write"))

    # ------------------------------------------------------------ unfinished inputs

    def _still_written(self, job: Job, out: Outcome) -> bool:
        """Hold the job (unfinished.py) if its writer was not done; True if held.

        The result or error of such a run says nothing about the finished file: staging
        files go, the attempt is given back, the input stays claimed.
        """
        if out.status not in ("ok", "error"):
            return False
        now_sig = signature_of(job.claim_path)
        if now_sig is None:
            return False  # gone: publish/fail report the claim as lost
        error = out.error or {}
        changed = job.claim_signature is not None and now_sig != job.claim_signature
        truncated = out.status == "error" and not job.moved_in and \
            error.get("class") == "input" and (error.get("type") == "IncompleteInputError"
                                               or not looks_complete(job.claim_path))
        if not (changed or truncated):
            return False
        why = ("changed after it was claimed" if changed else
               f"ends before it is complete ({error.get('message') or error.get('type')})")
        now = time.monotonic()
        self.cleanup_staging(job, worker_temps=True)
        job.attempts = max(0, job.attempts - 1)
        self.journal.update(job.job_id, state="claimed", attempts=job.attempts,
                            error=f"waiting: the input {why}")
        stable_since = now if changed else min(now, job.incomplete_since or now)
        job.incomplete_since = stable_since
        self.unfinished.hold(job, None if changed else now_sig, now_sig, stable_since,
                             job.settle if job.settle is not None else
                             (job.inbox.settle if job.inbox.settle is not None else 2.0), why)
        job.log.info("job.incomplete", reason=f"the input {why}",
                     action="waits in the claim folder until it is complete, up to grace",
                     grace=format_seconds(job.inbox.grace))
        return True

    def retry_unfinished(self) -> None:
        """Run again the held jobs whose input is complete now; fail those past grace."""
        ready, expired, gone = self.unfinished.tick()
        for job in ready:
            job.log.info("job.resumed", step="run", reason="the input is complete")
            self.queue.append(job)
        for job in gone:
            self.lost(job, "the claimed input is gone while it waited to be complete")
        for job in expired:
            try:
                self.fail(job, {"type": "IncompleteInput", "class": "input", "where": job.name,
                                "message": f"incomplete after {format_seconds(job.inbox.grace)}"
                                           ": the file stopped changing before it was complete"
                                           " (a writer that died, or a cut copy)"})
            except Exception as e:  # noqa: BLE001 - as in collect(): park or fail
                self.settle_error(job, e, "fail")

    # ------------------------------------------------------------ recovery (recovery.py)

    def recover(self, inbox: Inbox) -> int:
        """Re-adopt this host's claims after a crash or a drain; never publish twice."""
        return recovery.recover(self, inbox)

    def take_over(self, inbox: Inbox, host: str) -> int:
        """Adopt the claims of ``host`` (its lease expired; ``hosts.py`` decided)."""
        return recovery.take_over(self, inbox, host)

    def sweep_staging(self) -> int:
        """Remove staging files of finished jobs left by a crash (once, at start-up)."""
        return recovery.sweep_staging(self)
