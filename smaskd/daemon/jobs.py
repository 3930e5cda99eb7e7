"""A job's life in the daemon: admit → claim → queue → worker → publish | retry | fail.

Why here and not in the worker: the parent owns every state change that must survive a
crash, and orders them so a kill -9 at any point is harmless: outputs are published first,
then the journal says so, and only then is the input moved to done/. A failed input goes to
failed/ with ``<name>.error.json`` beside it, and its log still lands in the outbox.
"""

from __future__ import annotations

import glob
import json
import os
import stat
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from smaskd import __version__
from smaskd.config import Config, Inbox, Rule
from smaskd.convert import output_suffix, resolve_action
from smaskd.daemon import claims as claims_mod
from smaskd.daemon import outbox
from smaskd.daemon.intake import Candidate, Intake
from smaskd.daemon.journal import Journal
from smaskd.daemon.routing import route, safe_kind
from smaskd.daemon.workers import JobSpec, Outcome, Supervisor, describe_error
from smaskd.errors import SmaskdError
from smaskd.log import JOB_LOGS, jsonable, timestamper

__all__ = ["Job", "Jobs", "MAX_RETRIES"]

MAX_RETRIES = 2  # a crashed or timed-out job runs at most 1 + 2 times
LOG_SUFFIX = ".log.jsonl"


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


def _fault(point: str, name: str) -> None:
    """Test-only crash points in the parent (``SMASKD_FAULT=exit_after_publish:<substr>``)."""
    for directive in os.environ.get("SMASKD_FAULT", "").split(","):
        parts = directive.split(":")
        if parts[0] == point and (len(parts) < 2 or parts[1] in name):
            os._exit(137)


