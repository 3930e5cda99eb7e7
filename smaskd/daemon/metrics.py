"""Prometheus metrics at ``/metrics`` and a liveness probe at ``/healthz`` (``metrics.listen``).

Why this shape:

* **Events are counted where they happen, levels are read when scraped.** A finished job
  (``Jobs.on_end``) and a full inbox listing (``Service._scan``) are events: a counter or a
  histogram observes them, a lock-free-enough ``inc``/``observe`` of ``prometheus_client``.
  Queue depth, jobs waiting, the oldest unfinished job and the active faults are levels the
  main loop keeps anyway: :class:`_DaemonCollector` reads them at scrape time, so the hot
  path pays nothing for them. The loop owns those containers and takes no lock; a scrape
  copies each one (a single C-level call under the GIL) and reads the copy again if the
  loop changed one mid-read (``RuntimeError``), so a scrape never stalls the loop.
* **A private registry**: ``prometheus_client``'s process-global one collects the Python
  process and platform metrics of whatever imports it; ours serves exactly what is
  documented in the README, and tests in one process never see each other's counters.
* **Served from threads** (``wsgiref``'s server, a thread per request): the main loop never
  waits on a client, however slow. ``/healthz`` answers 200 while the main loop has ticked
  within :data:`STALE_AFTER` seconds with its folder observers alive, 503 otherwise: a
  probe for load balancers and container runtimes, which cannot read ``sd_notify``.
* **A listener that cannot bind is a problem, not an exit**: conversions go on, the reason
  is logged and listed by ``smaskd status`` (``--problems-exit``), and the bind is tried
  again every :data:`RETRY_EVERY` seconds (the port may be freed). A SIGHUP that changes
  ``metrics.listen`` binds the new address first and closes the old one only then; if the
  new one fails, the old one keeps serving until it succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smaskd.listen import Listen

__all__ = ["FAULT_KINDS", "OUTCOMES", "Metrics"]

#: How a job can end in this daemon: published (``done``: converted, skipped by
#: ``on_conflict: skip`` or a duplicate), ``failed`` (input in failed/ or, when failed/
#: refuses it, left in the inbox), or ``lost`` (the claim left this host: taken over by
#: another host after a stall, or removed while it waited).
OUTCOMES = ("done", "failed", "lost")
#: ``smaskd_faults{kind}``: the waiting room's faults (backoff.py probes) and the inbox
#: and outbox problems the main loop keeps; every kind is exported, 0 when absent, so an
#: alert on ``smaskd_faults > 0`` needs no ``absent()``.
_PROBE_KINDS = {"dir": "missing_folder", "write": "unwritable_folder", "space": "no_space",
                "nolink": "symlinked_folder", "read": "input_read_error", "journal": "journal",
                "folder": "claim_area", "after": "worker_retry"}
FAULT_KINDS = (*_PROBE_KINDS.values(), "inbox_missing", "inbox_permission", "inbox_overlap",
               "outbox_overlap", "folder_skipped")
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
SCAN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STALE_AFTER = 30.0  # /healthz: the loop ticks at least once a second when healthy
RETRY_EVERY = 10.0  # a listener that could not bind
_NO_RULE = "(none)"  # the rule label of a job no rule matched


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a hung client never holds up the daemon's exit


class _Quiet(WSGIRequestHandler):
    timeout = 10  # a client that stalls mid-request frees its thread instead of holding it
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """No access log on stderr: a scrape every 15 s is not news."""


def _copied(read: Callable[[], Any], tries: int = 5) -> Any:
    """``read()`` again while the main loop changed a container under it (see the docstring)."""
    for _ in range(tries - 1):
        with contextlib.suppress(RuntimeError):
            return read()
    return read()


class _DaemonCollector(Collector):
    """Levels read from the daemon's own state at scrape time (no hot-path cost)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon  # the Service: .jobs, .inboxes, .swapped

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return _copied(lambda: list(self._families(self.daemon)))

    @staticmethod
    def _families(daemon: Any = None) -> Iterator[Metric]:
        queue = GaugeMetricFamily("smaskd_queue_depth",
                                  "Claimed jobs ready to run, waiting for a free worker")
        running = GaugeMetricFamily("smaskd_jobs_running", "Jobs in a worker process now")
        waiting = GaugeMetricFamily(
            "smaskd_jobs_waiting", "Claimed jobs held back: by a fault (smaskd_faults), a "
            "retry pause, or an input still being written")
        oldest = GaugeMetricFamily(
            "smaskd_oldest_pending_age_seconds",
            "Seconds since the oldest claimed, unfinished job was claimed (0: none)")
        pending = GaugeMetricFamily(
            "smaskd_inbox_pending_files",
            "Files in an inbox not claimed yet: settling, or over queue_limit", labels=["inbox"])
        faults = GaugeMetricFamily("smaskd_faults", "Active faults and folder problems, by kind",
                                   labels=["kind"])
        if daemon is not None and daemon.jobs is not None:
            jobs = daemon.jobs
            queued = list(jobs.queue)
            active = list(jobs.running.values())
            blockers = list(jobs.waiting.blockers.values())
            held = [h.job for h in list(jobs.unfinished.held.values())]
            parked = [w.job for b in blockers for w in list(b.waiters)]
            now = time.monotonic()
            claimed = [j.claimed_at for j in (*queued, *active, *parked, *held)]
            queue.add_metric([], len(queued))
            running.add_metric([], len(active))
            waiting.add_metric([], len(parked) + len(held))
            oldest.add_metric([], max(0.0, now - min(claimed)) if claimed else 0.0)
            states = list(daemon.inboxes.values())
            for state in states:
                pending.add_metric([state.inbox.name], state.pending + state.intake.backlog)
            counts = dict.fromkeys(FAULT_KINDS, 0)
            for blocker in blockers:
                kind = _PROBE_KINDS.get(blocker.fault.probe)
                if kind is not None:  # "overlap": counted once per rule below
                    counts[kind] += 1
            swapped = set(daemon.swapped)
            for state in states:
                name = state.inbox.name
                counts["inbox_missing"] += bool(state.missing and not state.denied
                                                and name not in swapped)
                counts["inbox_permission"] += bool(state.denied)
                counts["inbox_overlap"] += bool(state.refused and not state.missing)
                counts["folder_skipped"] += len(state.intake.skipped)
            counts["claim_area"] += len(swapped)
            counts["outbox_overlap"] += len(jobs.refused_rules)
            for kind, count in counts.items():
                faults.add_metric([kind], count)
        yield from (queue, running, waiting, oldest, pending, faults)


