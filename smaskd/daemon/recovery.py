"""Recovery: finish what a killed daemon (this host, or a host whose lease expired) left.

Why a module of its own: it is the one place that reads a job's *recorded* state instead of
living it, and every branch answers "what was done before the crash, what is left?":

==============  ===================================================================
journal state   what recovery does with the claim
==============  ===================================================================
(no row)        journal it; finish a plan marker if one exists, else run it afresh
claimed,        run it again (staging files of the killed run are removed first;
running         the attempt count carries on, so a crash loop still ends in failed/)
publishing      rename the staged files that are still staged, then complete
published       complete: move (or delete) the input
failing         publish the staged log, move the input to failed/, write the report
lost            the claim came back (it should not): run it again
==============  ===================================================================

A row whose claim is gone: ``published`` → ``done`` (the input was moved before the crash),
``failing`` with ``moved_to`` → the report is written, anything else → ``lost``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

from smaskd.config import Config, Inbox, Rule
from smaskd.daemon import claims, outbox, trees
from smaskd.daemon.journal import TERMINAL, Journal, Row
from smaskd.log import JOB_LOGS

__all__ = ["JobQueue", "RecoveredJob", "recover", "resume", "sweep_staging", "take_over"]

FOREIGN_STAGING_AGE = 3600.0  # another host's staging file is left alone for this long


class RecoveredJob(Protocol):
    """What recovery reads and sets on a job (:class:`smaskd.daemon.jobs.Job` is one)."""

    job_id: str
    name: str
    rule: Rule | None
    action: str | None
    attempts: int
    sha256: str | None
    log: Any
    stale: bool
    taken_from: tuple[str, str] | None


class JobQueue(Protocol):
    """The public job API recovery drives (:class:`smaskd.daemon.jobs.Jobs` implements it).

    Why a protocol and not an import: ``jobs`` calls recovery (start-up, take-over, resuming a
    parked job), so recovery importing ``jobs`` back would make the two one tangle; it names
    only the calls it makes, none of the queue's private steps.
    """

    config: Config
    journal: Journal
    log: Any
    spool: Path  # staging folder of results waiting for their outbox (swept too)

    def new_job(self, inbox: Inbox, claim: claims.Claim, size: int) -> Any: ...

    def prepare(self, job: Any) -> None: ...

    def publish_plan(self, plan: list[list[str]], replace: bool, name: str = "") -> list[str]: ...

    def complete(self, job: Any) -> Any: ...

    def fail(self, job: Any, error: dict[str, Any]) -> None: ...

    def finish_failure(self, job: Any, plan: list[list[str]], error: dict[str, Any],
                       summary: dict[str, Any] | None = None) -> None: ...

    def settle_error(self, job: Any, error: Exception, step: str, out: Any = None) -> None: ...


def recover(jobs: JobQueue, inbox: Inbox) -> int:
    """Re-adopt this host's claims in ``inbox`` after a crash or a drain."""
    me = jobs.config.host_id
    adopted = 0
    present = set()
    for found in claims.own_claims(inbox, me):
        present.add(found.job_id)
        if adopt(jobs, inbox, found):
            adopted += 1
    folder = claims.area(inbox).host(me)
    for row in jobs.journal.rows("host_id = ? AND inbox = ? AND state NOT IN (?, ?, ?)",
                                 (me, inbox.name, *TERMINAL)):
        if row.job_id not in present and not folder.exists(Path(row.claim_path).name):
            _without_claim(jobs, inbox, row)
    for job_id, name in claims.markers(inbox, me):
        row = jobs.journal.get(job_id)
        if name.endswith(".tmp") or (job_id not in present
                                     and (row is None or row.state in TERMINAL)):
            folder.unlink(name)
    return adopted


