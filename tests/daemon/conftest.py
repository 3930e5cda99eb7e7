"""Fixtures for daemon tests: a real ``smaskd run`` subprocess, a notify socket, tiny inputs.

Nothing is mocked: the daemon runs as ``python -m smaskd run`` on tmp folders, files are
dropped the ways real writers drop them, and the test reads the folders, the journal, the
JSON lines on stdout and the datagrams on a NOTIFY_SOCKET it bound itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CORPUS_INPUT = Path(os.environ.get("SMASKD_CORPUS", REPO.parent / "shared" / "corpus")) / \
    "golden" / "s01a_polygons_basic" / "input"


def coco(label: str = "cat", width: int = 8, height: int = 6) -> dict[str, Any]:
    """A tiny COCO instances file the export core accepts."""
    return {
        "images": [{"id": 1, "file_name": "img1.png", "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 15.0,
                         "bbox": [1, 1, 5, 3], "segmentation": [[1, 1, 6, 1, 6, 4, 1, 4]]}],
        "categories": [{"id": 1, "name": label}],
    }


def coco_bytes(label: str = "cat") -> bytes:
    return json.dumps(coco(label)).encode()


def base_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "workers": 2,
        "state_dir": str(tmp / "state"),
        "host_id": "testhost",
        "drain_timeout": "10s",
        "log_level": "debug",
        "inboxes": [{"name": "in", "path": str(tmp / "inbox"), "settle": "0.3s", "rescan": "5s"}],
        "rules": [{"name": "auto", "action": "auto", "outbox": str(tmp / "outbox")}],
    }
    config.update(overrides)
    return config


class NotifySocket:
    """A datagram socket standing in for systemd; collects every message."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="smn")  # AF_UNIX paths must stay short
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return

    def lines(self) -> list[str]:
        return [line for m in list(self.messages) for line in m.splitlines()]

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


NOBODY = 65534


def as_nobody() -> list[str]:
    """A command prefix that runs the rest as user ``nobody`` (uid/gid 65534, no groups).

    It keeps only CAP_DAC_READ_SEARCH (read and list anything, write nothing more than
    nobody may): this machine's interpreter lives under ``/root`` (mode 0700), which nobody
    could not even execute otherwise. Every write check, the sticky bit included, applies to
    the daemon exactly as to an unprivileged user. Tests that need it skip when not root.
    """
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv(1) to run the daemon as another user")
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


class Daemon:
    """``python -m smaskd run`` as a subprocess, with its stdout parsed as JSON lines."""

    def __init__(self, tmp: Path, config: dict[str, Any] | None, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, prefix: list[str] | None = None) -> None:
        self.prefix = prefix or []
        self.tmp = tmp
        self.config_path = tmp / "smaskd.yaml"
        if config is not None:
            self.config_path.write_text(yaml.safe_dump(config))
        self.args = (["-c", str(self.config_path)] if config is not None else []) + list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.notify = NotifySocket()
        if self.prefix:  # another user: it must be able to reach the socket
            os.chmod(self.notify.dir, 0o755)
            os.chmod(self.notify.path, 0o777)
        self.env["NOTIFY_SOCKET"] = self.notify.path
        self.lines: list[str] = []
        #: ``lines`` parsed so far: ``wait_for`` polls every 50 ms, and parsing every line again
        #: each time made a chatty daemon's test spend seconds of CPU on its own bookkeeping
        self._parsed: list[dict[str, Any]] = []
        self._parsing = threading.Lock()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "smaskd", "run",
                                      *self.args],
                                     cwd=self.tmp, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._parsing:
            parsed = self._parsed
            for line in self.lines[len(parsed):]:  # only what arrived since the last call
                parsed.append(json.loads(line))
            return [e for e in parsed if name is None or e.get("event") == name]

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc and self.proc.poll() is not None and not predicate():
                break
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or predicate}; stdout:\n"
                             + "".join(self.lines[-40:]) + self.stderr())

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_for(lambda: "READY=1" in self.notify.lines(), timeout, "READY=1")

    def stderr(self) -> str:
        if self.proc and self.proc.poll() is not None and self.proc.stderr:
            return self.proc.stderr.read()
        return ""

    def signal(self, sig: int) -> None:
        assert self.proc
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            time.sleep(0.05)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.notify.close()


@pytest.fixture
def daemon_factory(tmp_path: Path):
    made: list[Daemon] = []

    def make(config: dict[str, Any] | None, *args: str, env: dict[str, str] | None = None,
             prefix: list[str] | None = None) -> Daemon:
        d = Daemon(tmp_path, config, args, env, prefix)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def journal_rows(state_dir: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(state_dir / "journal.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY created")]
    finally:
        db.close()


def files(folder: Path) -> list[str]:
    """Visible file names in a folder (hidden staging names would be a bug, so list them too)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() or p.is_symlink())


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` (root only; skips with the reason if not)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a filesystem of a known size needs a tmpfs mount, which needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
