"""Issue 17: ``smaskd status`` finds the service's journal the way the service does.

Under systemd the daemon gets ``$STATE_DIRECTORY`` (``StateDirectory=smaskd`` or
``smaskd/%i``) and the shipped configs set no ``state_dir``; an operator's shell has no
``$STATE_DIRECTORY``, so ``status -c /etc/smaskd/site-a.yaml`` looked in
``~/.local/state/smaskd`` and said "not running" about a running service. Here the unit is
simulated: a real daemon with ``STATE_DIRECTORY`` set, and ``SMASKD_SERVICE_STATE_ROOT``
standing for ``/var/lib/smaskd``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from smaskd.daemon.journal import Journal
from tests.daemon.conftest import base_config


def _shell_env(tmp: Path, root: Path) -> dict[str, str]:
    """An admin's shell: no $STATE_DIRECTORY, its own (empty) default state folder."""
    env = {k: v for k, v in os.environ.items() if k != "STATE_DIRECTORY"}
    env.update(XDG_STATE_HOME=str(tmp / "home-state"), SMASKD_SERVICE_STATE_ROOT=str(root))
    return env


def _status(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smaskd", "status", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def _unit_config(tmp: Path, name: str) -> Path:
    config = base_config(tmp)
    del config["state_dir"]  # as shipped: the unit's StateDirectory decides
    (tmp / "etc").mkdir(exist_ok=True)
    path = tmp / "etc" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_status_finds_a_template_instance_without_state_directory(tmp_path: Path,
                                                                  daemon_factory) -> None:
    root = tmp_path / "var-lib-smaskd"
    config = _unit_config(tmp_path, "site-a")
    (tmp_path / "inbox").mkdir()
    env = _shell_env(tmp_path, root)
    d = daemon_factory(None, "-c", str(config),
                       env={**env, "STATE_DIRECTORY": str(root / "site-a")}).start()
    d.wait_ready()
    assert (root / "site-a" / "journal.sqlite").exists()  # the daemon used $STATE_DIRECTORY

    by_config = _status(env, "-c", config)
    assert by_config.returncode == 0, by_config.stdout + by_config.stderr  # before: 3
    assert f"daemon: running (pid {d.proc.pid}" in by_config.stdout
    assert f"state_dir: {root / 'site-a'} (StateDirectory of smaskd@site-a.service" \
        in by_config.stdout

    by_instance = _status(env, "--instance", "site-a", "--json")
    report = json.loads(by_instance.stdout)
    assert by_instance.returncode == 0 and report["pid"] == d.proc.pid, by_instance.stdout
    assert report["state_dir"] == str(root / "site-a")

    bad = _status(env, "--instance", "../site-a")
    assert bad.returncode == 78 and "--instance" in bad.stderr, bad.stderr
    assert d.stop() == 0
    assert _status(env, "-c", config).returncode == 3  # found, and stopped


def test_status_finds_the_plain_unit_journal_and_keeps_the_configs_state_dir(
        tmp_path: Path) -> None:
    root = tmp_path / "var-lib-smaskd"
    Journal(root).close()  # what smaskd.service left in /var/lib/smaskd
    config = _unit_config(tmp_path, "smaskd")
    env = _shell_env(tmp_path, root)
    out = _status(env, "-c", config)
    assert out.returncode == 3 and f"journal: {root / 'journal.sqlite'}" in out.stdout, out.stdout
    assert "StateDirectory of smaskd.service" in out.stdout

    other = _unit_config(tmp_path, "lab")  # no journal under root/lab: the daemon's default
    out = _status(env, "-c", other)
    assert f"state_dir: {tmp_path / 'home-state' / 'smaskd'} (the default" in out.stdout, out.stdout

    explicit = base_config(tmp_path)  # a config's state_dir wins, as it does for the daemon
    config.write_text(yaml.safe_dump(explicit))
    out = _status(env, "-c", config, "--instance", "x")
    assert f"state_dir: {tmp_path / 'state'} (state_dir in the config)" in out.stdout, out.stdout