class Metrics:
    """The registry, the event hooks and the HTTP listener of one daemon."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.registry = CollectorRegistry()
        self.jobs_total = Counter("smaskd_jobs", "Jobs that ended, by rule and outcome",
                                  ["rule", "outcome"], registry=self.registry)
        self.job_duration = Histogram(
            "smaskd_job_duration_seconds", "Seconds from claim to done or failed, by rule",
            ["rule"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.scan_seconds = Histogram(
            "smaskd_inbox_scan_seconds", "Seconds one full listing of an inbox took",
            ["inbox"], buckets=SCAN_BUCKETS, registry=self.registry)
        self.app = make_wsgi_app(self.registry)
        self.server: WSGIServer | None = None
        self.serving: Listen | None = None  # the address self.server is bound to
        self.wanted: Listen | None = None  # the configured one
        self.error: str | None = None  # why ``wanted`` is not served
        self.next_try = 0.0
        self.last_tick = time.monotonic()
        self.healthy = True

    # ------------------------------------------------------------ hooks

    def start(self, daemon: Any, listen: Listen | None) -> None:
        """Read ``daemon``'s state at scrape time, count its jobs' ends, and listen."""
        self.registry.register(_DaemonCollector(daemon))
        daemon.jobs.on_end.append(self.job_ended)
        self.configure(listen)

    def job_ended(self, job: Any, outcome: str) -> None:
        """``Jobs.on_end``: one job left this daemon (``outcome`` in :data:`OUTCOMES`)."""
        rule = job.rule.name if job.rule is not None else _NO_RULE
        self.jobs_total.labels(rule, outcome).inc()
        if outcome != "lost":  # a lost job's time says nothing about converting
            self.job_duration.labels(rule).observe(max(0.0, time.monotonic() - job.claimed_at))

    def scanned(self, inbox: str, seconds: float) -> None:
        self.scan_seconds.labels(inbox).observe(seconds)

    def tick(self, healthy: bool) -> None:
        """Once per main-loop pass: the heartbeat ``/healthz`` reads, and bind retries."""
        self.last_tick, self.healthy = time.monotonic(), healthy
        if self.wanted != self.serving and self.last_tick >= self.next_try:
            self._bind()

    def problems(self) -> list[str]:
        """For STATUS= and ``smaskd status`` while the configured address is not served."""
        if self.error is None:
            return []
        still = f"; still serving on {self.serving}" if self.serving else ""
        return [f"metrics.listen {self.wanted}: {self.error}{still}; retrying every "
                f"{RETRY_EVERY:g} s"]

    # ------------------------------------------------------------ the listener

    def configure(self, listen: Listen | None) -> None:
        """Serve on ``listen`` (None: stop serving); at start-up and on every reload."""
        self.wanted, self.error = listen, None
        if listen == self.serving:
            return
        if listen is None:
            self._close()
            self.log.info("metrics.off")
            return
        self._bind()

    def _bind(self) -> None:
        assert self.wanted is not None
        try:
            server = self._serve(self.wanted)
        except OSError as e:
            if e.errno == errno.EADDRINUSE and self.serving is not None and \
                    self.serving.port == self.wanted.port:
                self._close()  # our old listener holds the port (a host change): let it go
                self._bind()
                return
            self.next_try = time.monotonic() + RETRY_EVERY
            reason = _explain(e)
            if reason != self.error:
                self.log.error("metrics.listen_failed", listen=str(self.wanted), reason=reason,
                               action=f"conversions go on; retrying every {RETRY_EVERY:g} s")
            self.error = reason
            return
        self._close()
        self.server, self.serving, self.error = server, self.wanted, None
        self.log.info("metrics.listening", listen=str(self.wanted),
                      port=server.server_address[1], paths=["/metrics", "/healthz"])

    def _serve(self, listen: Listen) -> WSGIServer:
        infos = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        server_class = type("_Bound", (_Server,), {"address_family": family})
        server = make_server(sockaddr[0], listen.port, self._route, server_class,
                             handler_class=_Quiet)
        threading.Thread(target=server.serve_forever, name=f"metrics {listen}",
                         daemon=True).start()
        return server

    def _route(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self.app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            age = time.monotonic() - self.last_tick
            if age <= STALE_AFTER and self.healthy:
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            why = (f"main loop silent for {age:.0f} s" if age > STALE_AFTER
                   else "folder observers not running")
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [f"unhealthy: {why}\n".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    def _close(self) -> None:
        server, self.server, self.serving = self.server, None, None
        if server is not None:
            server.shutdown()  # returns once serve_forever has stopped
            server.server_close()

    def close(self) -> None:
        self._close()


def _explain(error: OSError) -> str:
    """The bind error, and what to do about the ones with a known cause."""
    if isinstance(error, socket.gaierror):  # its errno is getaddrinfo's, not errno's
        return f"cannot resolve the host name: {error.strerror or error}"
    code = errno.errorcode.get(error.errno or 0, "")
    text = f"{error.strerror or error} ({code})" if code else str(error)
    if error.errno == errno.EAFNOSUPPORT:
        return (f"{text}: the systemd unit's RestrictAddressFamilies= forbids network "
                "sockets; install the drop-in systemd/smaskd-network.conf (README: Metrics)")
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{text}: no interface of this host has that address"
    return text
