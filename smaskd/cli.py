"""``smaskd ...``: the command line. ``main(argv) -> int`` never lets a traceback reach a user.

Exit codes (sysexits): 0 ok, 65 bad input data, 73 cannot create/write (permissions), 74 I/O
error, 75 busy (another daemon), 78 bad config, 70 internal error.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from smaskd import __version__
from smaskd.errors import SmaskdError, exit_code_for

__all__ = ["main"]

#: What ``smaskd --help`` says: for the person at the terminal (the module docstring is for
#: the developer).
DESCRIPTION = ("Convert annotation JSON (COCO, Datumaro, LabelMe) to CVAT's Segmentation mask "
               "1.1 zip and back, or run the watch-folder daemon that does it for dropped "
               "files. 'smaskd COMMAND --help' describes each command.")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="annotation JSON → Segmentation Mask zip")
    p.add_argument("input", type=Path, help="COCO instances, Datumaro or LabelMe JSON")
    p.add_argument("-o", "--output", type=Path, required=True, help="the zip to write")
    p.add_argument("--labelmap", type=Path, help="labelmap.txt giving label names and colours")
    p.add_argument("--from", dest="source_format", default="auto",
                   choices=["auto", "coco", "cvat", "datumaro", "labelme"],
                   help="the input's format (default: auto, decided by content)")
    p.add_argument("--compat", choices=["cvat"],
                   help="reproduce CVAT byte for byte, including its silent data loss")
    _add_limits(p)
    _add_jobs(p)
    _add_progress(p)


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="Segmentation Mask zip → annotation JSON")
    p.add_argument("input", type=Path, help="the mask zip")
    p.add_argument("-o", "--output", type=Path, required=True, help="the JSON to write")
    p.add_argument("--polygons", action="store_true", help="convert masks to polygons as CVAT does")
    p.add_argument("--format", default="coco", choices=["coco", "datumaro"],
                   help="the JSON to write (default: coco)")
    p.add_argument("--labelmap", type=Path, help="labelmap.txt overriding or supplying the zip's")
    _add_jobs(p)
    _add_progress(p)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    from smaskd.convert import MAX_JOBS

    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"expected an integer 1..{MAX_JOBS}, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_limits(p: argparse.ArgumentParser) -> None:
    from smaskd.geometry.limits import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_POLYGON_POINTS

    p.add_argument("--max-polygon-points", type=_positive, default=DEFAULT_MAX_POLYGON_POINTS,
                   metavar="N", help="refuse a polygon with more points "
                   f"(default {DEFAULT_MAX_POLYGON_POINTS})")
    p.add_argument("--max-instances", type=_positive, default=DEFAULT_MAX_INSTANCES,
                   metavar="N", help="refuse an item with more mask shapes "
                   f"(default {DEFAULT_MAX_INSTANCES})")


def _add_jobs(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", type=_jobs, default=None, metavar="N",
                   help="processes for the items of a large job (default: the CPUs available)")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress line on stderr (items, rate, ETA) for a job that runs more "
                   "than a second (default: only when stderr is a terminal)")


def _progress_line(args: argparse.Namespace):
    """The listener for the core's ``on_progress``, or None: a terminal on stderr decides,
    unless ``--progress``/``--no-progress`` says."""
    wanted = sys.stderr.isatty() if args.progress is None else args.progress
    if not wanted:
        return None
    from smaskd.progress import ProgressLine, progress_after

    return ProgressLine(sys.stderr, args.command, after=progress_after())


def build_parser(daemon_commands: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smaskd", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"smaskd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_export(sub)
    _add_import(sub)
    if daemon_commands:  # imports the daemon's config and journal: ~40 ms a convert can skip
        from smaskd.daemon.commands import add_daemon_commands

        add_daemon_commands(sub)
    return parser


def _unusable_paths(args: argparse.Namespace) -> tuple[int, str] | None:
    """(exit code, message) for paths that cannot work, checked before any work is done.

    A missing input is EX_NOINPUT (66), a missing or unwritable output folder EX_IOERR (74):
    both named as the user typed them, not as the temp file they would have become.
    """
    if str(args.output) == "-":  # a zip is written by seek and rename: it cannot stream
        return 64, ("-o -: writing to stdout is not supported (the output is written to a "
                    "temporary file and renamed); give a file name")
    src, dst = Path(args.input), Path(args.output)
    if not src.exists():
        return 66, f"{src}: no such file"
    if src.is_dir():
        return 66, f"{src}: is a folder; expected a file"
    folder = dst.parent
    if not folder.is_dir():
        return 74, f"{dst}: output folder {folder} does not exist"
    if dst.is_dir():
        return 74, f"{dst}: is a folder; expected a file name"
    if not os.access(folder, os.W_OK):
        return 74, f"{dst}: output folder {folder} is not writable"
    return None


class _Stopped(SystemExit):
    """SIGTERM/SIGHUP as an exception: ``atomic_writer`` removes its hidden temp file on the way
    out, where the default action would kill the process and leave ``.name.zip.XXXX.tmp``."""


def _exit_cleanly_on_signals() -> None:
    def stop(signum: int, frame: object) -> None:
        raise _Stopped(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)  # SIGINT already raises KeyboardInterrupt


def _run_convert(args: argparse.Namespace) -> int:
    from smaskd.convert import ConvertOptions, export_file, import_file
    from smaskd.procs import keep_heap_between_items
    from smaskd.geometry.limits import InputLimits
    from smaskd.smask.parallel import default_jobs

    problem = _unusable_paths(args)
    if problem:
        print(f"smaskd {args.command}: error: {problem[1]}", file=sys.stderr)
        return problem[0]
    keep_heap_between_items()  # one file, then exit: see procs.py
    _exit_cleanly_on_signals()
    jobs = args.jobs or default_jobs()
    progress = _progress_line(args)
    try:
        if args.command == "export":
            limits = InputLimits(args.max_polygon_points, args.max_instances)
            options = ConvertOptions(labelmap=args.labelmap, compat=args.compat,
                                     source_format=args.source_format, jobs=jobs, limits=limits,
                                     on_progress=progress)
            result = export_file(args.input, args.output, options)
        else:
            options = ConvertOptions(labelmap=args.labelmap, polygons=args.polygons,
                                     format=args.format, jobs=jobs, on_progress=progress)
            result = import_file(args.input, args.output, options)
    finally:  # an error, Ctrl-C or SIGTERM/SIGHUP (_Stopped) starts on a clean line too
        if progress:
            progress.clear()
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.summary())
    return 0


def _reader_gone(code: int | None) -> int:
    """stdout's reader went away (``smaskd status | head``): not an error, no traceback. stdout
    now points at /dev/null, so the interpreter's last flush cannot fail again; the command's
    own exit code is kept (a probe's status), else 141 as a shell reports SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141 if code is None else code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(daemon_commands=not argv or argv[0] not in ("export", "import"))
    args = parser.parse_args(argv)
    code: int | None = None
    try:
        if args.command in ("export", "import"):
            code = _run_convert(args)
        else:
            code = args.handler(args)
        sys.stdout.flush()  # a closed pipe raises here, inside the handlers below
        return code
    except BrokenPipeError:
        return _reader_gone(code)
    except SmaskdError as e:
        print(f"smaskd {args.command}: error: {e}", file=sys.stderr)
        for note in getattr(e, "__notes__", []):
            print(f"  {note}", file=sys.stderr)
        return exit_code_for(e)
    except FileNotFoundError as e:
        print(f"smaskd {args.command}: error: {e.filename}: no such file", file=sys.stderr)
        return 66 if args.command in ("export", "import") else 74
    except OSError as e:
        print(f"smaskd {args.command}: error: {e}", file=sys.stderr)
        return 74
    except KeyboardInterrupt:
        return 130
    except _Stopped as e:
        return int(e.code or 1)
    except Exception as e:  # a bug: say so plainly, without a traceback wall
        print(f"smaskd {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
