"""The publish and fail paths: decide (marker + journal), publish the plan, move the input.

Why apart from ``jobs.py``: this is the half of a job's life that must survive a kill -9 at
any point (outputs first, then the journal, then the input), and ``recovery.py`` finishes it
after a crash through the same functions (``publish_plan``, ``complete``, ``finish_failure``,
by way of ``Jobs``). ``jobs.py`` keeps the queue, the workers and the waiting; it calls in
here with itself as ``jobs`` (:class:`PublishingQueue` names all this module uses of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol

from smaskd.config import Config, Inbox
from smaskd.convert import output_suffix
from smaskd.daemon import claims as claims_mod
from smaskd.daemon import conflicts, dirs, inputs, joblog, names, outbox, space, trees
from smaskd.daemon.backoff import Fault
from smaskd.daemon.faults import crash_point, stall_point
from smaskd.daemon.groupcommit import GroupCommit
from smaskd.daemon.joblog import LOG_SUFFIX
from smaskd.daemon.journal import Journal
from smaskd.daemon.workers import Outcome
from smaskd.log import JOB_LOGS

__all__ = ["PublishingQueue", "complete", "fail_job", "finish_failure", "publish", "publish_plan"]


class PublishingQueue(Protocol):
    """The job queue's part (:class:`smaskd.daemon.jobs.Jobs` implements it).

    Why a protocol and not an import: ``jobs`` calls this module, so importing ``jobs`` back,
    even for type hints, would make the two a cycle; this names only what is used, including
    what ``space.room_for`` and ``inputs.leave_unmovable`` are handed on with it.
    """

    config: Config
    journal: Journal
    group: GroupCommit
    log: Any
    done: int
    failed: int
    on_left: Callable[[Inbox, Path, str], None] | None
    on_failed: Callable[[dict[str, Any]], None] | None

    def claim_dir(self, job: Any) -> dirs.Folder: ...

    def refusal(self, job: Any) -> Fault | None: ...

    def park(self, job: Any, error: Any, step: str, out: Any = None,
             fault: Fault | None = None) -> bool: ...

    def lost(self, job: Any, why: str) -> None: ...

    def ended(self, job: Any, outcome: str) -> None: ...

    def reason(self, error: dict[str, Any]) -> str: ...

    def summary(self, job: Any, event: str, **fields: Any) -> dict[str, Any]: ...

    def result_path(self, job: Any) -> Path: ...

    def cleanup_staging(self, job: Any, worker_temps: bool = False) -> None: ...

    def fail(self, job: Any, error: dict[str, Any]) -> None: ...


def publish(jobs: PublishingQueue, job: Any, out: Outcome) -> None:
    assert job.rule is not None and job.action is not None
    refused = jobs.refusal(job)
    if refused is not None:  # the outbox now aliases an inbox: nothing is published there
        jobs.park(job, None, "publish", out, refused)
        return
    crash_point("after_temp_write", job.name)
    if not jobs.claim_dir(job).exists(job.claim_path.name):
        jobs.lost(job, "the claimed input is gone (taken over by another host after a stall?)")
        return
    stall_point("stall_publish", job.name)
    rule, result = job.rule, out.result or {}
    box = rule.outbox
    dest = trees.result_folder(rule, job.rel or job.name)  # box, or a sub-folder of it
    suffix = output_suffix(job.action)
    staging = outbox.staging_path(box, job.job_id, suffix)
    if job.spool and not space.room_for(jobs, job, out, staging):
        return
    if job.sha256:
        job.duplicate_of = jobs.journal.duplicate_of(job.job_id, job.sha256, rule.name)
        if job.duplicate_of:
            job.log.info("job.duplicate", duplicate_of=job.duplicate_of)
    stem = names.published_stem(job.name)
    if stem != outbox.output_stem(job.name):
        job.log.info("output.name_mapped", input=job.name, stem=stem,
                     reason="not a name Windows clients can open (README: Output names)")
    on_conflict = rule.on_conflict
    blocking = names.folder_in_the_way(dest, stem, [suffix, LOG_SUFFIX]) \
        if on_conflict == "replace" else None
    if blocking is not None:  # never replaced, never parked: keep both (README)
        job.log.warning("output.kept_both", path=str(blocking),
                        reason="a folder has the output's name; replace never removes it")
        on_conflict = "rename"
    chosen, skipped, keep_input = conflicts.decide(jobs.journal, job, dest, stem, suffix,
                                                   LOG_SUFFIX, on_conflict)
    plan: list[list[str]] = []
    if skipped is not None:
        if skipped == "exists":
            job.log.info("output.skipped", reason="exists", name=f"{stem}{suffix}",
                         input_kept=keep_input)
        log_stem = outbox.pick_names(dest, stem, [LOG_SUFFIX], "rename")
        outputs = []
    else:
        assert chosen is not None
        log_stem = chosen
        # The worker fsynced its bytes (atomic_writer); the mode change is metadata that
        # the outbox's fsync after the rename commits on a journaling filesystem, so no
        # fsync of its own (at worst a power loss leaves the worker's umask-derived mode).
        fd = dirs.place(box).open(staging.name, os.O_RDONLY)
        try:
            os.fchmod(fd, jobs.config.file_mode)
        finally:
            os.close(fd)
        plan.append([str(staging), str(dest / f"{chosen}{suffix}")])
        outputs = [f"{chosen}{suffix}"]
    log_final = dest / f"{log_stem}{LOG_SUFFIX}"
    summary = jobs.summary(
        job, "job.done", outputs=outputs, log=log_final.name, outbox=str(dest),
        items=result.get("items"), instances=result.get("instances"),
        labels=result.get("labels"), warnings=result.get("warnings", []),
        convert_ms=result.get("convert_ms"), worker_ms=round(out.duration * 1000, 1),
        skipped=skipped is not None, skip_reason=skipped, duplicate_of=job.duplicate_of,
        input_kept=keep_input or None)
    log_staging = outbox.staging_path(box, job.job_id, LOG_SUFFIX)
    outbox.write_staging(log_staging, joblog.log_bytes(job, summary, "info"), jobs.config.file_mode)
    plan.append([str(log_staging), str(log_final)])
    if not _record_plan(jobs, job, "publishing", plan, "outbox",
                             keep={"keep_input": True} if keep_input else None):
        return
    stall_point("stall_decided", job.name)
    unstage = staging if skipped is not None else None
    replace_ = on_conflict == "replace" and skipped is None
    jobs.group.then(job, "publish", out,  # once the plan is durable (journal.py)
                    lambda: _publish_recorded(jobs, job, plan, unstage, replace_, summary))


def _publish_recorded(jobs: PublishingQueue, job: Any, plan: list[list[str]],
                      unstage: Path | None, replace_: bool, summary: dict[str, Any]) -> None:
    """Publish a plan the journal holds durably; record it once the outbox is synced."""
    if unstage is not None:  # only now: until the journal says so, it may be published
        dirs.place(unstage.parent).unlink(unstage.name, missing_ok=False)
    crash_point("before_publish", job.name)
    publish_plan(jobs, plan, replace_, job.name, defer=True)
    crash_point("after_publish", job.name)
    jobs.group.then(job, "resume", None, lambda: _published(jobs, job, summary))


def _published(jobs: PublishingQueue, job: Any, summary: dict[str, Any]) -> None:
    jobs.journal.update(job.job_id, state="published")
    job.journaled = "published"
    crash_point("after_journal", job.name)
    complete(jobs, job, summary)


def _record_plan(jobs: PublishingQueue, job: Any, state: str, plan: list[list[str]],
                 folder: str, error: dict[str, Any] | None = None,
                 keep: dict[str, Any] | None = None) -> bool:
    """Decide to publish (or fail): create the job's decision marker beside the claim,
    holding the plan (for a host that may take the claim over if we die; names only, its
    mount point may differ), then journal it (for our own restart). False, with the job
    dropped, when a taker decided first (we stalled past our lease): see claims.py.
    ``keep`` (``{"keep_input": True}``: a skipped input not to delete) goes in ``detail``."""
    marker = {"state": state, "name": job.name, "rel": job.rel,
              "rule": job.rule.name if job.rule else None,
              "action": job.action, "attempts": job.attempts, "sha256": job.sha256,
              "folder": folder, "pairs": trees.plan_pairs(plan),
              "error": error, "host_id": jobs.config.host_id, "job_id": job.job_id,
              **(keep or {})}
    taken = claims_mod.decide(job.inbox, jobs.config.host_id, job.job_id, marker,
                              claim_name=job.claim_path.name)
    if taken is not None:
        claims_mod.remove_marker(job.inbox, jobs.config.host_id, job.job_id)
        by = (f"host {taken['host_id']!r} (as job {taken.get('job_id')!r})"
              if taken.get("host_id") else "another host")
        jobs.lost(job, f"taken over by {by} before this host decided to publish "
                       "(it stalled past its lease)")
        return False
    fields: dict[str, Any] = {"state": state, "outputs": plan, "sha256": job.sha256}
    if error is not None:
        fields.update(detail=error, error=f"{error.get('type')}: {jobs.reason(error)}")
    elif keep is not None:
        fields["detail"] = keep
    jobs.journal.update(job.job_id, **fields)
    job.journaled = state
    return True


def _release_markers(jobs: PublishingQueue, job: Any) -> None:
    """The job is over: its decision marker, and the tombstone of the claim it took over."""
    claims_mod.remove_marker(job.inbox, jobs.config.host_id, job.job_id)
    if job.taken_from is not None:
        claims_mod.remove_marker(job.inbox, *job.taken_from)


def publish_plan(jobs: PublishingQueue, plan: list[list[str]], replace: bool, name: str = "",
                 defer: bool = False) -> list[str]:
    """Rename each staged file to its planned name; skip those done before a crash.

    First the journal barrier (the plan's ``publishing``/``failing`` row is durable before
    any of it is visible), last one fsync per folder, before the caller records the next
    state (``defer``: at the pass's next barrier, groupcommit.py): journal.py."""
    jobs.journal.sync()
    finals = []
    folders: dict[str, Path] = {}
    for i, (staging, final) in enumerate(plan):
        if i == 1:
            crash_point("mid_publish", name)
        if not dirs.place(Path(staging).parent).exists(Path(staging).name):
            finals.append(final)  # published before a crash
            continue
        try:
            outbox.publish(Path(staging), Path(final), replace=replace, sync=False)
        except (FileExistsError, IsADirectoryError):
            # a writer took the name since we chose it, or made a folder there (which
            # ``replace`` must not remove): keep both
            base = Path(final).name
            suffix = LOG_SUFFIX if base.endswith(LOG_SUFFIX) else Path(final).suffix
            folder = Path(final).parent
            stem = outbox.pick_names(folder, base[: -len(suffix)], [suffix], "rename")
            final = str(folder / f"{stem}{suffix}")
            outbox.publish(Path(staging), Path(final), replace=False, sync=False)
        for touched in (Path(final).parent, Path(staging).parent):  # keep_tree: two folders
            folders[str(touched)] = touched
        finals.append(final)
    for folder in folders.values():
        if defer:
            jobs.group.touched(folder)
        else:
            dirs.place(folder).sync()
    return finals


def complete(jobs: PublishingQueue, job: Any, summary: dict[str, Any] | None = None) -> bool:
    """The input's completion action; runs only after the journal says ``published``.
    False when a taker finished the job instead (see :func:`_handed_over`).

    ``on_success: delete`` keeps (moves to done/) an input whose result was skipped for
    an output made from other content (``keep_input`` in the journal's ``detail``).
    In a pass (groupcommit.py) the claim leaves at the pass's next barrier; ``summary``
    is logged as ``job.done`` then.
    """
    if _handed_over(jobs, job):
        return False
    row = jobs.journal.get(job.job_id)
    keep = bool(row is not None and row.detail and row.detail.get("keep_input"))
    if job.rule is not None and job.rule.on_success == "delete" and not keep:
        # ``published`` is durable before the input goes
        jobs.group.then(job, "resume", None, lambda: _completed(jobs, job, None, summary))
    else:
        _move_claim(jobs, job, job.inbox.done_dir,
                    lambda target: _completed(jobs, job, str(target), summary))
    return True


def _completed(jobs: PublishingQueue, job: Any, where: str | None,
               summary: dict[str, Any] | None) -> None:
    if where is None:
        jobs.claim_dir(job).unlink(job.claim_path.name)  # missing: deleted before a crash
    crash_point("after_input_move", job.name)
    jobs.journal.update(job.job_id, state="done")
    _release_markers(jobs, job)
    jobs.done += 1
    jobs.ended(job, "done")
    job.log.debug("input.completed", moved_to=where)
    if summary is not None:
        jobs.log.info("job.done", **{k: v for k, v in summary.items() if k != "event"})


def _handed_over(jobs: PublishingQueue, job: Any) -> bool:
    """Did a taker get the claim after we decided (we stalled past our lease)? Then it
    finishes our very plan (claims.py) and reports the job; we stop here, saying so.

    The claim is gone from our folder and the journal records no move of it by us. The
    staged files are left alone: they are the taker's to publish.
    """
    row = jobs.journal.get(job.job_id)
    if (row is not None and row.moved_to) or jobs.claim_dir(job).exists(job.claim_path.name):
        return False
    job.log.warning("claim.lost", reason="taken over by another host after this host "
                    "decided (it stalled past its lease); the taker finishes the same plan",
                    action="nothing more done here")
    JOB_LOGS.close(job.job_id)
    jobs.journal.update(job.job_id, state="lost", error="taken over after the decision")
    jobs.ended(job, "lost")
    return True


def _move_claim(jobs: PublishingQueue, job: Any, folder: Path,
                then: Callable[[Path], None] | None = None) -> Path | None:
    """Move the claimed input into ``folder`` (keep both on a name clash) exactly once.

    The target is journalled after ``link`` and before ``unlink``; a restart that finds
    the claim still linked there only unlinks it, instead of linking it again as ``-1``.
    The unlink waits until the link (folder fsync) and its record (journal barrier) are
    durable (journal.py): at once, returning the target, or with ``then`` at the pass's
    next barrier (groupcommit.py), calling ``then(target)`` after it.
    """
    row = jobs.journal.get(job.job_id)
    recorded = Path(row.moved_to) if row is not None and row.moved_to else None
    src, name = jobs.claim_dir(job), job.claim_path.name
    try:
        st = src.lstat(name)
    except FileNotFoundError:  # moved before a crash
        return _moved(jobs, job, None, recorded or folder / job.name, then)
    if recorded is None and st.st_nlink > 1:  # crashed between link and journal
        recorded = _linked_copy(st, folder, job.name)
    if recorded is not None and outbox.same_inode(st, recorded):
        dirs.place(folder).sync()  # the link (made before a crash) is durable
        if row is None or row.moved_to != str(recorded):
            jobs.journal.update(job.job_id, moved_to=str(recorded))
        return _moved(jobs, job, name, recorded, then)
    # through descriptors, re-validated: never into a symlinked or renamed-away folder
    try:
        target = outbox.link_input(src.fd(), name, folder, job.name, sync=False)
    except PermissionError as e:
        if e.filename2 is not None or e.filename is None or os.fsdecode(e.filename) != name:
            raise  # the folder refused it: a fault (backoff.py), not the input
        # not linked (protected_hardlinks) and not readable to copy: rename it
        target = inputs.rename_unreadable(src.fd(), name, folder, job.name, e)
        jobs.journal.update(job.job_id, moved_to=str(target))
        dirs.place(folder).sync()
        return _moved(jobs, job, None, target, then)
    if then is None:
        dirs.place(folder).sync()
    else:
        jobs.group.touched(folder)
    jobs.journal.update(job.job_id, moved_to=str(target))
    crash_point("mid_input_move", job.name)
    return _moved(jobs, job, name, target, then)


def _moved(jobs: PublishingQueue, job: Any, name: str | None, target: Path,
           then: Callable[[Path], None] | None) -> Path | None:
    """Unlink the claim ``name`` (None: it is gone already) once its move is durable."""
    def unlink() -> None:
        if name is not None:
            jobs.claim_dir(job).unlink(name)
        if then is not None:
            then(target)

    if then is not None:
        jobs.group.then(job, "resume", None, unlink)
        return None
    if name is not None:
        jobs.journal.sync()  # the record is durable before the claim goes
    unlink()
    return target


def _linked_copy(st: os.stat_result, folder: Path, name: str) -> Path | None:
    base, suffix = outbox.split_name(name)
    place = dirs.place(folder)
    for n in range(1000):
        candidate = f"{base}{suffix}" if n == 0 else f"{base}-{n}{suffix}"
        if not place.exists(candidate):
            return None
        if outbox.same_inode(st, folder / candidate):
            return folder / candidate
    return None


def fail_job(jobs: PublishingQueue, job: Any, error: dict[str, Any]) -> None:
    """Log into the outbox, input into failed/ with a report; never raises for one job."""
    row = jobs.journal.get(job.job_id)
    if not jobs.claim_dir(job).exists(job.claim_path.name) and not (row and row.moved_to):
        jobs.lost(job, "the claimed input is gone (taken over by another host after a stall?)")
        return
    jobs.cleanup_staging(job)
    if job.rule is None:  # the log goes to failed/: never through a symlink planted there
        outbox.real_folder(job.inbox.failed_dir)
    reason = jobs.reason(error)
    summary = jobs.summary(job, "job.failed", error_type=error.get("type"), error=reason,
                           where=error.get("where"), error_class=error.get("class"))
    data = joblog.log_bytes(job, summary, "warning")
    box, folder = (job.rule.outbox, "outbox") if job.rule else (job.inbox.failed_dir, "failed")
    dest = trees.result_folder(job.rule, job.rel or job.name) if job.rule else box
    plan: list[list[str]] = []
    try:
        dirs.place(dest).fd()
        stem = outbox.pick_names(dest, names.published_stem(job.name), [LOG_SUFFIX], "rename")
        staging = outbox.staging_path(box, job.job_id, LOG_SUFFIX)
        outbox.write_staging(staging, data, jobs.config.file_mode)
        plan.append([str(staging), str(dest / f"{stem}{LOG_SUFFIX}")])
    except OSError as e:
        job.log.error("log.publish_failed", error=str(e))
    if not _record_plan(jobs, job, "failing", plan, folder, error):
        return
    crash_point("failing", job.name)
    finish_failure(jobs, job, plan, error, summary)


def finish_failure(jobs: PublishingQueue, job: Any, plan: list[list[str]],
                   error: dict[str, Any], summary: dict[str, Any] | None = None) -> None:
    """Publish the staged log, move the input to failed/, write its report (idempotent)."""
    log_path = None
    try:
        finals = publish_plan(jobs, plan, False, job.name)
        log_path = finals[0] if finals else None
    except OSError as e:
        job.log.error("log.publish_failed", error=str(e))
    crash_point("after_fail_log", job.name)
    if _handed_over(jobs, job):
        return
    try:
        moved = _move_claim(jobs, job, job.inbox.failed_dir)
        assert moved is not None
    except inputs.Unmovable as e:  # neither linked, read to copy, nor renamed there
        inputs.leave_unmovable(jobs, job, error, e)
        return
    crash_point("after_fail_move", job.name)
    reason = jobs.reason(error)
    report = joblog.failure_report(job, error, jobs.config.host_id, log_path)
    target = moved.parent / names.free_report_name(moved.parent, moved.name, job.job_id)
    staging = outbox.staging_path(moved.parent, job.job_id, ".error.json")
    outbox.write_staging(staging, outbox.report_bytes(report), jobs.config.file_mode)
    outbox.publish(staging, target, replace=True)
    crash_point("after_fail_report", job.name)
    jobs.journal.update(job.job_id, state="failed", error=f"{error.get('type')}: {reason}")
    _release_markers(jobs, job)
    jobs.failed += 1
    jobs.ended(job, "failed")
    summary = summary or jobs.summary(job, "job.failed", error_type=error.get("type"),
                                      error=reason, where=error.get("where"),
                                      error_class=error.get("class"), recovered=True)
    jobs.log.warning("job.failed", **{k: v for k, v in summary.items() if k != "event"})
    if jobs.on_failed is not None:
        jobs.on_failed({**summary, "moved_to": str(moved), "log": log_path})