class Jobs:
    """The queue, the running set, and every transition; called from the main loop only."""

    def __init__(self, config: Config, journal: Journal, supervisor: Supervisor, log: Any) -> None:
        self.config, self.journal, self.supervisor, self.log = config, journal, supervisor, log
        self.queue: deque[Job] = deque()
        self.running: dict[str, Job] = {}
        self.done = 0
        self.failed = 0
        self.accepting = True

    # ------------------------------------------------------------ intake → queue

    def _job(self, inbox: Inbox, claim: claims_mod.Claim, size: int) -> Job:
        job = Job(claim.job_id, inbox, claim.name, claim.path, size=size)
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
        claim = claims_mod.claim(cand.path, inbox, self.config.host_id)
        intake.forget(cand.path)
        if claim is None:
            self.log.debug("claim.lost", inbox=inbox.name, path=cand.rel)
            return
        self.journal.add(claim.job_id, self.config.host_id, inbox.name, claim.name, claim.path,
                         cand.st.st_size)
        job = self._job(inbox, claim, cand.st.st_size)
        job.rule = rule
        job.log.debug("job.claimed", path=cand.rel, size=job.size, claim=str(claim.path))
        if cand.kind == "symlink":
            target = os.readlink(claim.path)
            self.fail(job, {"type": "UnsafeInput", "class": "input", "where": job.name,
                            "message": f"a symlink (to {target!r}); symlinks are never followed"})
            return
        self._prepare(job)

    def _prepare(self, job: Job) -> None:
        """Route (if not yet), check limits, resolve ``auto``; queue or fail."""
        if job.rule is None:
            job.rule = route(self.config, job.inbox.name, job.name, lambda: safe_kind(job.claim_path))
        if job.rule is None:
            self.fail(job, {"type": "NoRuleMatched", "class": "routing", "where": job.name,
                            "message": "no rule matched this file (unmatched: fail)"})
            return
        job.log = job.log.bind(rule=job.rule.name)
        try:
            st = os.lstat(job.claim_path)
        except FileNotFoundError:
            job.log.warning("claim.vanished")
            JOB_LOGS.close(job.job_id)
            self.journal.update(job.job_id, state="failed", error="claimed file vanished")
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
        try:
            job.action = resolve_action(job.claim_path, job.rule.action)
        except SmaskdError as e:
            self.fail(job, describe_error(e))
            return
        self.journal.update(job.job_id, rule=job.rule.name, action=job.action, state="claimed")
        job.log.debug("job.queued", action=job.action)
        self.queue.append(job)

    # ------------------------------------------------------------ queue → workers

    def start_ready(self) -> None:
        while self.accepting and self.queue and len(self.running) < self.config.workers:
            job = self.queue.popleft()
            try:
                self._start(job)
            except OSError as e:  # cannot spawn now (EAGAIN, ENOMEM): keep the job, try later
                job.attempts -= 1
                self.queue.appendleft(job)
                job.log.error("worker.spawn_failed", error=str(e))
                return

    def _start(self, job: Job) -> None:
        assert job.rule is not None and job.action is not None
        job.rule.outbox.mkdir(parents=True, exist_ok=True)
        job.attempts += 1
        job.started_at = time.monotonic()
        staging = outbox.staging_path(job.rule.outbox, job.job_id, output_suffix(job.action))
        spec = JobSpec(job.job_id, job.rule.name, job.name, str(job.claim_path), str(staging),
                       job.action, replace(job.rule.options, source_name=job.name),
                       job.attempts, self.config.worker_memory,
                       os.getpid())
        self.journal.update(job.job_id, state="running", attempts=job.attempts)
        pid = self.supervisor.start(spec, job.rule.timeout or self.config.job_timeout)
        self.running[job.job_id] = job
        job.log.debug("job.started", attempt=job.attempts, pid=pid, action=job.action)

    def collect(self, retry: bool = True) -> None:
        for out in self.supervisor.poll():
            job = self.running.pop(out.job_id)
            for event in out.events:
                JOB_LOGS.add(job.job_id, event)
            if out.sha256:
                job.sha256 = out.sha256
                self.journal.update(job.job_id, sha256=out.sha256)
            try:
                self._finish(job, out, retry)
            except Exception as e:  # noqa: BLE001 - one job's I/O error must not stop the daemon
                job.log.error("job.finish_error", error=f"{type(e).__name__}: {e}")
                self.fail(job, describe_error(e))

    def _finish(self, job: Job, out: Outcome, retry: bool) -> None:
        if out.status == "ok":
            self.publish(job, out)
        elif out.status == "error":
            self.fail(job, out.error or {})
        else:
            self._cleanup_staging(job)
            if retry and job.attempts <= MAX_RETRIES:
                job.log.warning("job.retry", reason=out.reason, attempt=job.attempts)
                self.journal.update(job.job_id, state="claimed", error=out.reason)
                self.queue.append(job)
            elif not retry:  # draining: leave the claim for the next start
                self.journal.update(job.job_id, state="claimed")
                JOB_LOGS.close(job.job_id)
            else:
                kind = "Timeout" if out.status == "timeout" else "WorkerCrashed"
                self.fail(job, {"type": kind, "class": "worker", "message": out.reason,
                                "exitcode": out.exitcode, "where": None})

    def _cleanup_staging(self, job: Job) -> None:
        if job.rule is None:
            return
        for leftover in glob.glob(str(job.rule.outbox / f"*.smaskd-{job.job_id}*")):
            try:
                os.unlink(leftover)
            except OSError:
                pass

    # ------------------------------------------------------------ publish / fail

    def _summary(self, job: Job, event: str, **fields: Any) -> dict[str, Any]:
        now = time.monotonic()
        summary = {"event": event, "job_id": job.job_id, "rule": job.rule.name if job.rule else None,
                   "inbox": job.inbox.name, "input": job.name, "sha256": job.sha256,
                   "size": job.size, "action": job.action, "attempts": job.attempts,
                   "duration_ms": round((now - job.claimed_at) * 1000, 1),
                   "queue_ms": round(((job.started_at or now) - job.claimed_at) * 1000, 1)}
        summary.update(fields)
        return summary

    def _log_bytes(self, job: Job, summary: dict[str, Any], level: str) -> bytes:
        events = JOB_LOGS.close(job.job_id)
        last = timestamper(None, level, {**summary, "level": level, "logger": "smaskd.daemon"})
        return "".join(json.dumps(e, default=str) + "\n" for e in [*events, jsonable(last)]).encode()

    def publish(self, job: Job, out: Outcome) -> None:
        assert job.rule is not None and job.action is not None
        rule, result = job.rule, out.result or {}
        box = rule.outbox
        suffix = output_suffix(job.action)
        staging = outbox.staging_path(box, job.job_id, suffix)
        if job.sha256:
            job.duplicate_of = self.journal.duplicate_of(job.job_id, job.sha256, rule.name)
            if job.duplicate_of:
                job.log.info("job.duplicate", duplicate_of=job.duplicate_of)
        stem = outbox.output_stem(job.name)
        chosen = outbox.pick_names(box, stem, [suffix, LOG_SUFFIX], rule.on_conflict)
        plan: list[list[str]] = []
        if chosen is None:  # on_conflict: skip
            os.unlink(staging)
            job.log.info("output.skipped", reason="exists", name=f"{stem}{suffix}")
            log_stem = outbox.pick_names(box, stem, [LOG_SUFFIX], "rename")
            outputs = []
        else:
            log_stem = chosen
            fd = os.open(staging, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, self.config.file_mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            plan.append([str(staging), str(box / f"{chosen}{suffix}")])
            outputs = [f"{chosen}{suffix}"]
        log_final = box / f"{log_stem}{LOG_SUFFIX}"
        summary = self._summary(
            job, "job.done", outputs=outputs, log=log_final.name, outbox=str(box),
            items=result.get("items"), instances=result.get("instances"),
            labels=result.get("labels"), warnings=result.get("warnings", []),
            convert_ms=result.get("convert_ms"), worker_ms=round(out.duration * 1000, 1),
            skipped=chosen is None, duplicate_of=job.duplicate_of)
        log_staging = outbox.staging_path(box, job.job_id, LOG_SUFFIX)
        outbox.write_staging(log_staging, self._log_bytes(job, summary, "info"), self.config.file_mode)
        plan.append([str(log_staging), str(log_final)])
        self.journal.update(job.job_id, state="publishing", outputs=plan)
        _fault("exit_before_publish", job.name)
        self._publish_plan(plan, rule)
        self.journal.update(job.job_id, state="published")
        _fault("exit_after_publish", job.name)
        self.complete(job)
        self.log.info("job.done", **{k: v for k, v in summary.items() if k != "event"})

    def _publish_plan(self, plan: list[list[str]], rule: Rule) -> None:
        for staging, final in plan:
            if not os.path.lexists(staging):
                continue  # published before a crash
            try:
                outbox.publish(Path(staging), Path(final), replace=rule.on_conflict == "replace")
            except FileExistsError:  # a writer took the name since we chose it: keep both
                name = Path(final).name
                suffix = LOG_SUFFIX if name.endswith(LOG_SUFFIX) else Path(final).suffix
                stem = outbox.pick_names(Path(final).parent, name[: -len(suffix)], [suffix], "rename")
                outbox.publish(Path(staging), Path(final).parent / f"{stem}{suffix}", replace=False)

    def complete(self, job: Job) -> None:
        """The input's completion action; runs only after the journal says ``published``."""
        if job.rule is not None and job.rule.on_success == "delete":
            os.unlink(job.claim_path)
            where = None
        else:
            where = str(outbox.move_input(job.claim_path, job.inbox.done_dir, job.name))
        self.journal.update(job.job_id, state="done")
        self.done += 1
        job.log.debug("input.completed", moved_to=where)

    def fail(self, job: Job, error: dict[str, Any]) -> None:
        """Log into the outbox, input into failed/ with a report; never raises for one job."""
        self._cleanup_staging(job)
        reason = error.get("message") or error.get("type") or "failed"
        summary = self._summary(job, "job.failed", error_type=error.get("type"), error=reason,
                                where=error.get("where"), error_class=error.get("class"))
        data = self._log_bytes(job, summary, "warning")
        box = job.rule.outbox if job.rule else job.inbox.failed_dir
        log_path = None
        try:
            log_path = outbox.write_new(box, outbox.output_stem(job.name), LOG_SUFFIX, data,
                                        self.config.file_mode, job.job_id)
        except OSError as e:
            job.log.error("log.publish_failed", error=str(e))
        moved = job.claim_path
        try:
            moved = outbox.move_input(job.claim_path, job.inbox.failed_dir, job.name)
        except FileNotFoundError:
            moved = job.inbox.failed_dir / job.name
        report = {"job_id": job.job_id, "input": job.name, "inbox": job.inbox.name,
                  "rule": job.rule.name if job.rule else None, "action": job.action,
                  "attempts": job.attempts, "error": error, "sha256": job.sha256,
                  "size": job.size, "host_id": self.config.host_id,
                  "smaskd_version": __version__, "log": str(log_path) if log_path else None,
                  "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        target = moved.parent / f"{moved.name}.error.json"
        staging = outbox.staging_path(moved.parent, job.job_id, ".error.json")
        outbox.write_staging(staging, outbox.report_bytes(report), self.config.file_mode)
        outbox.publish(staging, target, replace=True)
        self.journal.update(job.job_id, state="failed", error=f"{error.get('type')}: {reason}")
        self.failed += 1
        self.log.warning("job.failed", **{k: v for k, v in summary.items() if k != "event"})

    # ------------------------------------------------------------ recovery

    def recover(self, inbox: Inbox) -> int:
        """Re-adopt this host's claims after a crash or a drain; never publish twice."""
        adopted = 0
        rules = {r.name: r for r in self.config.rules}
        present = set()
        for claim in claims_mod.own_claims(inbox, self.config.host_id):
            present.add(claim.job_id)
            row = self.journal.get(claim.job_id)
            try:
                size = os.lstat(claim.path).st_size
            except FileNotFoundError:
                continue
            if row is None:
                self.journal.add(claim.job_id, self.config.host_id, inbox.name, claim.name,
                                 claim.path, size)
            job = self._job(inbox, claim, size)
            job.log.info("job.recovered", state=row.state if row else "unjournaled")
            adopted += 1
            if row is not None:
                job.attempts, job.sha256, job.action = row.attempts, row.sha256, row.action
                job.rule = rules.get(row.rule or "")
                if job.rule:
                    job.log = job.log.bind(rule=job.rule.name)
            if row is not None and row.state in ("publishing", "published", "done"):
                if row.state == "publishing" and row.outputs:
                    self._publish_plan(row.outputs, job.rule or Rule("?", Path("/")))
                    self.journal.update(job.job_id, state="published")
                JOB_LOGS.close(job.job_id)
                self.complete(job)
                self.log.info("job.done", job_id=job.job_id, input=job.name, recovered=True,
                              outputs=[Path(f).name for _, f in (row.outputs or [])])
            elif row is not None and row.state == "failed":
                self.fail(job, {"type": "Recovered", "message": row.error or "failed", "where": None})
            else:
                self._cleanup_staging(job)
                self._prepare(job)
        for row in self.journal.rows("host_id = ? AND inbox = ? AND state IN "
                                     "('claimed', 'running', 'publishing', 'published')",
                                     (self.config.host_id, inbox.name)):
            if row.job_id in present or os.path.lexists(row.claim_path):
                continue
            if row.state in ("publishing", "published"):
                self.journal.update(row.job_id, state="done")
            else:
                self.journal.update(row.job_id, state="failed",
                                    error="claim vanished while the daemon was down")
        return adopted
