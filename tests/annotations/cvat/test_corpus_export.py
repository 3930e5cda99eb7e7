"""Conformance: CVAT's own task data exported with ``--compat cvat`` equals CVAT's export.

For every case of ``../shared/corpus/tracks`` and every source it has (:mod:`.corpus`):
the real CLI exports it, and the zip has exactly the members of CVAT's ``mask.zip`` (same
PNG pixels, same list files and labelmap); where CVAT's export failed, the CLI exits 65 and
names the track and the frames.
"""

from __future__ import annotations

import re

import pytest

from tests.annotations.cvat.corpus import (
    case_params,
    expected_dir,
    fails_in_cvat,
    input_path,
    needs_tracks,
)
from tests.conftest import run_cli
from tests.smask.test_export_golden import assert_same_archive


@needs_tracks
@pytest.mark.parametrize(("case", "source"), case_params())
def test_export_equals_cvat(case, source, tmp_path):
    out = tmp_path / "out.zip"
    result = run_cli("export", input_path(case, source), "-o", out, "--compat", "cvat")
    if fails_in_cvat(case, source):
        assert result.returncode == 65, result.stderr
        message = result.stderr
        assert re.search(r"track id \d+", message), message
        assert re.search(r"frame \d+", message), message
        assert not out.exists()
        return
    assert result.returncode == 0, result.stderr
    assert_same_archive(out.read_bytes(), (expected_dir(case, source) / "mask.zip").read_bytes())
