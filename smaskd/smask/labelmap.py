"""``labelmap.txt``: the grammar CVAT's reader implements, and the exact text its writer emits.

Grammar (FORMAT.md §2.1): each stripped, non-empty line not starting with ``#`` is
``name:r,g,b:parts:actions`` with exactly four ``:``-separated fields; the name is verbatim
(inner spaces kept); an empty colour field means "no colour"; the line position is the label
index a 1-channel mask pixel refers to. Unlike CVAT we strip a UTF-8 BOM (legacy Windows
editors write one and CVAT then corrupts the first name) and refuse colour components outside
0..255 (they could never match a pixel), each with the line number.
"""

from __future__ import annotations

from dataclasses import dataclass

from smaskd.errors import InputError
from smaskd.model import RGB, Label
from smaskd.smask.colormap import voc_color

__all__ = [
    "HEADER",
    "LabelmapEntry",
    "categories_from_labelmap",
    "format_labelmap",
    "parse_labelmap",
    "voc_default_labelmap",
]

HEADER = "# label:color_rgb:parts:actions\n"


@dataclass(frozen=True, slots=True)
class LabelmapEntry:
    name: str
    color: RGB | None = None
    parts: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()


def parse_labelmap(text: str, source: str = "labelmap.txt") -> list[LabelmapEntry]:
    """Parse labelmap text; ``source`` names the file in error messages."""
    if text.startswith("\ufeff"):
        text = text[1:]
    entries: list[LabelmapEntry] = []
    seen: set[str] = set()
    # Only \n, \r and \r\n end a line, as in CVAT's reader (str.splitlines would also split
    # on \x0b, \x1c, \u2028 ... and so read some names differently from CVAT).
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        fields = line.split(":")
        if len(fields) != 4:
            raise InputError(
                f"label description has wrong number of fields {len(fields)}: expected 4 "
                f"':'-separated fields (name:r,g,b:parts:actions), got {line!r}",
                where,
            )
        name, color_text, parts_text, actions_text = fields
        if name in seen:
            raise InputError(f"label {name!r} is already defined in the label map", where)
        seen.add(name)
        entries.append(
            LabelmapEntry(
                name=name,
                color=_parse_color(name, color_text, where),
                parts=_split_list(parts_text),
                actions=_split_list(actions_text),
            )
        )
    return entries


def _parse_color(name: str, text: str, where: str) -> RGB | None:
    if not text.strip():
        return None
    parts = text.split(",")
    if len(parts) != 3:
        raise InputError(f"label {name!r} has wrong color {text!r}: expected an 'r,g,b' triplet", where)
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"label {name!r} has wrong color {text!r}: components must be integers", where
        ) from None
    if any(not 0 <= c <= 255 for c in rgb):
        raise InputError(f"label {name!r} has color {text!r} outside 0..255", where)
    return rgb  # type: ignore[return-value]


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",")) if text.strip() else ()


def format_labelmap(entries: list[LabelmapEntry]) -> str:
    """The exact text CVAT's exporter writes: header, one ``name:r,g,b:parts:actions`` line each."""
    lines = [HEADER]
    for e in entries:
        color = "" if e.color is None else ",".join(str(c) for c in e.color)
        lines.append(f"{e.name}:{color}:{','.join(e.parts)}:{','.join(e.actions)}\n")
    return "".join(lines)


def categories_from_labelmap(entries: list[LabelmapEntry]) -> list[Label]:
    """Label categories as the VOC reader builds them (§2.3).

    Labels in file order, then every distinct part name (sorted) as an extra label. If no
    entry has a colour, colours come from the VOC colormap by index (parts stay colourless);
    otherwise only listed colours are used.
    """
    part_names = sorted({p for e in entries for p in e.parts} - {e.name for e in entries})
    any_color = any(e.color is not None for e in entries)
    labels: list[Label] = []
    for i, e in enumerate(entries):
        color = e.color if any_color else voc_color(i)
        labels.append(Label(e.name, color))
    labels.extend(Label(p, None) for p in part_names)
    return labels


_VOC_NAMES = (
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog "
    "horse motorbike person pottedplant sheep sofa train tvmonitor"
).split()
_PERSON_ACTIONS = (
    "other jumping phoning playinginstrument reading ridingbike ridinghorse running "
    "takingphoto usingcomputer walking"
).split()


def voc_default_labelmap() -> list[LabelmapEntry]:
    """The Pascal VOC labels a zip without labelmap.txt gets (§2.4); ``ignored`` is VOC 255."""
    entries = [LabelmapEntry(n, voc_color(i)) for i, n in enumerate(_VOC_NAMES)]
    entries[15] = LabelmapEntry(
        "person", voc_color(15), ("foot", "hand", "head"), tuple(_PERSON_ACTIONS)
    )
    entries.append(LabelmapEntry("ignored", voc_color(255)))
    return entries
