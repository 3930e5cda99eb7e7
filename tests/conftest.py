"""Shared fixtures: where the conformance corpus lives, and how to run the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: ../shared/corpus beside the clone (read-only in CI); SMASKD_CORPUS overrides.
CORPUS = Path(os.environ.get("SMASKD_CORPUS", REPO.parent / "shared" / "corpus"))
GOLDEN = CORPUS / "golden"


def corpus_available() -> bool:
    return (GOLDEN / "manifest.json").is_file()


needs_corpus = pytest.mark.skipif(
    not corpus_available(),
    reason=f"conformance corpus not found at {CORPUS} (a user's clone has no ../shared; "
    "set SMASKD_CORPUS to run these)",
)


def golden_cases(prefix: str) -> list[str]:
    """Names of golden case folders starting with ``prefix`` ('s' scenes, 'imp' imports)."""
    if not corpus_available():
        return []
    return sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name.startswith(prefix))


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m smaskd ARGS`` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "smaskd", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )
