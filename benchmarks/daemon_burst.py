"""Burst throughput of the real daemon on the default config: N small files renamed in at once.

Run by hand from the repository root:

    .venv/bin/python benchmarks/daemon_burst.py                       # 1,000 files, this tree
    .venv/bin/python benchmarks/daemon_burst.py --tree /work/wt/base --tree . --rounds 3
    .venv/bin/python benchmarks/daemon_burst.py --files 200 --profile strace   # where time goes

Why a script of its own (``daemon_latency.py`` has a throughput phase too): a burst is bound
by the daemon's main loop (journal commits, fsyncs, renames, worker starts), so it is
measured on exactly what a user gets with no config at all (``smaskd run`` in an empty folder:
``./inbox`` → ``./outbox``, action ``auto``, workers = CPUs, state in ``./.smaskd-state``, on
the same disk), and several source trees are compared in one session, interleaved
(``--tree A --tree B --rounds 3`` runs A B A B A B), because on a shared machine the load
moves more between minutes than the code changes within one. Each run prints the load
average at its start.

Per run, in a new folder under ``--dir`` (default: the system temp folder, on disk: a tmpfs
would hide exactly the fsync cost being measured): N distinct one-frame Datumaro JSONs
(``daemon_latency.small_doc``, ~2 KiB) are written into a staging folder beside the inbox
before the daemon starts; the daemon is started (``PYTHONPATH=<tree>``, ``NOTIFY_SOCKET`` ours),
4 warm-up files go through, then all N are renamed into the inbox in a tight loop.
files/s = N / (first rename → the outbox holds all N results). Also reported: the daemon
main process's CPU per file (``/proc/<pid>/stat``; the main loop is one thread, so this is
what caps a burst when the cores are free), the CPU per file of the daemon and every process
under it (workers included: on a loaded machine, CPU is what a burst queues for) and, with
``--profile``:

- ``strace``: ``strace -f -c`` over the daemon and its workers (syscall counts and wall time in each:
  fsync, fdatasync, rename, …); strace slows every syscall, so files/s of such a run is not
  comparable with the others;
- ``cprofile``: ``python -m cProfile`` on the daemon's main thread, top functions by
  cumulative and by own time.

Writes ``benchmarks/.work/burst-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE))

from daemon_latency import NotifyListener, small_doc, stop_daemon  # noqa: E402
from run import project_python  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int, children: bool = False) -> float:
    """utime + stime of one process (with ``children``: plus those of its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICKS


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of the daemon and every process under it, the workers included (the fork
    server reaps them: their time is in its ``cutime``)."""
    total, todo = _cpu_s(pid), [pid]
    while todo:
        parent = todo.pop()
        try:
            kids = [int(k) for t in Path(f"/proc/{parent}/task").iterdir()
                    for k in (t / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                total += _cpu_s(kid, children=True)
            except OSError:
                continue
            todo.append(kid)
    return total


def _count(folder: Path, suffix: str) -> int:
    try:
        with os.scandir(folder) as it:
            return sum(1 for e in it if e.name.endswith(suffix))
    except FileNotFoundError:
        return 0


def _wait(folder: Path, suffix: str, n: int, timeout: float, failed: Path) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(folder, suffix) + _count(failed, ".error.json") >= n:
            return True
        time.sleep(0.05)
    return False


def run_once(tree: Path, files: int, base: Path, profile: str, timeout: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="smaskd-burst-", dir=base))
    staging, inbox, outbox = tmp / "staging", tmp / "inbox", tmp / "outbox"
    staging.mkdir()
    names = [f"b{n:06d}.json" for n in range(files)]
    for n, name in enumerate(names):
        (staging / name).write_bytes(small_doc(n))
    warm = [f"warm{n}.json" for n in range(4)]
    for n, name in enumerate(warm):
        (staging / name).write_bytes(small_doc(files + n))
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "SMASKD_FAULT")}
    env.update(PYTHONPATH=str(tree), NOTIFY_SOCKET=str(tmp / "notify.sock"))
    notify = NotifyListener(tmp / "notify.sock")
    py = project_python()
    cmd = [py, "-m", "smaskd", "run"]
    if profile == "cprofile":
        cmd = [py, "-m", "cProfile", "-o", str(tmp / "daemon.prof"), "-m", "smaskd", "run"]
    elif profile == "strace":
        cmd = ["strace", "-f", "-c", "-w", "-o", str(tmp / "strace.txt"), *cmd]
    load = os.getloadavg()
    result: dict = {"tree": str(tree), "files": files, "dir": str(tmp), "profile": profile,
                    "load_at_start": [round(x, 2) for x in load],
                    "date_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}
    with open(tmp / "daemon.stdout", "wb") as out, open(tmp / "daemon.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=out, stderr=err,
                                start_new_session=True)
    try:
        if not notify.ready.wait(60):
            raise RuntimeError("no READY=1 within 60 s")
        daemon_pid = proc.pid
        if profile == "strace":  # the daemon is strace's child
            daemon_pid = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                             .read_text().split()[0])
        for name in warm:
            os.rename(staging / name, inbox / name)
        if not _wait(outbox, ".zip", len(warm), 120, inbox / "failed"):
            raise RuntimeError("the warm-up files did not come out within 120 s")
        time.sleep(0.5)  # the warm-up's done/ moves and log lines
        cpu0, tree0 = _cpu_s(daemon_pid), _tree_cpu_s(daemon_pid)
        t0 = time.perf_counter()
        for name in names:
            os.rename(staging / name, inbox / name)
        renamed = time.perf_counter()
        ok = _wait(outbox, ".zip", files + len(warm), timeout, inbox / "failed")
        t1 = time.perf_counter()
        cpu1, tree1 = _cpu_s(daemon_pid), _tree_cpu_s(daemon_pid)
        done = _count(outbox, ".zip") - len(warm)
        result.update(rename_s=round(renamed - t0, 3), elapsed_s=round(t1 - t0, 2),
                      results=done, complete=ok, failed=_count(inbox / "failed", ".error.json"),
                      files_per_s=round(done / (t1 - t0), 1),
                      daemon_cpu_s=round(cpu1 - cpu0, 2),
                      daemon_cpu_ms_per_file=round((cpu1 - cpu0) * 1000 / max(done, 1), 2),
                      tree_cpu_ms_per_file=round((tree1 - tree0) * 1000 / max(done, 1), 2),
                      load_at_end=[round(x, 2) for x in os.getloadavg()])
        # the last inputs' moves to done/ follow their results by a few ms
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and \
                _count(inbox / "done", ".json") < files + len(warm) - result["failed"]:
            time.sleep(0.05)
    finally:
        notify.close()
        stop_daemon(proc, 60)
        result["daemon_rc"] = proc.returncode
    if profile == "strace":
        result["strace"] = (tmp / "strace.txt").read_text()
    elif profile == "cprofile":
        import io
        import pstats

        buf = io.StringIO()
        stats = pstats.Stats(str(tmp / "daemon.prof"), stream=buf)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
        result["cprofile"] = buf.getvalue()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path,
                    help="source tree to run the daemon from (repeat to compare; default: this one)")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1, help="runs per tree, interleaved")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the run folders go (on disk: a tmpfs hides the fsync cost)")
    ap.add_argument("--profile", choices=("none", "strace", "cprofile"), default="none")
    ap.add_argument("--timeout", type=float, default=900.0, help="per-run deadline for the burst")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    args = ap.parse_args(argv)
    trees = [t.resolve() for t in (args.tree or [REPO])]
    for tree in trees:
        if not (tree / "smaskd" / "__init__.py").exists():
            ap.error(f"{tree} has no smaskd/ package")
    WORK.mkdir(parents=True, exist_ok=True)
    runs = []
    for rnd in range(args.rounds):
        for tree in trees:
            head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True).stdout.strip() or "?"
            print(f"round {rnd + 1}: {tree} ({head}), load {os.getloadavg()[0]:.2f} ...",
                  flush=True)
            result = run_once(tree, args.files, args.dir, args.profile, args.timeout)
            result["head"] = head
            runs.append(result)
            print("  " + json.dumps({k: v for k, v in result.items()
                                     if k not in ("strace", "cprofile", "dir", "tree")}),
                  flush=True)
            for key in ("strace", "cprofile"):
                if key in result:
                    print(result[key], flush=True)
            if not args.keep:
                shutil.rmtree(result["dir"], ignore_errors=True)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = WORK / f"burst-{date}Z.json"
    out.write_text(json.dumps(runs, indent=1))
    print(f"\n| tree | HEAD | round | load (1 min) at start | files | elapsed s | files/s "
          f"| main loop CPU ms/file | all processes CPU ms/file |"
          f"\n|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(runs):
        print(f"| {Path(r['tree']).name} | {r['head']} | {i // len(trees) + 1} "
              f"| {r['load_at_start'][0]:.2f} | {r.get('results', '?')} "
              f"| {r.get('elapsed_s', '?')} | {r.get('files_per_s', '?')} "
              f"| {r.get('daemon_cpu_ms_per_file', '?')} | {r.get('tree_cpu_ms_per_file', '?')} |")
    for tree in trees:
        rates = [r["files_per_s"] for r in runs if r["tree"] == str(tree) and "files_per_s" in r]
        if rates:
            print(f"{tree.name}: median {statistics.median(rates):.1f} files/s over {len(rates)}")
    print(f"results: {out}")
    return 0 if all(r.get("complete") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
