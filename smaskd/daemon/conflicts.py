"""``on_conflict`` when the result's name is taken: which drop wins, which input may go.

Why the journal decides and not the outbox: the outbox shows only *that* a name exists.
``replace`` must publish in drop order (the newest drop wins, whatever finishes first), and
``skip`` with ``on_success: delete`` may delete an input only when the result it was
skipped for came from the same bytes; both are facts about earlier jobs, which the journal
keeps (claim time, SHA-256 of the input, published names). Claim order is drop order: the
intake claims the oldest file first, each one ``settle`` after it last changed.

=============  ==========================================================================
on_conflict    when ``<stem><suffix>`` exists
=============  ==========================================================================
rename         publish as ``<stem>-N<suffix>`` (keep both)
replace        publish over it, unless a job claimed *after* this one already published
               that name: then this older result is ``superseded`` and not published
skip           not published; with ``on_success: delete`` the input is kept (moved to
               done/) unless a finished job of the same content published that name
=============  ==========================================================================

A skipped or superseded job still publishes its log beside, under a keep-both name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from smaskd.config import Rule
from smaskd.daemon import outbox
from smaskd.daemon.journal import Journal

__all__ = ["PublishingJob", "decide"]


class PublishingJob(Protocol):
    """What the decision reads of a job (:class:`smaskd.daemon.jobs.Job` is one).

    Why a protocol and not an import: ``jobs`` calls this module, so importing ``jobs`` back,
    even for type hints, would make the two a cycle; this names only what is read.
    """

    job_id: str
    rule: Rule | None
    sha256: str | None
    log: Any


def decide(journal: Journal, job: PublishingJob, box: Path, stem: str, suffix: str,
           log_suffix: str, on_conflict: str) -> tuple[str | None, str | None, bool]:
    """(stem to publish under or None, why it is not published or None, keep the input);
    the stem is free for both the result and its log (``log_suffix``). ``on_conflict`` is
    the rule's, unless the caller overrode it (a folder at the output name: keep both)."""
    rule = job.rule
    assert rule is not None
    chosen = outbox.pick_names(box, stem, [suffix, log_suffix], on_conflict)
    if chosen is None:  # on_conflict: skip
        same = job.sha256 and journal.published_from(job.sha256, rule.name,
                                                     str(box / f"{stem}{suffix}"))
        return None, "exists", rule.on_success == "delete" and not same
    if on_conflict == "replace":
        newer = journal.newer_publisher(job.job_id, rule.name, str(box / f"{chosen}{suffix}"))
        if newer is not None:  # a later drop of this name is out already: it wins
            job.log.info("output.superseded", name=f"{chosen}{suffix}", by_job=newer)
            return chosen, "superseded", False
    return chosen, None, False
