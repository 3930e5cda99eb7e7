"""Which labels an export has, in which order, with which colours (FORMAT.md §2.2, §2.3, §3.2).

CVAT builds the label map with ``make_colormap`` (task labels in CVAT order, ``background``
``#000000`` prepended when no label is named exactly ``background``), Datumaro sorts it by
name (plain ``str`` sort) and then picks the background: the first black label in sorted
order, else the label named ``background``. That label's index fills unannotated pixels and
its shapes erase what lies below them. We reproduce that resolution here, once per export,
and keep the checks for the ways it silently loses data next to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smaskd.errors import DataLossError, InputError
from smaskd.model import RGB, Label
from smaskd.smask.colormap import voc_color
from smaskd.smask.labelmap import LabelmapEntry, voc_default_labelmap

__all__ = ["BACKGROUND", "OutputLabels", "check_label_names", "resolve_labels"]

BACKGROUND = "background"
_BLACK: RGB = (0, 0, 0)
_VOC_BY_NAME: dict[str, RGB] = {e.name: e.color for e in voc_default_labelmap() if e.color}


@dataclass(slots=True)
class OutputLabels:
    """The export's label map: ``entries`` are labelmap.txt's lines, in that order.

    ``colors[i]`` is the SegmentationClass colour of output index ``i`` — black for a label
    without a colour, as CVAT's Datumaro fork paints it.
    """

    entries: list[LabelmapEntry]
    background: int
    index_of: dict[str, int]
    colors: np.ndarray  # (n, 3) uint8 RGB
    warnings: list[str] = field(default_factory=list)

    @property
    def background_name(self) -> str:
        return self.entries[self.background].name

    def decode_winner(self, index: int) -> int:
        """The label a re-import gives pixels of ``index``'s colour (last with that colour)."""
        color = self.entries[index].color
        if color is None:
            return index
        winner = index
        for i, e in enumerate(self.entries):
            if e.color == color:
                winner = i
        return winner


def _fill_colors(entries: list[LabelmapEntry], why: str) -> tuple[list[LabelmapEntry], list[str]]:
    """Give colourless labels a colour no other label has, so no class is painted black.

    Pascal VOC names keep their VOC colour (``cat`` → (64,0,0)); other labels take the VOC
    colour of their 1-based position (0 = black is the background's), moving on to the
    next VOC colour nobody uses when that one is taken.
    """
    missing = [e.name for e in entries if e.color is None]
    if not missing:
        return entries, []
    taken = {e.color for e in entries if e.color is not None}
    out: list[LabelmapEntry] = []
    for pos, e in enumerate(entries, start=1):
        if e.color is None:
            color = _VOC_BY_NAME.get(e.name)
            if color is None or color in taken:
                idx = pos
                while voc_color(idx % 256) in taken and idx < pos + 256:
                    idx += 1
                color = voc_color(idx % 256)
            taken.add(color)
            e = LabelmapEntry(e.name, color, e.parts, e.actions)
        out.append(e)
    shown = ", ".join(repr(n) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
    return out, [
        f"{len(missing)} label(s) had no colour {why}; gave them Pascal VOC colours: {shown}"
    ]


def _by_name(entries: list[LabelmapEntry]) -> dict[str, LabelmapEntry]:
    """``{name: ...}`` as CVAT's dict builds it: first position, last value wins."""
    out: dict[str, LabelmapEntry] = {}
    for e in entries:
        out[e.name] = e
    return out


def resolve_labels(
    dataset_labels: list[Label],
    labelmap: list[LabelmapEntry] | None = None,
    compat: str | None = None,
) -> OutputLabels:
    """The output label map for a dataset, or for an explicit ``--labelmap``."""
    warnings: list[str] = []
    if labelmap is not None:
        source = list(labelmap)
        if not source:
            raise InputError("the labelmap has no labels", "labelmap")
        has_colors = any(e.color is not None for e in source)
        if has_colors and compat != "cvat":
            source, w = _fill_colors(source, "in the labelmap")
            warnings += w
    else:
        source = [LabelmapEntry(lb.name, lb.color) for lb in dataset_labels]
        has_colors = True  # CVAT task labels always have a colour; fill the gaps
        source, w = _fill_colors(source, "in the input")
        warnings += w

    by_name = _by_name(source)
    if has_colors:
        # make_colormap: background #000000 goes first when no label is named 'background'.
        if BACKGROUND not in by_name:
            by_name = {BACKGROUND: LabelmapEntry(BACKGROUND, _BLACK), **by_name}
        entries = [by_name[n] for n in sorted(by_name)]
        bg = next((i for i, e in enumerate(entries) if e.color == _BLACK), None)
        if bg is None:
            bg = next(i for i, e in enumerate(entries) if e.name == BACKGROUND)
    else:
        # A labelmap without any colour: Datumaro creates 'background' at the front and
        # generates VOC colours by final index (make_voc_categories).
        entries = [by_name[n] for n in sorted(by_name)]
        names = [e.name for e in entries]
        if BACKGROUND not in names:
            entries.insert(0, LabelmapEntry(BACKGROUND, None))
        bg = next(i for i, e in enumerate(entries) if e.name == BACKGROUND)
        entries = [LabelmapEntry(e.name, voc_color(i % 256), e.parts, e.actions)
                   for i, e in enumerate(entries)]

    colors = np.array([e.color if e.color is not None else _BLACK for e in entries], dtype=np.int64)
    if colors.size and (colors.min() < 0 or colors.max() > 255):
        raise InputError("label colours must be within 0..255", "labelmap")
    return OutputLabels(
        entries=entries,
        background=bg,
        index_of={e.name: i for i, e in enumerate(entries)},
        colors=colors.astype(np.uint8).reshape(-1, 3),
        warnings=warnings,
    )


def check_label_names(out: OutputLabels) -> None:
    """Refuse names labelmap.txt cannot carry back (FORMAT.md §2.1, §7.12)."""
    for e in out.entries:
        problem = None
        if ":" in e.name:
            problem = "contains ':' (the labelmap field separator)"
        elif "\n" in e.name or "\r" in e.name:
            problem = "contains a line break"
        elif e.name.lstrip() != e.name:
            problem = "starts with white space (stripped when read back)"
        elif e.name.startswith("#"):
            problem = "starts with '#' (read back as a comment)"
        if problem:
            raise DataLossError(
                f"label name {e.name!r} {problem}, so the exported labelmap.txt cannot be read "
                "back; rename the label, or use --compat cvat to write it as CVAT does",
                "labels",
            )