def adopt(jobs: JobQueue, inbox: Inbox, found: claims.Claim, taken_from: dict[str, str] | None = None,
          plan: tuple[str, dict[str, Any]] | None = None) -> bool:
    """Resume one claim now in our processing folder from whatever record it has.

    ``plan``: (host, marker) of the publish/fail plan its previous owner decided on before
    we took the claim over; a claim we took over without one is converted afresh.
    """
    try:
        size = claims.area(inbox).host(jobs.config.host_id).lstat(found.path.name).st_size
    except FileNotFoundError:
        return False
    row = jobs.journal.get(found.job_id)
    if row is None:
        jobs.journal.add(found.job_id, jobs.config.host_id, inbox.name, found.name, found.path,
                         size)
        if plan is None and taken_from is None:
            plan = claims.find_marker(inbox, found.job_id)
        if plan is not None:
            _apply_marker(jobs, inbox, found, *plan)
        row = jobs.journal.get(found.job_id)
        assert row is not None
    job = jobs.new_job(inbox, found, size)
    job.stale = True
    if taken_from:
        job.taken_from = (taken_from["host"], taken_from["job_id"])
    job.attempts, job.sha256, job.action = row.attempts, row.sha256, row.action
    job.rule = {r.name: r for r in jobs.config.rules}.get(row.rule or "")
    if job.rule is not None:
        job.log = job.log.bind(rule=job.rule.name)
    extra = {"taken_from": taken_from} if taken_from else {}
    job.log.info("job.recovered", state=row.state, **extra)
    try:
        resume(jobs, job, row)
    except Exception as e:  # noqa: BLE001 - done/ or failed/ unusable: wait, do not crash start-up
        jobs.settle_error(job, e, "resume")
    return True


def resume(jobs: JobQueue, job: RecoveredJob, row: Row) -> None:
    """Carry a job on from the step its journal row records, so no step runs twice."""
    if row.state in ("publishing", "published", "done"):
        if row.state == "publishing" and row.outputs:
            replace = job.rule is not None and job.rule.on_conflict == "replace"
            jobs.publish_plan(row.outputs, replace, job.name)
            jobs.journal.update(job.job_id, state="published")
        JOB_LOGS.close(job.job_id)
        if jobs.complete(job):
            jobs.log.info("job.done", job_id=job.job_id, input=job.name, recovered=True,
                          outputs=[Path(f).name for _, f in (row.outputs or [])])
    elif row.state == "failing":
        JOB_LOGS.close(job.job_id)
        jobs.finish_failure(job, row.outputs or [], _error(row))
    elif row.state == "failed":  # written by an older smaskd before its input moved
        jobs.fail(job, {"type": "Recovered", "message": row.error or "failed", "where": None})
    else:
        if row.state == "lost":
            jobs.journal.update(job.job_id, state="claimed")
        jobs.prepare(job)


def _error(row: Row) -> dict[str, Any]:
    if row.detail:
        return row.detail
    kind, _, message = (row.error or "Recovered: failed").partition(": ")
    return {"type": kind, "message": message or kind, "where": None}


def _without_claim(jobs: JobQueue, inbox: Inbox, row: Row) -> None:
    if row.state == "published":  # the input was moved (or deleted) before the crash
        jobs.journal.update(row.job_id, state="done")
    elif row.state == "failing" and row.moved_to:  # in failed/ already; the report is missing
        claim_path = Path(row.claim_path)
        found = claims.Claim.parse(claim_path.parent, claim_path.name) or \
            claims.Claim(row.job_id, row.name, claim_path)
        job = jobs.new_job(inbox, found, row.size or 0)
        job.attempts, job.sha256, job.action = row.attempts, row.sha256, row.action
        job.rule = {r.name: r for r in jobs.config.rules}.get(row.rule or "")
        JOB_LOGS.close(job.job_id)
        jobs.finish_failure(job, row.outputs or [], _error(row))
        return
    else:
        jobs.journal.update(row.job_id, state="lost",
                            error="claim vanished while the daemon was down "
                                  "(taken over by another host, or removed)")
    claims.remove_marker(inbox, jobs.config.host_id, row.job_id)


