"""The fork server's preload list names modules that exist.

``multiprocessing``'s fork server ignores a preload module it cannot import, so a module
renamed or deleted (``annotations/compact.py`` became part of ``detect.py``) would silently
cost every job ~100 ms of imports again; this makes the rename fail loudly instead.
"""

from __future__ import annotations

import importlib

import pytest

from smaskd.daemon.workers import PRELOAD


@pytest.mark.parametrize("module", PRELOAD)
def test_every_preloaded_module_imports(module: str) -> None:
    importlib.import_module(module)
