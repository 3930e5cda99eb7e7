"""A CVAT video task with tracks vs the same shapes as Datumaro JSON: per-frame speed, memory.

Run by hand from the repository root::

    .venv/bin/python benchmarks/cvat_tracks.py                 # 1,000 and 5,000 frames, 40 tracks
    .venv/bin/python benchmarks/cvat_tracks.py --frames 200    # smoke
    .venv/bin/python benchmarks/cvat_tracks.py --frames 1000 --repeat 3   # best of 3, interleaved

For each frame count it writes (to ``benchmarks/.work/cvat_tracks/``) a task bundle (seeded:
40 tracks of boxes, rotated boxes, ellipses and polygons whose point count changes between
keyframes, a keyframe every 10-40 frames, some outside stretches) and the same shapes
expanded to plain Datumaro JSON by smaskd's reader, then exports both with
``smaskd export --compat cvat -j 1`` as separate processes and reports wall time, time per
frame (CPU time: on a shared machine wall time mostly measures the neighbours) and peak
RSS. It checks the two zips are identical member by member.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "cvat_tracks"
W, H = 640, 480


def _polygon(rng: random.Random, n: int) -> list[float]:
    import math

    cx, cy, r = rng.uniform(80, W - 80), rng.uniform(80, H - 80), rng.uniform(20, 70)
    pts = []
    for i in range(n):
        a = 2 * math.pi * i / n
        rr = r * rng.uniform(0.6, 1.0)
        pts += [round(cx + rr * math.cos(a), 2), round(cy + rr * math.sin(a), 2)]
    return pts


def _key(rng: random.Random, kind: str, frame: int, outside: bool = False) -> dict:
    if kind == "polygon":
        points = _polygon(rng, rng.randint(5, 16))
        rotation = 0.0
    else:
        x, y = rng.uniform(0, W - 120), rng.uniform(0, H - 120)
        w, h = rng.uniform(10, 110), rng.uniform(10, 110)
        if kind == "ellipse":
            points = [round(x + w / 2, 2), round(y + h / 2, 2), round(x + w, 2), round(y, 2)]
        else:
            points = [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)]
        rotation = float(rng.choice([0, 0, rng.uniform(0, 360)]))
    return {"type": kind, "frame": frame, "points": points, "outside": outside,
            "occluded": False, "rotation": round(rotation, 2), "z_order": rng.randint(0, 3),
            "attributes": []}


def make_bundle(frames: int, tracks: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    labels = [{"id": i + 1, "name": n, "color": c, "type": "any", "attributes": [],
               "sublabels": []} for i, (n, c) in enumerate(
                   [("car", "#fa3253"), ("person", "#33ddff"), ("bike", "#34d1b7"),
                    ("sign", "#ff6037")])]
    out = []
    for t in range(tracks):
        kind = ("rectangle", "rectangle", "ellipse", "polygon")[t % 4]
        shapes, frame = [], rng.randint(0, 20)
        while frame < frames:
            outside = rng.random() < 0.08
            shapes.append(_key(rng, kind, frame, outside))
            frame += rng.randint(10, 40)
        out.append({"id": 1000 + t, "label_id": 1 + t % 4, "frame": shapes[0]["frame"],
                    "group": 0, "source": "manual", "attributes": [], "shapes": shapes})
    return {
        "task": {"mode": "interpolation", "name": "bench", "subset": "", "overlap": 5},
        "meta": {"size": frames, "start_frame": 0, "stop_frame": frames - 1, "frame_filter": "",
                 "deleted_frames": [], "frames": [{"name": "clip.mp4", "width": W, "height": H}]},
        "labels": labels,
        "annotations": {"version": 0, "tags": [], "shapes": [], "tracks": out},
    }


def bundle_as_datumaro(bundle: dict) -> dict:
    """The same shapes, expanded by smaskd's reader, as plain Datumaro JSON."""
    sys.path.insert(0, str(ROOT))
    from smaskd.annotations.cvat import bundle_to_dataset
    from smaskd.model import Box, Ellipse, Polygon

    ds = bundle_to_dataset(bundle, "bundle.json")
    items = []
    for item in ds.items:
        anns = []
        for n, a in enumerate(item.annotations):
            s = a.shape
            base = {"id": n, "label_id": a.label, "group": a.group, "z_order": a.z_order,
                    "attributes": {}}
            if isinstance(s, Box):
                base.update(type="bbox", bbox=[s.x, s.y, s.w, s.h])
                base["attributes"]["rotation"] = s.rotation
            elif isinstance(s, Ellipse):
                base.update(type="ellipse", points=[s.x1, s.y1, s.x2, s.y2])
                base["attributes"]["rotation"] = s.rotation
            elif isinstance(s, Polygon):
                base.update(type="polygon", points=list(s.points))
            anns.append(base)
        items.append({"id": item.id, "image": {"path": item.id + ".png",
                                               "size": [item.height, item.width]},
                      "annotations": anns})
    return {"categories": {"label": {"labels": [{"name": lb.name} for lb in ds.labels]},
                           "mask": {"colormap": [{"label_id": i, "r": c[0], "g": c[1], "b": c[2]}
                                                 for i, lb in enumerate(ds.labels)
                                                 for c in [lb.color]]}},
            "items": items}


#: Runs the export as its only child, so its children's peak RSS is the export's own.
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, capture_output=True)\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(time.perf_counter() - t, r.ru_maxrss, r.ru_utime + r.ru_stime)\n"
)


def run_export(src: Path, dst: Path) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MiB) and CPU seconds of one ``smaskd export`` process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "smaskd",
                          "export", str(src), "-o", str(dst), "--compat", "cvat", "-j", "1"],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()
    return float(out[0]), int(out[1]) / 1024, float(out[2])


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--tracks", type=int, default=40)
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each, interleaved; the one with least CPU is reported")
    args = p.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for frames in args.frames:
        bundle = make_bundle(frames, args.tracks)
        b_path = WORK / f"bundle_{frames}.json"
        d_path = WORK / f"datumaro_{frames}.json"
        b_path.write_text(json.dumps(bundle))
        d_path.write_text(json.dumps(bundle_as_datumaro(bundle)))
        best: dict[str, tuple[float, float, float]] = {}
        inputs = (("task bundle (tracks)", b_path), ("Datumaro JSON (expanded)", d_path))
        for _ in range(args.repeat):
            for name, src in inputs:
                wall, rss, cpu = run_export(src, WORK / f"{src.stem}.zip")
                if name not in best or cpu < best[name][2]:
                    best[name] = (wall, max(rss, best.get(name, (0, 0, 0))[1]), cpu)
        for name, src in inputs:
            wall, rss, cpu = best[name]
            rows.append((frames, name, src.stat().st_size / 2**20, wall, cpu, rss))
        same = members(WORK / f"{b_path.stem}.zip") == members(WORK / f"{d_path.stem}.zip")
        rows.append((frames, "zips identical", 0, 0, 0, float(same)))
    print(f"{'frames':>6}  {'input':<26} {'MiB in':>7} {'wall s':>7} {'CPU s':>7} "
          f"{'CPU ms/frame':>13} {'peak RSS':>9}")
    for frames, name, size, wall, cpu, rss in rows:
        if name == "zips identical":
            print(f"{frames:>6}  zips identical: {bool(rss)}")
            continue
        print(f"{frames:>6}  {name:<26} {size:7.1f} {wall:7.1f} {cpu:7.1f} "
              f"{cpu / frames * 1000:13.2f} {rss:8.0f}M")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
