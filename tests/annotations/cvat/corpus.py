"""The tracks corpus (``../shared/corpus/tracks``): which cases, which input, what to expect.

Every case has ``input/scene.json`` (a task bundle); some also ``input/backup.zip``. A
source's expectation is ``expected/`` unless the case has ``expected_<source>/`` (a backup
can restore with a different overlap than the live task had). To add a source, add it to
:data:`SOURCES` with the input file it reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CORPUS

TRACKS = CORPUS / "tracks"

#: source → its input file inside a case
SOURCES = {"bundle": "input/scene.json", "backup": "input/backup.zip"}

needs_tracks = pytest.mark.skipif(
    not (TRACKS / "README.md").is_file(),
    reason=f"tracks corpus not found at {TRACKS} (set SMASKD_CORPUS to run these)",
)


def cases() -> list[str]:
    if not TRACKS.is_dir():
        return []
    return sorted(p.name for p in TRACKS.iterdir() if (p / "input").is_dir())


def case_params() -> list:
    """``(case, source)`` for every case that has that source's input."""
    return [pytest.param(c, s, id=f"{c}-{s}") for c in cases() for s, rel in SOURCES.items()
            if (TRACKS / c / rel).is_file()]


def input_path(case: str, source: str) -> Path:
    return TRACKS / case / SOURCES[source]


def expected_dir(case: str, source: str) -> Path:
    special = TRACKS / case / f"expected_{source}"
    return special if special.is_dir() else TRACKS / case / "expected"


def fails_in_cvat(case: str, source: str) -> bool:
    return (expected_dir(case, source) / "error.txt").is_file()
