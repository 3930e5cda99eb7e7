"""The one code path from a dropped file to a result, used by the CLI and the daemon's workers.

detect → read → convert → write, with the output published atomically. Pure: no logging,
no daemon imports; it returns a ``ConvertResult`` (counts and warnings) or raises a
``SmaskdError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from smaskd.atomicio import atomic_writer
from smaskd.errors import InputError, SmaskdError
from smaskd.geometry.limits import InputLimits

__all__ = [
    "ACTIONS",
    "ConvertOptions",
    "action_for",
    "ConvertResult",
    "convert_file",
    "export_file",
    "import_file",
    "output_suffix",
    "sniff_kind",
]

Kind = Literal["annotations", "masks"]
ACTIONS = ("export", "import", "auto")
MAX_JOBS = 256


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """Options a CLI flag or a routing rule's ``options:`` passes to the core."""

    labelmap: Path | None = None
    compat: str | None = None  # None (lossless, refuses CVAT's data loss) or "cvat"
    source_format: str = "auto"  # export: auto | coco | cvat | datumaro | labelme
    polygons: bool = False  # import: masks → polygons (CVAT's method)
    format: str = "coco"  # import output: coco | datumaro
    # Processes for the items of one large job (smaskd.smask.parallel). The library and the
    # daemon default to 1 (a daemon already runs jobs side by side); the CLI to the CPUs.
    jobs: int = 1
    # Set by callers, not by rule options: the dropped file's original name (the daemon's
    # claim renames it with a job-id prefix) and the input size cap.
    source_name: str | None = None
    max_input_bytes: int | None = None
    # Per-item bounds of an export (CLI flags, the daemon's config), not a rule option.
    limits: InputLimits = InputLimits()
    # ``on_progress(items_done, items_total, stage)`` through each pass over the items
    # (export: "checking", then "writing"; import: "converting"), for the CLI's progress
    # line; called in this process only, never pickled: the daemon leaves it None.
    on_progress: Callable[[int, int, str], None] | None = None

    @classmethod
    def from_mapping(cls, options: dict[str, Any], where: str = "options") -> "ConvertOptions":
        """Validate a rule's ``options`` mapping; errors name the key path."""
        known = {"labelmap", "compat", "from", "source_format", "polygons", "to_polygons", "format",
                 "jobs"}
        for key in options:
            if key not in known:
                raise InputError(f"unknown option {key!r}; expected one of {sorted(known)}", f"{where}.{key}")
        kw: dict[str, Any] = {}
        if options.get("labelmap") is not None:
            kw["labelmap"] = Path(str(options["labelmap"]))
        if options.get("compat") is not None:
            if options["compat"] != "cvat":
                raise InputError("expected 'cvat' or nothing", f"{where}.compat")
            kw["compat"] = "cvat"
        src = options.get("from", options.get("source_format"))
        if src is not None:
            if src not in ("auto", "coco", "cvat", "datumaro", "labelme"):
                raise InputError("expected auto|coco|cvat|datumaro|labelme", f"{where}.from")
            kw["source_format"] = src
        for key in ("polygons", "to_polygons"):
            if key in options:
                if not isinstance(options[key], bool):
                    raise InputError("expected true or false", f"{where}.{key}")
                kw["polygons"] = options[key]
        if "format" in options:
            if options["format"] not in ("coco", "datumaro"):
                raise InputError("expected coco|datumaro", f"{where}.format")
            kw["format"] = options["format"]
        if "jobs" in options:
            jobs = options["jobs"]
            if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= MAX_JOBS:
                raise InputError(f"expected an integer 1..{MAX_JOBS}", f"{where}.jobs")
            kw["jobs"] = jobs
        return cls(**kw)


@dataclass(slots=True)
class ConvertResult:
    action: str
    output: Path
    items: int = 0
    instances: int = 0
    labels: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The CLI's one-line summary."""
        from smaskd.words import count

        return (f"{self.action}: {self.output}: {count(self.items, 'item')}, "
                f"{count(self.instances, 'instance')}, {count(self.labels, 'label')}, "
                f"{count(len(self.warnings), 'warning')}")


