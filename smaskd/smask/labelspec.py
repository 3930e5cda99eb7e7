"""The labels of a mask zip (FORMAT.md §2): where they come from, and what decoding needs.

Sources, the first present wins (step 3 of :mod:`smaskd.smask.load`): ``--labelmap`` (the
caller's), ``dataset_meta.json`` (Datumaro: ``label_map`` or ``labels``, colours and parts),
``labelmap.txt``, labelme's ``class_names.txt`` (VOC colours by index), the Pascal VOC
defaults. Whatever the source, a label named ``ignored`` receives the VOC void value (as
in CVAT's defaults, where ``ignored`` is coloured (224, 224, 192)).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from smaskd.errors import InputError
from smaskd.model import RGB, Label, resolve_background
from smaskd.safezip import SafeZip
from smaskd.smask.labelmap import (
    LabelmapEntry,
    categories_from_labelmap,
    parse_labelmap,
    voc_default_labelmap,
)

__all__ = ["MAX_TEXT_BYTES", "VOID_LABEL", "LabelSpec", "archive_labels", "read_text",
           "resolve_background"]

MAX_TEXT_BYTES = 16 << 20  # labelmap, lists, dataset_meta.json


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """Everything decoding needs to know about the labels."""

    labels: list[Label]
    colors: dict[RGB, int]  # colour → label index, last duplicate wins (as CVAT)
    n_indexed: int  # labelmap lines: the valid raw indices of 1-channel PNGs
    background: int | None
    void: int | None  # the label VOC void pixels take (``ignored``); None: they are dropped
    source: str


VOID_LABEL = "ignored"


def _spec(entries: list[LabelmapEntry], source: str) -> LabelSpec:
    labels = categories_from_labelmap(entries)
    colors: dict[RGB, int] = {}
    for i, lab in enumerate(labels[: len(entries)]):
        if lab.color is not None:
            colors[lab.color] = i  # later labels overwrite: the last duplicate wins
    void = next((i for i, e in enumerate(entries) if e.name == VOID_LABEL), None)
    return LabelSpec(labels, colors, len(entries), resolve_background(labels), void, source)


def read_text(zf: SafeZip, name: str) -> str:
    """A UTF-8 text member (labelmap, list, meta), without a BOM."""
    data = zf.read(name, MAX_TEXT_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})", name) from None
    return text[1:] if text.startswith("\ufeff") else text


def _meta_entries(zf: SafeZip, name: str) -> list[LabelmapEntry]:
    """``dataset_meta.json`` (§2.3): ``label_map`` {"i": name} or ``labels``, colours aligned."""
    try:
        meta = json.loads(read_text(zf, name), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise InputError(f"invalid JSON ({e})", name) from None
    if not isinstance(meta, dict):
        raise InputError("expected a JSON object", name)
    if isinstance(meta.get("label_map"), dict):
        try:
            pairs = sorted((int(k), v) for k, v in meta["label_map"].items())
        except (TypeError, ValueError):
            raise InputError("label_map keys must be integers", f"{name}: label_map") from None
        names = [v for _, v in pairs]
    elif isinstance(meta.get("labels"), list):
        names = meta["labels"]
    else:
        raise InputError("expected 'label_map' (object) or 'labels' (list)", name)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise InputError("label names must be distinct strings", f"{name}: labels")
    colors = meta.get("segmentation_colors") or []
    if not isinstance(colors, list):
        raise InputError("expected a list of [r, g, b]", f"{name}: segmentation_colors")
    entries = []
    for i, n in enumerate(names):
        color = None
        if i < len(colors) and colors[i] is not None:
            c = colors[i]
            if not (isinstance(c, list) and len(c) == 3
                    and all(isinstance(v, int) and 0 <= v <= 255 for v in c)):
                raise InputError(f"expected [r, g, b] in 0..255, got {c!r}",
                                 f"{name}: segmentation_colors[{i}]")
            color = (c[0], c[1], c[2])
        entries.append(LabelmapEntry(n, color, _meta_parts(meta, n, name)))
    return entries


def _meta_parts(meta: dict, label: str, name: str) -> tuple[str, ...]:
    """``parts`` {label: [part, ...]}; anything else would turn into nonsense label names."""
    parts = meta.get("parts") or {}
    if not isinstance(parts, dict):
        raise InputError("expected an object {label: [part names]}", f"{name}: parts")
    value = parts.get(label) or []
    if not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
        raise InputError(f"expected a list of part names, got {value!r}"[:200],
                         f"{name}: parts.{label}")
    return tuple(value)


def _no_constant(value: str) -> None:
    raise ValueError(f"{value} is not valid JSON")


def archive_labels(zf: SafeZip, root: str, user: list[LabelmapEntry] | None,
                   warnings: list[str]) -> LabelSpec:
    """Step 3 of :mod:`smaskd.smask.load`: the first of these sources that exists."""
    meta, lmap, classes = (f"{root}dataset_meta.json", f"{root}labelmap.txt",
                           f"{root}class_names.txt")
    if user is not None:
        if lmap in zf or meta in zf:
            warnings.append("labels come from the given labelmap; the archive's own is ignored")
        return _spec(user, "--labelmap")
    if meta in zf:
        return _spec(_meta_entries(zf, meta), meta)
    if lmap in zf:
        return _spec(parse_labelmap(read_text(zf, lmap), source=lmap), lmap)
    if classes in zf:
        entries = [LabelmapEntry(line.strip()) for line in read_text(zf, classes).splitlines()
                   if line.strip()]
        warnings.append(f"no labelmap.txt: labels taken from labelme's {classes} "
                        f"({len(entries)} names, VOC colours by index)")
        return _spec(entries, classes)
    return _spec(voc_default_labelmap(), "Pascal VOC defaults")
