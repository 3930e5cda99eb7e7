"""Watch-folder latency and throughput of the real daemon (``smaskd run -c cfg.yaml``).

Run by hand from the repository root:

    .venv/bin/python benchmarks/daemon_latency.py                 # 200 latency + 1000 throughput
    .venv/bin/python benchmarks/daemon_latency.py --latency 20 --throughput 100   # smoke

First it times the one-shot CLI (``python -m smaskd export f.json -o f.zip``, a new process
each run, ``--cli-runs`` times) on the same kind of file: what a user would run by hand.
Then, for each of ``--configs`` (default: ``default`` = no ``settle`` key, so 2 s on a local
inbox, and ``settle0`` = ``settle: 0s``), in a temporary folder it writes a config (one
inbox, ``workers: 2``, one export rule), starts the daemon as a subprocess
(``NOTIFY_SOCKET`` is set to a socket of ours, so READY=1 is seen when the daemon sends it;
otherwise a warm-up file tells when it works), then:

1. latency: drops files one at a time (written to a hidden ``.tmp`` name, then renamed into
   the inbox) and polls the outbox every 2 ms for ``<stem>.zip``: drop-to-outbox p50, p95, max;
2. throughput: drops N files as fast as it can, then waits for all N results: files/s from
   the first drop to the last result, and the latency distribution under that load.

Every input is a small Datumaro JSON (one 64×48 frame, 4 shapes) with distinct content, so
the daemon's duplicate detection does not short-cut any of them. Bounded: each phase has a
deadline; the daemon is stopped with SIGTERM (SIGKILL after 30 s). Prints a Markdown table
(each config's latency p50 beside the CLI's wall p50) and writes
``benchmarks/.work/daemon-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE))

import generate  # noqa: E402
from run import _descendants, _rss_kb, project_python  # noqa: E402

CONFIG = """\
workers: 2
state_dir: {state}
inboxes:
  - name: bench
    path: {inbox}{settle}
rules:
  - name: bench-export
    match: {{inbox: bench, glob: "*.json"}}
    action: export
    outbox: {outbox}
"""


def small_doc(n: int) -> bytes:
    """A distinct one-frame Datumaro JSON (seeded by n)."""
    item, _image, _anns = next(generate.generate(1, 64, 48, 4, seed=1000 + n))
    item["id"] = f"frame_{n:06d}"
    doc = {
        "dm_format_version": "1.0",
        "infos": {"bench": n},
        "categories": {
            "label": {"labels": [{"name": name, "parent": "", "attributes": []}
                                 for name, _ in generate.LABELS], "attributes": ["occluded"]},
            "mask": {"colormap": [{"label_id": i, "r": c[0], "g": c[1], "b": c[2]}
                                  for i, (_, c) in enumerate(generate.LABELS)]},
        },
        "items": [item],
    }
    return json.dumps(doc).encode()


WALL: dict[str, float] = {}  # input name -> time.time() of its rename into the inbox
STAGING: Path | None = None  # --temp-outside: temp files here (same filesystem), not in the inbox


def drop(inbox: Path, name: str, data: bytes) -> float:
    """Write to a hidden temp name, fsync, rename in; returns the time of the rename."""
    tmp = (STAGING or inbox) / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, inbox / name)
    WALL[name] = time.time()
    return time.perf_counter()


def _ts(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def breakdown(outbox: Path, prefix: str) -> dict:
    """Split each job's latency using the job logs: drop→claim, claim→worker start,
    worker (convert + publish), job.done→seen by us."""
    parts: dict[str, list[float]] = {"drop_to_claim": [], "claim_to_worker_start": [],
                                     "convert": [], "worker_total": [], "queue": []}
    for log in outbox.glob(prefix + "*.log.jsonl"):
        ev = {}
        for line in log.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            ev.setdefault(e.get("event"), e)
        name = log.name[: -len(".log.jsonl")] + ".json"
        if name not in WALL or "job.claimed" not in ev or "job.done" not in ev:
            continue
        parts["drop_to_claim"].append(_ts(ev["job.claimed"]["timestamp"]) - WALL[name])
        if "worker.start" in ev:
            parts["claim_to_worker_start"].append(
                _ts(ev["worker.start"]["timestamp"]) - _ts(ev["job.claimed"]["timestamp"]))
        done = ev["job.done"]
        for key, field in (("convert", "convert_ms"), ("worker_total", "worker_ms"), ("queue", "queue_ms")):
            if isinstance(done.get(field), (int, float)):
                parts[key].append(done[field] / 1000)
    return {k: {"p50_ms": pct([x * 1000 for x in v], 50), "p95_ms": pct([x * 1000 for x in v], 95)}
            for k, v in parts.items() if v}


class NotifyListener:
    """A NOTIFY_SOCKET of our own: records when READY=1 arrives."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.ready = threading.Event()
        self.messages: list[str] = []
        self._stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                msg = self.sock.recv(4096).decode(errors="replace")
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.messages.append(msg)
            if "READY=1" in msg.split("\n"):
                self.ready.set()

    def close(self) -> None:
        self._stop = True
        self.thread.join(1)
        self.sock.close()