def sniff_kind(path: Path) -> Kind | None:
    """What a file is, from its content (never its name): JSON by its first bytes, a zip by
    its directory (:mod:`smaskd.containers`: an export zip or backup is annotations)."""
    from smaskd.containers import sniff_file

    with open(path, "rb") as fh:
        return sniff_file(fh)


def _name_the_file(exc: SmaskdError, src: Path) -> None:
    """Make sure the error says which file it is about (readers may already have said so)."""
    where = exc.where or ""
    if src.name not in where:
        exc.where = f"{src}: {where}" if where else str(src)


def output_suffix(action: str) -> str:
    return ".zip" if action == "export" else ".json"


def _read_labelmap(path: Path | None):
    if path is None:
        return None
    from smaskd.smask.labelmap import parse_labelmap

    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"labelmap is not UTF-8 ({e.reason} at byte {e.start})", str(path)) from None
    return parse_labelmap(text, source=str(path))


def export_file(src: Path, dst: Path, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Annotation JSON → Segmentation Mask zip at ``dst`` (atomic)."""
    from smaskd.annotations.detect import read_annotations_compact
    from smaskd.smask.export import export_dataset

    from smaskd.containers import is_zip, read_annotation_zip

    labelmap = _read_labelmap(options.labelmap)
    limits = {} if options.max_input_bytes is None else {"max_bytes": options.max_input_bytes}
    with open(src, "rb") as fh:
        zipped = is_zip(fh)  # as sniffing decides it (a self-extractor's prefix included)
    if zipped:  # a CVAT export zip or task backup: a container of annotation files
        dataset = read_annotation_zip(Path(src), options.source_format,
                                      name=options.source_name,
                                      max_instances=options.limits.max_instances, **limits)
    else:
        dataset = read_annotations_compact(Path(src), options.source_format,
                                           name=options.source_name,
                                           max_instances=options.limits.max_instances,
                                           **limits)
    with atomic_writer(dst) as out:
        stats = export_dataset(dataset, out, labelmap=labelmap, compat=options.compat,
                               jobs=options.jobs, limits=options.limits,
                               on_progress=options.on_progress)
    return ConvertResult(
        "export", Path(dst), stats.items, stats.instances, stats.labels,
        list(dataset.warnings) + list(stats.warnings),
    )


def import_file(src: Path, dst: Path, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Segmentation Mask zip → annotation JSON at ``dst`` (atomic)."""
    from smaskd.importjob import import_masks

    labelmap = _read_labelmap(options.labelmap)
    with atomic_writer(dst) as out:
        stats = import_masks(Path(src), out, labelmap, fmt=options.format,
                             polygons=options.polygons, jobs=options.jobs,
                             spool_dir=Path(dst).parent, on_progress=options.on_progress)
    return ConvertResult(
        "import", Path(dst), stats.write.items, stats.write.instances, stats.labels,
        stats.warnings + list(stats.write.warnings),
    )


def action_for(kind: Kind | None) -> str | None:
    """What ``auto`` does with a file of ``kind``: annotations are exported, masks imported."""
    return {"annotations": "export", "masks": "import"}.get(kind or "")


def resolve_action(src: Path, action: str) -> str:
    """``auto`` → export for annotations (JSON, CVAT export zip or backup), import for a mask
    zip; decided by content (:func:`sniff_kind`)."""
    if action != "auto":
        return action
    resolved = action_for(sniff_kind(src))
    if resolved is None:
        raise InputError("neither annotation JSON nor a zip whose directory can be read "
                         "(checked the content; a zip still being written has no directory "
                         "yet)", str(src))
    return resolved


def convert_file(src: Path, dst: Path, action: str = "auto",
                 options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Run ``action`` (export | import | auto) on ``src``, writing ``dst`` atomically."""
    action = resolve_action(Path(src), action)
    if action == "export":
        return export_file(src, dst, options)
    if action == "import":
        return import_file(src, dst, options)
    raise InputError(f"unknown action {action!r}; expected export|import|auto")


def _locating(func):
    """Errors from the core name the input file, whichever layer raised them."""

    def wrapper(src: Path, dst: Path, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
        try:
            return func(src, dst, options)
        except SmaskdError as e:
            _name_the_file(e, Path(options.source_name or src))
            raise

    wrapper.__name__, wrapper.__doc__ = func.__name__, func.__doc__
    return wrapper


export_file = _locating(export_file)
import_file = _locating(import_file)
