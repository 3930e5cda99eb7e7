"""CVAT's polygon/polyline interpolation (``interpolate_position`` in ``annotation.py``).

Between two keyframes with different point counts CVAT matches points by their relative
position along the curve (each left point to the nearest right one, then every unmatched
right point to its nearest left one), interpolates every matched pair, and then thins the
result per segment: a point is kept when it lies at least ``base_length / (2 * N)`` from the
last kept one. So the point count changes from frame to frame, and the pixels depend on
every floating-point step. This is CVAT's code path step for step (numpy ``sqrt`` on Python
floats, the same accumulation order, the same tie-breaking by first minimum); only the
``{"x", "y"}`` dicts became tuples.
"""

from __future__ import annotations

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


def _reduce(interpolated: list[Point], matching: dict[int, list[int]],
            left: list[Point], right: list[Point]) -> list[Point]:
    reduced: list[Point] = []
    indexes: dict[int, list[int]] = {}
    accumulated = 0
    for i in range(len(left)):
        indexes[i] = []
        for _ in range(len(matching[i])):
            indexes[i].append(accumulated)
            accumulated += 1

    def minimize(base_length, n: int, start: int, stop: int) -> list[Point]:
        threshold = base_length / (2 * n)
        minimized = [interpolated[start]]
        latest = start
        for i in range(start + 1, stop):
            if _distance(interpolated[latest], interpolated[i]) >= threshold:
                minimized.append(interpolated[i])
                latest = i
        minimized.append(interpolated[stop])
        if len(minimized) == 2 and _distance(interpolated[start], interpolated[stop]) < threshold:
            sum_x = 0
            sum_y = 0
            for p in minimized:
                sum_x += p[0]
                sum_y += p[1]
            return [(sum_x / len(minimized), sum_y / len(minimized))]
        return minimized

    def left_segment(start: int, stop: int) -> None:
        s, e = indexes[start][0], indexes[stop][0]
        if s == e:
            reduced.append(interpolated[s])
            return
        reduced.extend(minimize(_curve_length(left[start:stop + 1]), stop - start + 1, s, e))

    def right_segment(i: int) -> None:
        start, stop = matching[i][0], matching[i][-1]
        s, e = indexes[i][0], indexes[i][-1]
        reduced.extend(minimize(_curve_length(right[start:stop + 1]), stop - start + 1, s, e))

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
    return reduced


def interpolate_position(left_flat: list[float], right_flat: list[float],
                         offset: float) -> list[float]:
    """CVAT's points at ``offset`` (0..1) between two flat ``x, y, ...`` lists."""
    left = _to_points(left_flat)
    right = _to_points(right_flat)
    left_vec = _offset_vec(left, _curve_length(left))
    right_vec = _offset_vec(right, _curve_length(right))
    matching = _match(left_vec, right_vec)
    interpolated: list[Point] = []
    for i, lp in enumerate(left):
        for j in matching[i]:
            rp = right[j]
            interpolated.append((lp[0] + (rp[0] - lp[0]) * offset,
                                 lp[1] + (rp[1] - lp[1]) * offset))
    reduced = _reduce(interpolated, matching, left, right)
    return np.asarray([[p[0], p[1]] for p in reduced]).flatten().tolist()
