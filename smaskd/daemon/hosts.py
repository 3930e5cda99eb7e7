"""Heartbeats and leases: when may this daemon take over another host's claims?

Why: several daemons (on one machine, or on several sharing a network drive) may watch one
inbox. A host that dies with files in ``processing/<host>/`` would strand them for ever, but a
host that is merely slow must never lose them while it works on them. So:

* every daemon rewrites ``<inbox>/.smaskd/hosts/<host-id>.heartbeat`` every
  ``heartbeat_interval`` from its main loop (a hung loop stops beating, a live one cannot
  forget to);
* another daemon takes that host's claims over only when (1) the host's ``flock`` on
  ``processing/.<host-id>.lock`` is free: on one machine a running daemon always holds it
  (so a stopped-but-alive process keeps its claims); on NFS a free lock proves nothing and a
  held one proves life; and (2) the heartbeat's *content* has not changed for ``lease``
  seconds as measured on this daemon's own monotonic clock. Clocks of hosts differ and NFS
  caches attributes, so the observation counts, not the timestamp in the file; a daemon that
  has just started therefore waits one full lease before it takes anything over.

The takeover itself is a rename per claim (``claims.take_over``), so when two hosts decide at
the same time each claim still goes to exactly one of them; it is preceded by the claim's
decision marker (``claims.decide``), so a host that only stalled (its lock invisible to us on
a share without working locks) and resumes inside ``publish`` finds the claim taken instead of
publishing a second copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smaskd.config import Config, Inbox
from smaskd.daemon import claims

__all__ = ["Leases", "heartbeat_path"]


def heartbeat_path(inbox: Inbox, host_id: str) -> Path:
    return inbox.path / ".smaskd" / "hosts" / f"{host_id}.heartbeat"


@dataclass(slots=True)
class _Watch:
    signature: bytes | None  # the heartbeat's bytes (None: no heartbeat file)
    since: float  # monotonic time we first saw this signature
    stalled_logged: bool = False


class Leases:
    """This host's heartbeats, and the watch on every other host that holds claims."""

    def __init__(self, host_id: str, log: Any) -> None:
        self.host_id, self.log = host_id, log
        self.seq = 0
        self.next_beat = 0.0
        self.watches: dict[tuple[Path, str], _Watch] = {}
        self.failing: dict[Path, str] = {}  # inbox → the error its last heartbeat met

    def beat(self, config: Config) -> None:
        """Rewrite our heartbeat in every inbox (temp + rename: readers see old or new)."""
        self.seq += 1
        data = json.dumps({"host_id": self.host_id, "pid": os.getpid(), "seq": self.seq,
                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n"
        for inbox in config.inboxes:
            if not inbox.path.is_dir():  # an unmounted share: never create anything there
                continue
            folder = claims.area(inbox).hosts  # a descriptor: a planted symlink is refused
            name = f"{self.host_id}.heartbeat"
            tmp = f".{name}.{secrets.token_hex(4)}.tmp"
            try:
                folder.write_new(tmp, data.encode(), 0o644, sync=False)
                try:
                    folder.replace(tmp, name)
                finally:
                    folder.unlink(tmp)
            except OSError as e:  # a share that is away: the next beat tries again
                if self.failing.get(inbox.path) != str(e):  # once per cause, not per beat
                    self.log.warning("heartbeat.failed", inbox=inbox.name,
                                     path=str(heartbeat_path(inbox, self.host_id)), error=str(e))
                self.failing[inbox.path] = str(e)
            else:
                self.failing.pop(inbox.path, None)

    def tick(self, config: Config, now: float, take_over: Callable[[Inbox, str], int]) -> None:
        """Beat when due; then take over the claims of every host whose lease has expired."""
        if now < self.next_beat:
            return
        self.next_beat = now + config.heartbeat_interval
        self.beat(config)
        for inbox in config.inboxes:
            try:
                for host in list(self._expired(inbox, config.lease, now)):
                    self._take_over(inbox, host, config.lease, now, take_over)
            except OSError as e:  # a swapped claim area (reported by the service) or a share away
                self.log.debug("leases.skipped", inbox=inbox.name, error=str(e))

    def _signature(self, inbox: Inbox, host: str) -> bytes | None:
        try:
            return claims.area(inbox).hosts.read_bytes(f"{host}.heartbeat")
        except OSError:
            return None

    def _expired(self, inbox: Inbox, lease: float, now: float) -> Iterator[str]:
        """Hosts with claims here whose heartbeat has not changed for ``lease`` seconds."""
        hosts = set()
        for host in claims.foreign_hosts(inbox, self.host_id):
            key = (inbox.path, host)
            if not claims.own_claims(inbox, host):
                self.watches.pop(key, None)
                continue
            hosts.add(key)
            sig = self._signature(inbox, host)
            watch = self.watches.get(key)
            if watch is None or watch.signature != sig:
                self.watches[key] = _Watch(sig, now)
                continue
            if now - watch.since >= lease:
                yield host
        for key in [k for k in self.watches if k[0] == inbox.path and k not in hosts]:
            del self.watches[key]

    def _take_over(self, inbox: Inbox, host: str, lease: float, now: float,
                   take_over: Callable[[Inbox, str], int]) -> None:
        watch = self.watches[(inbox.path, host)]
        fd = claims.try_lock(inbox, host)
        if fd is None:  # its daemon runs on this machine: stopped or slow, but alive
            if not watch.stalled_logged:
                self.log.warning("host.stalled", inbox=inbox.name, host=host,
                                 heartbeat_age_s=round(now - watch.since, 1),
                                 action="claims kept: its lock is held")
                watch.stalled_logged = True
            watch.since = now
            return
        try:
            if self._signature(inbox, host) != watch.signature:  # it beat just now
                self.watches[(inbox.path, host)] = _Watch(self._signature(inbox, host), now)
                return
            count = take_over(inbox, host)
        finally:
            with contextlib.suppress(OSError):
                claims.unlock(fd)
        self.watches.pop((inbox.path, host), None)
        self.log.warning("host.taken_over", inbox=inbox.name, host=host, claims=count,
                         lease_s=lease, heartbeat_age_s=round(now - watch.since, 1))
