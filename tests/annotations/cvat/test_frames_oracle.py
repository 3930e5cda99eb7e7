"""Per-frame oracle: every track's shape on every frame equals CVAT's ``expected/frames.json``.

Pixels can hide a difference in the last bit of a coordinate; this compares the expansion
itself: which tracks are on which frame, their points and rotation exactly (``==`` on
floats), their z_order, and that plain shapes are on the frames CVAT puts them.
"""

from __future__ import annotations

import json

import pytest

from smaskd.annotations.cvat import bundle_to_dataset
from smaskd.annotations.cvat.tracks import interpolate_points
from tests.annotations.cvat.corpus import TRACKS, cases, needs_tracks

ORACLE_CASES = [c for c in cases() if (TRACKS / c / "expected" / "frames.json").is_file()]


def _expansion(case: str):
    bundle = json.loads((TRACKS / case / "input" / "scene.json").read_text(encoding="utf-8"))
    dataset = bundle_to_dataset(bundle, "scene.json")
    return dataset, dataset.items._build  # the per-frame builder (RebuiltItems.build)


@needs_tracks
@pytest.mark.parametrize("case", ORACLE_CASES)
def test_tracks_expand_as_cvat(case):
    oracle = json.loads((TRACKS / case / "expected" / "frames.json").read_text(encoding="utf-8"))
    dataset, builder = _expansion(case)
    frames = oracle["frames"]
    assert [f["task_frame"] for f in frames] == builder.order
    assert [item.id for item in dataset.items] == [f["name"].rsplit(".", 1)[0] if "." in
                                                   f["name"] else f["name"] for f in frames]
    for entry in frames:
        frame = entry["task_frame"]
        want = {s["track_id"]: s for s in entry["shapes"] if "track_id" in s}
        got = {}
        for index, timeline in enumerate(builder.timelines):
            hit = timeline.at(frame)
            if hit is None or (builder.tracks[index].elements
                               and builder._all_elements_outside(index, frame)):
                continue
            k0, k1 = hit
            points, rotation = (list(k0.points), k0.rotation) if k1 is None else \
                interpolate_points(k0, k1, frame)
            got[index] = (k0.type, points, rotation, k0.z_order)
        assert sorted(got) == sorted(want), f"frame {frame}: tracks present"
        for index, shape in want.items():
            kind, points, rotation, z = got[index]
            if kind in ("skeleton",):
                continue  # its points are its elements'; presence is what the export uses
            assert (kind, points, z) == (shape["type"], shape["points"], shape["z_order"]), \
                f"frame {frame}, track {index}"
            assert rotation == shape["rotation"], f"frame {frame}, track {index}"
        plain = [s for s in entry["shapes"] if "track_id" not in s]
        assert len(plain) == len(builder.plain.get(frame, [])), f"frame {frame}: plain shapes"
