"""The name a result is published under: the input's stem, made safe for Windows clients.

Why: outboxes are usually SMB shares read from Windows. A result called ``NUL.zip``,
``COM1.zip``, ``a:b.zip``, ``star*q?.zip`` or ``x\\y.zip`` is a valid Linux name that a Windows
client cannot open, copy or even delete (Explorer shows it, then fails). So the stem of every
published name goes through :func:`windows_safe`, a small documented mapping (README, "Output
names"):

* each of ``< > : " / \\ | ? *`` and each control character (U+0000 to U+001F) becomes ``_``;
* trailing dots and spaces become ``_`` (Windows strips them, so ``a.`` and ``a`` collide);
* a reserved device name (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``COM9``, ``LPT0``-``LPT9``,
  also with superscript digits, ``CONIN$``, ``CONOUT$``; any case, with or without an
  extension: ``nul.tar`` is the device too) gets ``_`` appended to its first part:
  ``NUL`` → ``NUL_``, ``com1.tar`` → ``com1_.tar``.

Two inputs that map to one name (``a:b.json`` and ``a?b.json``) are a name conflict like any
other, settled by the rule's ``on_conflict``. The job log keeps the original input name. A failed
input keeps its own name in ``failed/`` (it is the user's file), but its report there is
named by :func:`report_name`, mapped the same way, with a keep-both ``-1`` when another job's
report has that name (:func:`free_report_name`). Kept
apart from ``outbox.py`` (how files are written) because this is only about *which* name.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from smaskd.daemon import dirs
from smaskd.daemon.outbox import name_variants, output_stem, split_name

__all__ = ["REPORT_SUFFIX", "WINDOWS_RESERVED", "folder_in_the_way", "free_report_name",
           "published_stem", "report_name", "windows_safe"]

REPORT_SUFFIX = ".error.json"

_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
_TRAILING = re.compile(r"[. ]+$")
_DIGITS = "0123456789\u00b9\u00b2\u00b3"
#: Device names Windows reserves in every folder, compared case-insensitively.
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{d}" for dev in ("COM", "LPT") for d in _DIGITS})


def windows_safe(stem: str) -> str:
    """``stem`` mapped so that ``stem + suffix`` opens on a Windows client (see the module)."""
    safe = _FORBIDDEN.sub("_", stem)
    safe = _TRAILING.sub(lambda m: "_" * len(m.group()), safe)
    first, dot, rest = safe.partition(".")
    if first.rstrip(" ").upper() in WINDOWS_RESERVED:
        safe = f"{first}_{dot}{rest}"
    return safe or "_"


def published_stem(input_name: str) -> str:
    """The stem results of ``input_name`` are published under (before ``on_conflict``)."""
    return windows_safe(output_stem(input_name))


def report_name(input_name: str) -> str:
    """The name of the failure report beside a failed input in ``failed/``.

    The input keeps its own name (it is the user's file, moved, not renamed), but the report
    is ours and is read from the same shares as the outbox, so it is mapped like a published
    name; the report holds the original name (``input``). The whole name is mapped, its
    extension too: ``NUL.json.error.json`` is the device on Windows as ``NUL.zip`` is.
    """
    return f"{windows_safe(input_name)}{REPORT_SUFFIX}"


def free_report_name(folder: Path, input_name: str, job_id: str) -> str:
    """:func:`report_name`, or its keep-both variant when another job's report has it.

    Why: the mapping is not one-to-one, so ``a:b.json`` and ``a?b.json`` (each keeping its own
    name in failed/) would get one report ``a_b.json.error.json``, the second overwriting the
    first. A report there that is this job's own (a re-run after a crash: recovery finishing
    the failure again) is reused, so a re-run never leaves a second report; any other name
    there (another job's report, a file or folder of someone else's, an unreadable one) is
    passed over for ``a_b-1.json.error.json``, ``a_b-2...`` as the outbox keeps both. Looked
    up through failed/'s descriptor, never following a symlink; any other error (the folder
    swapped, an I/O error) is raised, as writing the report would."""
    place = dirs.place(folder)
    base, suffix = split_name(windows_safe(input_name))
    for stem in name_variants(base):
        name = f"{stem}{suffix}{REPORT_SUFFIX}"
        try:
            if not stat.S_ISREG(place.lstat(name).st_mode):
                continue  # a folder, a symlink: not ours to replace
            data = place.read_bytes(name)
        except FileNotFoundError:
            return name
        except PermissionError:  # someone else's file: not ours to replace
            continue
        try:
            if json.loads(data).get("job_id") == job_id:
                return name
        except (ValueError, AttributeError):  # not a report of ours
            continue
    raise AssertionError("unreachable")


def folder_in_the_way(folder: Path, stem: str, suffixes: list[str]) -> Path | None:
    """The first of ``stem + suffix`` in ``folder`` that is a directory, or None.

    ``on_conflict: replace`` renames a file over the old one; over a directory ``rename()``
    fails (EISDIR), and a job retried on that forever is never done. A directory there is
    somebody's data that smaskd will not delete, so the job keeps both instead (README).
    """
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                return path
        except OSError:
            continue
    return None
