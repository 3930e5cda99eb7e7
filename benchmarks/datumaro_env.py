"""Create the Datumaro comparison venv: ``benchmarks/.work/dm-venv``.

Datumaro is never a dependency of smaskd; it lives in its own venv, used only by
``benchmarks/run.py`` (through ``benchmarks/dm_chain.py``).

    python benchmarks/datumaro_env.py            # create or reuse
    python benchmarks/datumaro_env.py --force    # recreate

The 1.13 line is pinned (``datumaro==1.13.*``): the newest line on PyPI at the time
of writing. The machine's pip constraints file (/etc/xdg/pip/constraints.txt) is
bypassed for this venv only if the first install attempt fails because of it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
DM_VENV = HERE / ".work" / "dm-venv"
DM_SPEC = "datumaro==1.13.*"


def dm_python(root: Path = DM_VENV) -> Path:
    return root / "bin" / "python"


def is_ready(root: Path = DM_VENV) -> bool:
    py = dm_python(root)
    if not py.exists():
        return False
    r = subprocess.run([str(py), "-c", "import datumaro, cv2; print(datumaro.__version__)"],
                       capture_output=True, text=True)
    return r.returncode == 0


def dm_version(root: Path = DM_VENV) -> str:
    r = subprocess.run([str(dm_python(root)), "-c", "import datumaro; print(datumaro.__version__)"],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def _pip(py: Path, args: list[str], env: dict[str, str] | None = None) -> int:
    cmd = [str(py), "-m", "pip", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env=env).returncode


def ensure(root: Path = DM_VENV, force: bool = False) -> Path:
    if force and root.exists():
        shutil.rmtree(root)
    if is_ready(root):
        return dm_python(root)
    if not dm_python(root).exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
    py = dm_python(root)
    _pip(py, ["install", "-q", "--upgrade", "pip", "wheel", "setuptools"])
    # opencv-python-headless: the same OpenCV flavour smaskd uses (datumaro pulls
    # opencv-python otherwise; both provide cv2).
    pkgs = [DM_SPEC, "opencv-python-headless", "pycocotools"]
    if _pip(py, ["install", *pkgs]) != 0:
        env = dict(os.environ, PIP_CONSTRAINT="")
        print("retrying without the machine-wide pip constraints", flush=True)
        if _pip(py, ["install", *pkgs], env=env) != 0:
            raise SystemExit("could not install Datumaro into " + str(root))
    if not is_ready(root):
        raise SystemExit("Datumaro installed but `import datumaro, cv2` fails in " + str(root))
    print("datumaro", dm_version(root), "ready in", root, flush=True)
    return py


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="recreate the venv")
    ap.add_argument("--path", type=Path, default=DM_VENV)
    args = ap.parse_args(argv)
    ensure(args.path, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
