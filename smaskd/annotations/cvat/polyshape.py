"""CVAT's polygon/polyline interpolation (``interpolate_position`` in ``annotation.py``).

Between two keyframes with different point counts CVAT matches points by their relative
position along the curve (each left point to the nearest right one, then every unmatched
right point to its nearest left one), interpolates every matched pair, and then thins the
result per segment: a point is kept when it lies at least ``base_length / (2 * N)`` from the
last kept one. So the point count changes from frame to frame, and the pixels depend on
every floating-point step. This is CVAT's code path step for step (numpy float64 points and
``sqrt``, the same accumulation order, the same tie-breaking by first minimum); only the
``{"x", "y"}`` dicts became tuples, and what depends only on the two keyframes (matching,
segment lengths, ``right - left``) is computed once per keyframe pair instead of per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["interpolate_position"]

Point = tuple[float, float]


def _to_points(flat: list[float]) -> list[Point]:
    arr = np.asarray(flat).reshape(-1, 2)
    return [(p[0], p[1]) for p in arr]


def _curve_length(points: list[Point]) -> float:
    length = 0
    for i in range(1, len(points)):
        dx = points[i][0] - points[i - 1][0]
        dy = points[i][1] - points[i - 1][1]
        length += np.sqrt(dx ** 2 + dy ** 2)
    return length


def _offset_vec(points: list[Point], length: float) -> list[float]:
    offsets = [0]
    accumulated = 0
    for i in range(1, len(points)):
        dx = points[i][0] - points[i - 1][0]
        dy = points[i][1] - points[i - 1][1]
        accumulated += np.sqrt(dx ** 2 + dy ** 2)
        offsets.append(accumulated / length)
    return offsets


def _nearest(value: float, curve: list[float]) -> int:
    best, best_d = 0, abs(value - curve[0])
    for i in range(1, len(curve)):
        d = abs(value - curve[i])
        if d < best_d:
            best, best_d = i, d
    return best


def _match(left: list[float], right: list[float]) -> dict[int, list[int]]:
    matching = {i: [_nearest(v, right)] for i, v in enumerate(left)}
    matched = {j for js in matching.values() for j in js}
    for j in range(len(right)):
        if j not in matched:
            matching[_nearest(right[j], left)].append(j)
    return {i: sorted(js) for i, js in matching.items()}


def _distance(a: Point, b: Point):
    return np.sqrt(((a[0] - b[0])) ** 2 + ((a[1] - b[1]) ** 2))


@dataclass(frozen=True, slots=True)
class _Pair:
    """What depends only on the two keyframes (not on the frame): matched point pairs as
    ``(left x, left y, right x - left x, right y - left y)``, and the reduction's segments,
    each ``(start, stop, base_length, n)`` over the interpolated points, or ``(i, i, None, 0)``
    for a point kept as it is. Computed once per keyframe pair, exactly as CVAT computes them
    for every frame; only the frame's own arithmetic is left per frame."""

    pairs: tuple[tuple[Any, Any, Any, Any], ...]
    segments: tuple[tuple[int, int, Any, int], ...]


def _segments(matching: dict[int, list[int]], left: list[Point],
              right: list[Point]) -> list[tuple[int, int, Any, int]]:
    """CVAT's ``reduce_interpolation`` walk, recording its segments instead of running them."""
    segments: list[tuple[int, int, Any, int]] = []
    indexes: dict[int, list[int]] = {}
    accumulated = 0
    for i in range(len(left)):
        indexes[i] = []
        for _ in range(len(matching[i])):
            indexes[i].append(accumulated)
            accumulated += 1

    def left_segment(start: int, stop: int) -> None:
        s, e = indexes[start][0], indexes[stop][0]
        if s == e:
            segments.append((s, s, None, 0))
            return
        segments.append((s, e, _curve_length(left[start:stop + 1]), stop - start + 1))

    def right_segment(i: int) -> None:
        start, stop = matching[i][0], matching[i][-1]
        s, e = indexes[i][0], indexes[i][-1]
        segments.append((s, e, _curve_length(right[start:stop + 1]), stop - start + 1))

    opened = None
    for i in range(len(left)):
        if len(matching[i]) == 1:
            if opened is not None:
                if matching[i][0] == matching[opened][0]:
                    continue
                left_segment(opened, i - 1)
                opened = i
            else:
                opened = i
        else:
            if opened is not None:
                left_segment(opened, i - 1)
                opened = None
            right_segment(i)
    if opened is not None:
        left_segment(opened, len(left) - 1)
    return segments


@lru_cache(maxsize=4096)
def _pair(left_flat: tuple[float, ...], right_flat: tuple[float, ...]) -> _Pair:
    left = _to_points(list(left_flat))
    right = _to_points(list(right_flat))
    left_vec = _offset_vec(left, _curve_length(left))
    right_vec = _offset_vec(right, _curve_length(right))
    matching = _match(left_vec, right_vec)
    pairs = tuple((lp[0], lp[1], right[j][0] - lp[0], right[j][1] - lp[1])
                  for i, lp in enumerate(left) for j in matching[i])
    return _Pair(pairs, tuple(_segments(matching, left, right)))


def _minimize(points: list[Point], base_length: Any, n: int, start: int,
              stop: int) -> list[Point]:
    threshold = base_length / (2 * n)
    minimized = [points[start]]
    latest = start
    for i in range(start + 1, stop):
        if _distance(points[latest], points[i]) >= threshold:
            minimized.append(points[i])
            latest = i
    minimized.append(points[stop])
    if len(minimized) == 2 and _distance(points[start], points[stop]) < threshold:
        sum_x = 0
        sum_y = 0
        for p in minimized:
            sum_x += p[0]
            sum_y += p[1]
        return [(sum_x / len(minimized), sum_y / len(minimized))]
    return minimized


def interpolate_position(left_flat: list[float], right_flat: list[float],
                         offset: float) -> list[float]:
    """CVAT's points at ``offset`` (0..1) between two flat ``x, y, ...`` lists."""
    pair = _pair(tuple(left_flat), tuple(right_flat))
    interpolated = [(lx + dx * offset, ly + dy * offset) for lx, ly, dx, dy in pair.pairs]
    reduced: list[Point] = []
    for start, stop, base_length, n in pair.segments:
        if base_length is None:
            reduced.append(interpolated[start])
        else:
            reduced.extend(_minimize(interpolated, base_length, n, start, stop))
    return np.asarray([[p[0], p[1]] for p in reduced]).flatten().tolist()