class OutboxWatcher:
    """Polls the outbox; remembers when each name first appeared (perf_counter)."""

    def __init__(self, outbox: Path, interval: float = 0.002):
        self.outbox = outbox
        self.interval = interval
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            try:
                with os.scandir(self.outbox) as it:
                    for e in it:
                        if e.name not in self.seen:
                            self.seen[e.name] = now
            except FileNotFoundError:
                pass
            self._stop.wait(self.interval)

    def wait_for(self, name: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t = self.seen.get(name)
            if t is not None:
                return t
            time.sleep(0.001)
        return None

    def close(self) -> None:
        self._stop.set()
        self.thread.join(1)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(lat_s: list[float]) -> dict:
    ms = [x * 1000 for x in lat_s]
    return {"n": len(ms), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95), "max_ms": max(ms, default=float("nan")),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}

def stop_daemon(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the daemon's process group; SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_daemon(args: argparse.Namespace, label: str, settle: str | None,
               payloads: list[bytes]) -> tuple[dict, int, Path]:
    """One daemon run on a config with ``settle`` (None: the default): warm-up, latency,
    throughput. Returns (result, rc, temp folder)."""
    global STAGING
    tmp = Path(tempfile.mkdtemp(prefix="smaskd-bench-"))
    inbox, outbox, state = tmp / "inbox", tmp / "outbox", tmp / "state"
    for d in (inbox, outbox, state):
        d.mkdir()
    if args.temp_outside:
        STAGING = tmp / "staging"
        STAGING.mkdir()
    cfg = tmp / "cfg.yaml"
    cfg.write_text(CONFIG.format(inbox=inbox, outbox=outbox, state=state,
                                 settle="" if settle is None else f"\n    settle: {settle}"))
    WALL.clear()
    print(f"\n## config: {label}; folder {tmp}", flush=True)

    def _interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)  # also when started in the background
    notify = NotifyListener(tmp / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp / "notify.sock"))
    log_out, log_err = open(tmp / "daemon.stdout", "wb"), open(tmp / "daemon.stderr", "wb")
    cmd = [project_python(), "-m", "smaskd", "run", "-c", str(cfg)]
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log_out, stderr=log_err,
                            start_new_session=True)
    watcher = OutboxWatcher(outbox)
    peak_tree_kb = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak_tree_kb
        while not sampling.is_set():
            try:
                peak_tree_kb = max(peak_tree_kb, sum(_rss_kb(p) for p in _descendants(proc.pid)))
            except Exception:
                pass
            sampling.wait(0.1)

    threading.Thread(target=sample, daemon=True).start()
    result: dict = {"config": label, "date_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
                    "cpus": os.cpu_count(), "cmd": cmd}
    rc = 0
    try:
        ready = notify.ready.wait(30)
        result["ready_s"] = (time.perf_counter() - t_start) if ready else None
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} at start-up")
        print("READY=1 after %.2f s" % result["ready_s"] if ready else "no READY=1 in 30 s; "
              "using the warm-up files instead", flush=True)
        # warm-up: spawn workers, import cv2 etc. Not measured.
        n = 0
        warm = []
        for _ in range(4):
            drop(inbox, f"warm{n:06d}.json", payloads[n])
            warm.append(f"warm{n:06d}.zip")
            n += 1
        for w in warm:
            if watcher.wait_for(w, 60) is None:
                err = inbox / "failed" / (w[:-4] + ".json.error.json")
                why = json.loads(err.read_text()).get("error") if err.exists() else None
                raise RuntimeError(f"warm-up result {w} did not appear in 60 s"
                                   + (f"; the input failed: {why}" if why else ""))
        result["first_results_s"] = time.perf_counter() - t_start

        # 1. latency, one file at a time
        lat = []
        for _ in range(args.latency):
            name = f"lat{n:06d}"
            t = drop(inbox, name + ".json", payloads[n])
            n += 1
            seen = watcher.wait_for(name + ".zip", args.timeout)
            if seen is None:
                err = inbox / "failed" / f"{name}.json.error.json"
                why = json.loads(err.read_text()).get("error") if err.exists() else None
                raise RuntimeError(f"{name}.zip did not appear within {args.timeout} s"
                                   + (f"; the input failed: {why}" if why else ""))
            lat.append(seen - t)
        result["latency"] = summary(lat)
        print("latency (one at a time): " + json.dumps({k: round(v, 1) for k, v in result["latency"].items()}),
              flush=True)

        # 2. throughput, all at once
        drops: dict[str, float] = {}
        first = time.perf_counter()
        for _ in range(args.throughput):
            name = f"tp{n:06d}"
            drops[name] = drop(inbox, name + ".json", payloads[n])
            n += 1
        dropped = time.perf_counter()
        deadline = time.monotonic() + args.phase_timeout
        while time.monotonic() < deadline:
            pending = [k for k in drops if f"{k}.zip" not in watcher.seen]
            if not pending:
                break
            # an input that failed never gives a result: stop waiting for it
            if all((inbox / "failed" / f"{k}.json.error.json").exists() for k in pending[:50]) \
                    and all((inbox / "failed" / f"{k}.json.error.json").exists() for k in pending):
                break
            time.sleep(0.2)
        got = {k: watcher.seen[f"{k}.zip"] - t for k, t in drops.items() if f"{k}.zip" in watcher.seen}
        last = max((watcher.seen[f"{k}.zip"] for k in drops if f"{k}.zip" in watcher.seen), default=first)
        result["throughput"] = {"files": args.throughput, "done": len(got), "drop_s": dropped - first,
                                "elapsed_s": last - first,
                                "files_per_s": len(got) / (last - first) if got else 0.0,
                                **summary(list(got.values()))}
        print("throughput: " + json.dumps({k: round(v, 2) for k, v in result["throughput"].items()}),
              flush=True)
        result["latency_breakdown"] = breakdown(outbox, "lat")
        result["throughput_breakdown"] = breakdown(outbox, "tp")
        print("breakdown (one at a time): " + json.dumps(
            {k: {kk: round(vv) for kk, vv in v.items()} for k, v in result["latency_breakdown"].items()}),
            flush=True)
        failed = list((inbox / "failed").glob("*.error.json")) if (inbox / "failed").exists() else []
        result["failed_inputs"] = len(failed)
        if failed:
            rc = 1
            first_err = json.loads(failed[0].read_text()).get("error")
            print(f"WARNING: {len(failed)} inputs failed, e.g. {first_err}", flush=True)
    except (Exception, KeyboardInterrupt) as e:
        rc = 1
        result["error"] = f"{type(e).__name__}: {e}"
        print("ERROR:", result["error"], flush=True)
    finally:
        sampling.set()
        t_stop = time.perf_counter()
        stop_daemon(proc, 30)
        result["stop_s"] = time.perf_counter() - t_stop
        result["daemon_rc"] = proc.returncode
        result["daemon_tree_rss_mb"] = peak_tree_kb / 1024
        watcher.close()
        notify.close()
        log_out.close()
        log_err.close()
        err = (tmp / "daemon.stderr").read_text(errors="replace").strip().splitlines()
        result["daemon_stderr_tail"] = err[-5:]
        if rc and err:
            print("daemon stderr (tail):\n  " + "\n  ".join(err[-10:]), flush=True)
    return result, rc, tmp


