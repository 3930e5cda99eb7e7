"""Import (mask zip → annotation JSON) at 640×480: smaskd trees side by side with Datumaro.

Issue 16 asks for the per-image import overhead at 640×480 against Datumaro. ``run.py``
measures it among a dozen other rows, one tool after the other; on a shared machine the
load moves between those rows. This script runs only the import, **interleaved**: every
repetition runs Datumaro and each smaskd tree once, in turn, so a ratio compares runs a
few seconds apart. It reports wall time and CPU time (user + system of the process, from
``wait4``): with other sessions on the cores, CPU time moves less than wall time.

    .venv/bin/python benchmarks/import_overhead.py                       # this tree vs Datumaro
    .venv/bin/python benchmarks/import_overhead.py --tree before=/tmp/old --tree after=.
    .venv/bin/python benchmarks/import_overhead.py --images 2000 --repeat 3

``--tree LABEL=PATH`` runs ``python -m smaskd import`` with ``PYTHONPATH=PATH`` (a checkout
or ``git archive`` of another commit; same venv, so the same numpy/OpenCV/isal).

Bytecode: an installed smaskd (``pip install``) has its modules compiled; a source tree run
with ``PYTHONDONTWRITEBYTECODE=1`` (set in some shells and CI images) compiles every smaskd
module on each start, ~40 ms of CPU here, while Datumaro's venv was compiled by pip.
``--bytecode`` (the default) compiles each tree's ``smaskd/`` once with ``compileall`` before
measuring, as an install would; ``--no-bytecode`` measures the tree as it is. The choice
and the variable are printed with the results.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import datumaro_env  # noqa: E402


def _run(cmd: list[str], env: dict[str, str] | None, cwd: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one process run to completion; a failure stops the benchmark.

    ``cwd`` must not hold a smaskd tree: ``python -m`` puts it before ``PYTHONPATH``.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime


def _data(images: int, py: str, dm_py: str | None) -> Path:
    """The run.py data set of that size (generated and exported once, then reused)."""
    d = HERE / ".work" / "data" / f"{images}x640x480x10"
    if not (d / "datumaro.json").exists():
        subprocess.run([py, str(HERE / "generate.py"), "--images", str(images), "--size",
                        "640x480", "--objects", "10", "--out", str(d)], check=True)
    if not (d / "smaskd.zip").exists():
        subprocess.run([py, "-m", "smaskd", "export", str(d / "datumaro.json"), "-o",
                        str(d / "smaskd.zip")], check=True, cwd=REPO)
    if dm_py and not (d / "datumaro.zip").exists():
        subprocess.run([dm_py, str(HERE / "dm_chain.py"), "export", str(d / "datumaro.json"),
                        str(d / "labelmap.txt"), str(d / "datumaro.zip")], check=True)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds (median reported)")
    ap.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                    help="a smaskd source tree to time (default: this one, as 'smaskd')")
    ap.add_argument("--bytecode", action=argparse.BooleanOptionalAction, default=True,
                    help="compile each tree's smaskd/ first, as an install does (default)")
    ap.add_argument("--no-datumaro", action="store_true", help="smaskd trees only")
    args = ap.parse_args()

    py = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable
    dm_py = None if args.no_datumaro else str(datumaro_env.ensure())
    trees = [t.split("=", 1) for t in args.tree] or [["smaskd", str(REPO)]]
    d = _data(args.images, py, dm_py)
    if args.bytecode:
        for _, path in trees:
            compileall.compile_dir(str(Path(path) / "smaskd"), quiet=1)

    tools: list[tuple[str, list[str], dict[str, str] | None]] = []
    if dm_py:
        tools.append(("datumaro", [dm_py, str(HERE / "dm_chain.py"), "import",
                                   str(d / "datumaro.zip")], None))
    for label, path in trees:
        env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()))
        tools.append((label, [py, "-m", "smaskd", "import", str(d / "smaskd.zip"), "-o",
                              str(d / f"import-{label}.json")], env))

    load0 = os.getloadavg()
    results: dict[str, list[tuple[float, float]]] = {t[0]: [] for t in tools}
    for _ in range(args.repeat):
        for label, cmd, env in tools:
            results[label].append(_run(cmd, env, d))
    load1 = os.getloadavg()

    outputs = {label: (d / f"import-{label}.json").read_bytes() for label, _ in trees}
    same = len(set(outputs.values())) == 1
    print(json.dumps({"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "images": args.images, "repeat": args.repeat, "bytecode": args.bytecode,
                      "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
                      "load_avg_start": [round(x, 1) for x in load0],
                      "load_avg_end": [round(x, 1) for x in load1],
                      "smaskd_outputs_identical": same}))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in results.items()}
    dm = med.get("datumaro")
    print("| tool | wall s (median) | CPU s (median) | ms/image (wall) | Datumaro / tool, wall "
          "| Datumaro / tool, CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (wall, cpu) in med.items():
        ratio = (f"{dm[0] / wall:.1f}x | {dm[1] / cpu:.1f}x" if dm and label != "datumaro"
                 else "|")
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {wall / args.images * 1e3:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
