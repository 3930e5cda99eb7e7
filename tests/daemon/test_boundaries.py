"""The core must not pull in the daemon's dependencies (structlog, yaml, watchdog)."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_no_daemon_dependencies() -> None:
    code = (
        "import sys, importlib, pkgutil, smaskd\n"
        "import smaskd.convert, smaskd.errors, smaskd.atomicio\n"
        "for sub in ('smaskd.smask', 'smaskd.annotations'):\n"
        "    pkg = importlib.import_module(sub)\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(f'{sub}.{m.name}')\n"
        "bad = sorted({'structlog', 'yaml', 'watchdog'} & set(sys.modules))\n"
        "bad += sorted(m for m in sys.modules if m.startswith(('smaskd.daemon', 'smaskd.log', 'smaskd.config')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
