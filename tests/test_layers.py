"""The layering of ``smaskd/`` (``[tool.importlinter]`` in pyproject.toml) holds.

``.ci/run`` runs ``lint-imports`` before pytest; this runs the same check inside the test suite
too, so a branch that adds a forbidden import (the core importing the daemon or logging, one
format importing the other, an import cycle, a module placed in no layer) fails the suite it
runs before landing, with import-linter's report of which import breaks which contract.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

_LINT = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"


def test_import_contracts_hold() -> None:
    out = subprocess.run([sys.executable, "-c", _LINT, "--no-cache", "--no-logo"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout, out.stdout