def cli_wall(payload: bytes, runs: int) -> dict:
    """Wall time of the one-shot CLI on the same kind of file: ``python -m smaskd export
    f.json -o f.zip`` as a new process each time (what a user runs by hand)."""
    tmp = Path(tempfile.mkdtemp(prefix="smaskd-cli-"))
    try:
        src = tmp / "cli.json"
        src.write_bytes(payload)
        walls = []
        for i in range(runs + 1):
            t = time.perf_counter()
            subprocess.run([project_python(), "-m", "smaskd", "export", str(src), "-o",
                            str(tmp / f"cli{i}.zip")], check=True, capture_output=True)
            if i:  # the first run warms the page cache, as the daemon's warm-up files do
                walls.append(time.perf_counter() - t)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return summary(walls)

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=int, default=200, help="files dropped one at a time")
    ap.add_argument("--throughput", type=int, default=1000, help="files dropped at once")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-file wait in the latency phase")
    ap.add_argument("--phase-timeout", type=float, default=600.0, help="throughput phase deadline")
    ap.add_argument("--temp-outside", action="store_true",
                    help="write temp files in a sibling folder and rename them into the inbox "
                         "(the inbox then sees only IN_MOVED_TO, no IN_MOVED_FROM)")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (prints its path)")
    ap.add_argument("--configs", default="default,settle0",
                    help="comma-separated: default (no settle key: 2 s on a local inbox), "
                         "settle0 (settle: 0s), or a duration to use as settle")
    ap.add_argument("--cli-runs", type=int, default=10,
                    help="one-shot CLI runs on the same kind of file, for comparison")
    args = ap.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)

    configs = [c for c in args.configs.split(",") if c]
    per_config = 4 + args.latency + args.throughput
    t0 = time.perf_counter()
    payloads = [small_doc(n) for n in range(per_config + 1)]
    print(f"prepared {len(payloads)} inputs ({sum(map(len, payloads)) / len(payloads) / 1024:.1f}"
          f" KiB each) in {time.perf_counter() - t0:.1f} s", flush=True)
    cli = cli_wall(payloads[-1], args.cli_runs)
    print("one-shot CLI (smaskd export, new process each): "
          + json.dumps({k: round(v, 1) for k, v in cli.items()}), flush=True)
    results, rc = [], 0
    for label in configs:
        settle = {"default": None, "settle0": "0s"}.get(label, label)
        result, code, tmp = run_daemon(args, label, settle, payloads[:per_config])
        results.append(result)
        rc = rc or code
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = WORK / f"daemon-{date}Z.json"
    out.write_text(json.dumps({"cli": cli, "runs": results}, indent=1))
    print("\n| config | measure | n | p50 ms | p95 ms | max ms | files/s | p50 / CLI p50 |"
          "\n|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| — | one-shot CLI wall (`smaskd export`) | {cli['n']} | {cli['p50_ms']:.0f} "
          f"| {cli['p95_ms']:.0f} | {cli['max_ms']:.0f} | — | 1.00 |")
    for result in results:
        la, tp = result.get("latency"), result.get("throughput")
        if la:
            print(f"| {result['config']} | drop-to-outbox, one at a time | {la['n']} "
                  f"| {la['p50_ms']:.0f} | {la['p95_ms']:.0f} | {la['max_ms']:.0f} | — "
                  f"| {la['p50_ms'] / cli['p50_ms']:.2f} |")
        if tp:
            print(f"| {result['config']} | {tp['files']} dropped at once | {tp['done']} "
                  f"| {tp['p50_ms']:.0f} | {tp['p95_ms']:.0f} | {tp['max_ms']:.0f} "
                  f"| {tp['files_per_s']:.1f} | — |")
    for result in results:
        br = result.get("latency_breakdown", {})
        if br:
            print(f"\n{result['config']}, one at a time, from the job logs: "
                  + ", ".join(f"{k} p50 {v['p50_ms']:.0f} ms" for k, v in br.items()))
        if "daemon_tree_rss_mb" in result:
            print(f"{result['config']}: daemon tree RSS peak {result['daemon_tree_rss_mb']:.0f} MB;"
                  f" stopped in {result['stop_s']:.2f} s with rc {result['daemon_rc']}")
    print(f"results: {out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
