"""smaskd vs Datumaro (CVAT's chain) vs a cv2-only floor, on the same generated data, in one run.

Run by hand, from the repository root, with the project venv (it needs numpy and cv2):

    .venv/bin/python benchmarks/run.py              # 200×640×480×10 and 50×1920×1080×30
    .venv/bin/python benchmarks/run.py --quick      # smoke run, small N
    .venv/bin/python benchmarks/run.py --scaling    # export and import at 200 vs 2000 images

Every tool runs as its own process; the runner measures the whole process:
- wall: ``time.perf_counter`` around ``Popen`` … ``wait4`` (interpreter start-up included);
- peak RSS: ``ru_maxrss`` from ``os.wait4`` for that child (the largest single process of its
  tree that was waited for);
- tree RSS: the sum of VmRSS over the child and all its descendants, sampled every 50 ms (what
  a multi-process exporter really holds at once; it can miss short spikes).

Tools per scenario (export = annotation JSON → mask zip, import = mask zip → masks in memory):
- smaskd: ``python -m smaskd export datumaro.json -o smaskd.zip`` and
  ``python -m smaskd import smaskd.zip -o smaskd.json`` (the import writes COCO JSON);
- Datumaro: ``benchmarks/dm_chain.py`` in ``benchmarks/.work/dm-venv`` (CVAT's export chain,
  and ``Dataset.import_from(dir, 'voc_segmentation')`` touching every mask);
- floor: ``benchmarks/floor.py`` (json + cv2.fillPoly + cv2.imencode; cv2.imdecode + colour LUT).
Each is run ``--repeat`` times (default 3; 1 with --quick) and the median wall is reported
with the peak RSS of that run. Results go to stdout (a Markdown table) and to
``benchmarks/.work/results-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
sys.path.insert(0, str(HERE))

import datumaro_env  # noqa: E402
import generate  # noqa: E402

SCENARIOS = [  # name, images, width, height, objects
    ("200x640x480x10", 200, 640, 480, 10),
    ("50x1920x1080x30", 50, 1920, 1080, 30),
]
QUICK = [
    ("20x640x480x10", 20, 640, 480, 10),
    ("5x1920x1080x30", 5, 1920, 1080, 30),
]
TIMEOUT_S = 900  # per process: every benchmark is bounded


# ---------------------------------------------------------------- measuring one process


def _descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        rest = stat[stat.rfind(b")") + 2:].split()
        parent[int(name)] = int(rest[1])
    out, frontier = [root], [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, IndexError, ValueError):
        return 0


@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall_s: float
    peak_rss_mb: float
    tree_rss_mb: float
    cpu_s: float = 0.0  # user + system of the child and the helpers it waited for (wait4)
    stdout: str = ""
    stderr: str = ""


def measure(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = TIMEOUT_S) -> Run:
    """Run ``cmd`` to completion; wall time, ru_maxrss (wait4) and sampled tree RSS."""
    out_f = open(WORK / "last.stdout", "w+")
    err_f = open(WORK / "last.stderr", "w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=env, cwd=cwd,
                            start_new_session=True)
    peak_tree = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        while not done.is_set():
            try:
                total = sum(_rss_kb(p) for p in _descendants(proc.pid))
            except Exception:  # a process vanished mid-scan
                total = 0
            peak_tree = max(peak_tree, total)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.killpg(proc.pid, 9)
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    run = Run(cmd=[str(c) for c in cmd], rc=proc.returncode, wall_s=wall,
              peak_rss_mb=ru.ru_maxrss / 1024, tree_rss_mb=peak_tree / 1024,
              cpu_s=ru.ru_utime + ru.ru_stime, stdout=out_f.read()[-4000:], stderr=err_f.read()[-4000:])
    out_f.close()
    err_f.close()
    return run


# ---------------------------------------------------------------- the tools


def project_python() -> str:
    venv_py = REPO / ".venv" / "bin" / "python"
    return str(venv_py) if venv_py.exists() else sys.executable


@dataclass
class Row:
    scenario: str
    images: int
    tool: str
    phase: str
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    tree_rss_mb: float | None = None
    walls: list[float] = field(default_factory=list)
    # CPU seconds, sorted: on a machine shared with other work, wall time measures the
    # neighbours too, CPU time much less
    cpus: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.wall_s if self.wall_s else None


def repeat(row: Row, cmd: list[str], n: int, env: dict[str, str] | None = None) -> Row:
    runs = []
    for _ in range(n):
        r = measure(cmd, env=env, cwd=REPO)
        if r.rc != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
            row.note = f"FAILED rc={r.rc}: " + (msg[-1][:160] if msg else "")
            print(f"  {row.tool} {row.phase}: {row.note}", flush=True)
            return row
        runs.append(r)
    runs.sort(key=lambda r: r.wall_s)
    med = runs[len(runs) // 2]
    row.wall_s, row.peak_rss_mb, row.tree_rss_mb = med.wall_s, med.peak_rss_mb, med.tree_rss_mb
    row.walls = [round(r.wall_s, 3) for r in runs]
    row.cpus = sorted(round(r.cpu_s, 3) for r in runs)
    print(f"  {row.tool:9} {row.phase:6} {row.wall_s:8.2f} s  cpu {row.cpus[len(runs) // 2]:6.2f} s  peak {row.peak_rss_mb:7.1f} MB"
          f"  tree {row.tree_rss_mb:7.1f} MB  {med.stdout.strip().splitlines()[-1][:110] if med.stdout.strip() else ''}",
          flush=True)
    return row


def _scenario_data(name: str, images: int, w: int, h: int, k: int) -> Path:
    d = WORK / "data" / name
    stamp = d / "infos.json"
    want = {"images": images, "size": [w, h], "objects": k, "seed": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return d
    t0 = time.perf_counter()
    generate.write_dataset(d, images, w, h, k, seed=1)
    stamp.write_text(json.dumps(want))
    print(f"  generated {name} in {time.perf_counter() - t0:.1f} s "
          f"({(d / 'datumaro.json').stat().st_size / 1e6:.1f} MB Datumaro JSON)", flush=True)
    return d


def compare_zips(a: Path, b: Path) -> str:
    """Same member set? Fraction of SegmentationClass pixels whose colour differs."""
    import cv2
    import numpy as np

    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        na = {n for n in za.namelist() if not n.endswith("/")}
        nb = {n for n in zb.namelist() if not n.endswith("/")}
        diff = px = 0
        for n in sorted(na & nb):
            if n.startswith("SegmentationClass/") and n.endswith(".png"):
                ia = cv2.imdecode(np.frombuffer(za.read(n), np.uint8), cv2.IMREAD_COLOR)
                ib = cv2.imdecode(np.frombuffer(zb.read(n), np.uint8), cv2.IMREAD_COLOR)
                if ia is None or ib is None or ia.shape != ib.shape:
                    return f"{n}: unreadable or shape differs"
                diff += int((ia != ib).any(-1).sum())
                px += ia.shape[0] * ia.shape[1]
    same = "same members" if na == nb else f"members differ ({len(na ^ nb)} names)"
    frac = f"{diff / px:.4%}" if px else "n/a"
    return f"{same}; class pixels differing: {frac}"


def run_scenario(name: str, images: int, w: int, h: int, k: int, *, reps: int, dm_py: str | None,
                 tools: set[str], check: bool) -> list[Row]:
    print(f"\n== {name}: {images} images {w}x{h}, {k} objects each", flush=True)
    d = _scenario_data(name, images, w, h, k)
    py = project_python()
    rows: list[Row] = []
    src = d / "datumaro.json"
    if "smaskd" in tools:
        out = d / "smaskd.zip"
        rows.append(repeat(Row(name, images, "smaskd", "export"),
                           [py, "-m", "smaskd", "export", str(src), "-o", str(out)], reps))
        if out.exists() and rows[-1].wall_s:
            rows.append(repeat(Row(name, images, "smaskd", "import"),
                               [py, "-m", "smaskd", "import", str(out), "-o", str(d / "smaskd.json")],
                               reps))
        else:
            rows.append(Row(name, images, "smaskd", "import", note="skipped: no export"))
        rows.append(repeat(Row(name, images, "smaskd", "export", note="COCO input"),
                           [py, "-m", "smaskd", "export", str(d / "coco.json"), "-o",
                            str(d / "smaskd-coco.zip")], reps))
        # the same in one process (-j 1): what the daemon runs per job, and the parallel gain
        rows.append(repeat(Row(name, images, "smaskd", "export", note="1 process"),
                           [py, "-m", "smaskd", "export", "-j", "1", str(src), "-o",
                            str(d / "smaskd-j1.zip")], reps))
        if out.exists():
            rows.append(repeat(Row(name, images, "smaskd", "import", note="1 process"),
                               [py, "-m", "smaskd", "import", "-j", "1", str(out), "-o",
                                str(d / "smaskd-j1.json")], reps))
    if "datumaro" in tools:
        if dm_py is None:
            rows += [Row(name, images, "datumaro", p, note="no Datumaro venv") for p in ("export", "import")]
        else:
            out = d / "datumaro.zip"
            rows.append(repeat(Row(name, images, "datumaro", "export"),
                               [dm_py, str(HERE / "dm_chain.py"), "export", str(src),
                                str(d / "labelmap.txt"), str(out)], reps))
            rows.append(repeat(Row(name, images, "datumaro", "import"),
                               [dm_py, str(HERE / "dm_chain.py"), "import", str(out)], reps))
    if "floor" in tools:
        out = d / "floor.zip"
        rows.append(repeat(Row(name, images, "floor", "export"),
                           [py, str(HERE / "floor.py"), "export", str(src), str(out)], reps))
        rows.append(repeat(Row(name, images, "floor", "import"),
                           [py, str(HERE / "floor.py"), "import", str(out)], reps))
    if check:
        for other in ("datumaro", "floor"):
            a, b = d / "smaskd.zip", d / f"{other}.zip"
            if a.exists() and b.exists() and "smaskd" in tools:
                print(f"  check smaskd.zip vs {other}.zip: {compare_zips(a, b)}", flush=True)
        a, b = d / "datumaro.zip", d / "floor.zip"
        if a.exists() and b.exists():
            print(f"  check datumaro.zip vs floor.zip: {compare_zips(a, b)}", flush=True)
    return rows


def run_scaling(reps: int, dm_py: str | None, tools: set[str], quick: bool,
                counts: list[int]) -> list[Row]:
    sizes = [(20, 640, 480, 10), (200, 640, 480, 10)] if quick else \
            [(n, 640, 480, 10) for n in counts]
    rows: list[Row] = []
    py = project_python()
    for images, w, h, k in sizes:
        name = f"{images}x{w}x{h}x{k}"
        print(f"\n== scaling {name}", flush=True)
        d = _scenario_data(name, images, w, h, k)
        if "smaskd" in tools:
            rows.append(repeat(Row(name, images, "smaskd", "export", note="scaling"),
                               [py, "-m", "smaskd", "export", str(d / "datumaro.json"), "-o",
                                str(d / "smaskd.zip")], reps))
            rows.append(repeat(Row(name, images, "smaskd", "export", note="scaling, 1 process"),
                               [py, "-m", "smaskd", "export", "-j", "1", str(d / "datumaro.json"),
                                "-o", str(d / "smaskd-j1.zip")], reps))
            rows.append(repeat(Row(name, images, "smaskd", "export", note="scaling, COCO input"),
                               [py, "-m", "smaskd", "export", str(d / "coco.json"), "-o",
                                str(d / "smaskd-coco.zip")], reps))
            rows.append(repeat(Row(name, images, "smaskd", "import", note="scaling"),
                               [py, "-m", "smaskd", "import", str(d / "smaskd.zip"), "-o",
                                str(d / "smaskd.json")], reps))
        if "datumaro" in tools and dm_py:
            rows.append(repeat(Row(name, images, "datumaro", "export", note="scaling"),
                               [dm_py, str(HERE / "dm_chain.py"), "export", str(d / "datumaro.json"),
                                str(d / "labelmap.txt"), str(d / "datumaro.zip")], 1))
        if "floor" in tools:
            rows.append(repeat(Row(name, images, "floor", "export", note="scaling"),
                               [py, str(HERE / "floor.py"), "export", str(d / "datumaro.json"),
                                str(d / "floor.zip")], 1))
    return rows


# ---------------------------------------------------------------- report


def _f(v: float | None, fmt: str) -> str:
    return format(v, fmt) if v is not None else "—"


def table(rows: list[Row]) -> str:
    by = {(r.scenario, r.tool, r.phase, r.note): r for r in rows}
    lines = ["| scenario | phase | tool | wall s | images/s | peak RSS MB | tree RSS MB "
             "| smaskd/Datumaro wall | smaskd/floor wall | note |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio_dm = ratio_fl = None
        if r.tool == "smaskd" and r.wall_s and not r.note:
            dm = by.get((r.scenario, "datumaro", r.phase, ""))
            fl = by.get((r.scenario, "floor", r.phase, ""))
            ratio_dm = r.wall_s / dm.wall_s if dm and dm.wall_s else None
            ratio_fl = r.wall_s / fl.wall_s if fl and fl.wall_s else None
        if r.tool == "smaskd" and r.note == "scaling" and r.phase == "export":
            dm = by.get((r.scenario, "datumaro", r.phase, "scaling"))
            fl = by.get((r.scenario, "floor", r.phase, "scaling"))
            ratio_dm = r.wall_s / dm.wall_s if r.wall_s and dm and dm.wall_s else None
            ratio_fl = r.wall_s / fl.wall_s if r.wall_s and fl and fl.wall_s else None
        lines.append(
            f"| {r.scenario} | {r.phase} | {r.tool} | {_f(r.wall_s, '.2f')} | {_f(r.images_per_s, '.1f')} "
            f"| {_f(r.peak_rss_mb, '.0f')} | {_f(r.tree_rss_mb, '.0f')} "
            f"| {_f(ratio_dm, '.2f')} | {_f(ratio_fl, '.2f')} | {r.note} |")
    return "\n".join(lines)


def _git_head() -> str:
    """The commit measured, with '+' when the working tree has changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small N smoke run, 1 repetition")
    ap.add_argument("--scaling", action="store_true",
                    help="only the memory-scaling check: export and import at 200 vs 2000 images")
    ap.add_argument("--scaling-images", default="200,2000",
                    help="image counts of the scaling check (e.g. 200,2000,20000)")
    ap.add_argument("--repeat", type=int, help="runs per measurement (median wall reported)")
    ap.add_argument("--tools", default="smaskd,datumaro,floor",
                    help="comma-separated subset of smaskd,datumaro,floor")
    ap.add_argument("--no-datumaro-install", action="store_true",
                    help="do not create the Datumaro venv; skip Datumaro if it is missing")
    ap.add_argument("--no-check", action="store_true", help="skip the output pixel comparison")
    args = ap.parse_args(argv)
    reps = args.repeat or (1 if args.quick else 3)
    tools = set(args.tools.split(","))
    WORK.mkdir(parents=True, exist_ok=True)

    dm_py = None
    if "datumaro" in tools:
        if datumaro_env.is_ready():
            dm_py = str(datumaro_env.dm_python())
        elif not args.no_datumaro_install:
            dm_py = str(datumaro_env.ensure())
    dm_ver = datumaro_env.dm_version() if dm_py else None

    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    meta = {"date_utc": started.isoformat(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "datumaro": dm_ver, "repeat": reps,
            "smaskd_python": project_python(), "load_avg_start": os.getloadavg(),
            "head": _git_head()}
    print("benchmark", json.dumps(meta), flush=True)
    rows: list[Row] = []
    if args.scaling:
        counts = [int(n) for n in args.scaling_images.split(",")]
        rows += run_scaling(reps, dm_py, tools, args.quick, counts)
    else:
        for sc in (QUICK if args.quick else SCENARIOS):
            rows += run_scenario(*sc, reps=reps, dm_py=dm_py, tools=tools, check=not args.no_check)
    meta["load_avg_end"] = os.getloadavg()
    md = table(rows)
    print("\n" + md)
    print(f"\nload average (1, 5, 15 min): start {meta['load_avg_start']}, end {meta['load_avg_end']}")
    print("\nratios: smaskd wall / other wall (below 1 = smaskd is faster).")
    res = WORK / f"results-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    res.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows], "table": md}, indent=1))
    print(f"results: {res}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
