"""Which queued job a free worker takes: per-rule ``max_jobs`` and ``priority``.

Why a policy of its own: by default the queue is first in, first out (claim order is drop
order), and that stays the fast path. Two rule settings change it:

* ``max_jobs``: at most that many jobs of the rule run at once. Its other jobs wait in the
  queue *without blocking anyone*: the next job of another rule is started instead, so a
  rule of slow, huge inputs cannot take every worker from a rule of small urgent ones.
* ``priority`` (default 0, higher first): when a worker is free, the queued job of the
  highest priority whose rule is under its ``max_jobs`` starts; within one priority, the
  oldest claim first. A running job is never stopped for a more urgent one.

The rule's settings are read from the current config by rule name, so a SIGHUP reload
applies to jobs already queued. Jobs that have no rule yet (never queued today) count as
priority 0 with no limit. Only claimed jobs are scheduled: the intake claims the oldest
files first, up to ``queue_limit``.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Protocol, TypeVar

from smaskd.config import Config, Rule

__all__ = ["next_job"]


class _Scheduled(Protocol):
    @property
    def rule(self) -> Rule | None: ...


J = TypeVar("J", bound=_Scheduled)


def _plain(config: Config) -> bool:
    return all(r.max_jobs is None and r.priority == 0 for r in config.rules)


def next_job(queue: deque[J], running: list[J], config: Config) -> J | None:
    """Take the job to start next out of ``queue`` (None: none may start now)."""
    if not queue:
        return None
    if _plain(config):
        return queue.popleft()
    rules = {r.name: r for r in config.rules}

    def current(job: J) -> Rule | None:
        return rules.get(job.rule.name, job.rule) if job.rule is not None else None

    busy = Counter(job.rule.name for job in running if job.rule is not None)
    best: int | None = None
    best_priority = 0
    for i, job in enumerate(queue):  # oldest first: a later job wins only with a higher priority
        rule = current(job)
        if rule is not None and rule.max_jobs is not None and busy[rule.name] >= rule.max_jobs:
            continue
        priority = rule.priority if rule is not None else 0
        if best is None or priority > best_priority:
            best, best_priority = i, priority
    if best is None:
        return None
    job = queue[best]
    del queue[best]
    return job