def _apply_marker(jobs: JobQueue, inbox: Inbox, found: claims.Claim, host: str,
                  data: dict[str, Any]) -> None:
    """Adopt a dead host's publish/fail plan for ``found`` (names resolved with our config)."""
    if data.get("state") not in ("publishing", "failing"):
        return
    rule = {r.name: r for r in jobs.config.rules}.get(data.get("rule") or "")
    folder = inbox.failed_dir if data.get("folder") == "failed" else rule.outbox if rule else None
    if folder is None:  # we do not know its rule: convert it again rather than guess
        jobs.log.warning("marker.unknown_rule", job_id=found.job_id, rule=data.get("rule"),
                         action="the file is converted again")
        return
    plan = [[str(folder / Path(a).name), str(trees.plan_target(folder, b))]
            for a, b in data.get("pairs") or []]
    fields: dict[str, Any] = {"state": data["state"], "outputs": plan, "rule": data.get("rule"),
                              "action": data.get("action"), "attempts": data.get("attempts") or 0,
                              "sha256": data.get("sha256")}
    if data.get("error"):
        fields["detail"] = data["error"]
        fields["error"] = f"{data['error'].get('type')}: {data['error'].get('message')}"
    elif data.get("keep_input"):  # a skipped input that on_success: delete must not delete
        fields["detail"] = {"keep_input": True}
    jobs.journal.update(found.job_id, **fields)
    me = jobs.config.host_id
    claims.decide(inbox, me, found.job_id, {**data, "job_id": found.job_id, "host_id": me})
    old_id = data.get("job_id")
    if isinstance(old_id, str) and (host, old_id) != (me, found.job_id):
        claims.remove_marker(inbox, host, old_id)  # the plan is ours now


def take_over(jobs: JobQueue, inbox: Inbox, host: str) -> int:
    """Move every claim of ``host`` into our folder (rename: one taker wins each) and adopt it."""
    me = jobs.config.host_id
    taken = 0
    for found in claims.own_claims(inbox, host):
        new_id = claims.new_job_id()
        # Decide before the rename (claims.py): our tombstone, or the plan its owner made
        tomb = {"state": claims.TAKEN, "host_id": me, "job_id": new_id, "from": found.job_id}
        decided = claims.decide(inbox, host, found.job_id, tomb)
        if decided is not None and decided.get("state") not in ("publishing", "failing"):
            continue  # another taker's tombstone: that claim is theirs
        mine = claims.take_over(found, inbox, me, new_id, from_host=host)
        if mine is None:
            if decided is None:
                claims.remove_marker(inbox, host, found.job_id)
            continue
        taken += 1
        adopt(jobs, inbox, mine, taken_from={"host": host, "job_id": found.job_id},
              plan=(host, decided) if decided is not None else None)
    left = {c.job_id for c in claims.own_claims(inbox, host)}
    for job_id, name in claims.markers(inbox, host):
        # its input reached done/ before the host died: nothing in that plan is left to do
        data = None if name.endswith(".tmp") else claims.read_marker(inbox, host, job_id)
        if job_id not in left and (data is None or data.get("state") == "publishing"):
            claims.area(inbox).folder(host).unlink(name)
    return taken


def sweep_staging(jobs: JobQueue) -> int:
    """Remove ``.smaskd-<job>…`` files of jobs that are over (ours) or long abandoned."""
    folders = {r.outbox for r in jobs.config.rules} | {jobs.spool}
    for inbox in jobs.config.inboxes:
        folders |= {inbox.failed_dir, inbox.done_dir}
    removed = 0
    now = time.time()
    for entry, job_id in outbox.staging_files(folders):
        row = jobs.journal.get(job_id)
        if row is not None and row.host_id == jobs.config.host_id:
            over = row.state in TERMINAL
        else:  # another host's, or lost: only when no claim of it exists and it is old
            try:
                old = now - entry.stat(follow_symlinks=False).st_mtime > FOREIGN_STAGING_AGE
            except OSError:
                continue
            over = old and not _claimed_anywhere(jobs, job_id)
        if over:
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    if removed:
        jobs.log.info("staging.swept", removed=removed)
    return removed


def _claimed_anywhere(jobs: JobQueue, job_id: str) -> bool:
    for inbox in jobs.config.inboxes:
        try:
            hosts = claims.foreign_hosts(inbox, "")
        except OSError:
            continue
        for host in hosts:
            try:
                if any(n.startswith(job_id) for n in claims.area(inbox).folder(host).listdir()):
                    return True
            except OSError:
                continue
    return False
