"""Where a daemon's ``state_dir`` is: one answer for the daemon and for ``smaskd status``.

Why one function: the journal, ``daemon.lock`` and ``status.json`` live in ``state_dir``, and
``smaskd status -c FILE`` is only useful if it looks where the daemon of ``FILE`` writes. The
daemon takes, in order, the config's ``state_dir``, systemd's ``$STATE_DIRECTORY`` (set by the
unit's ``StateDirectory=``), then a default. An operator's shell has no ``$STATE_DIRECTORY``,
so ``status`` (``find_service=True``) adds what the unit would have set, before the default:

1. ``state_dir`` in the config: the daemon uses it whatever its environment;
2. ``--instance NAME``: ``smaskd@NAME.service``'s ``/var/lib/smaskd/NAME``;
3. ``$STATE_DIRECTORY``, when the shell has it (``systemd-run``, an ``ExecCondition=``);
4. the unit's state directory for this config, if it holds a daemon's state (or cannot be
   listed by this user: then ``status`` says "unknown, run as the daemon's user", not "not
   running"): the template runs ``/etc/smaskd/NAME.yaml`` with ``/var/lib/smaskd/NAME``, the
   plain unit ``/etc/smaskd/smaskd.yaml`` with ``/var/lib/smaskd``, so the config's file name
   gives the instance;
5. the daemon's default: ``./.smaskd-state`` with no config file, else
   ``$XDG_STATE_HOME/smaskd`` (``~/.local/state/smaskd``).

``smaskd run`` by hand does not take 4: root running it would create root-owned journal files
the service's user could then not write. ``$SMASKD_SERVICE_STATE_ROOT`` replaces
``/var/lib/smaskd`` (a unit whose ``StateDirectory=`` was changed; tests).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["CONFIGURED", "SERVICE_ROOT_ENV", "StateDirError", "resolve_state_dir", "service_state_root"]

SERVICE_ROOT_ENV = "SMASKD_SERVICE_STATE_ROOT"
CONFIGURED = "state_dir in the config"
#: Files that only a daemon's state_dir holds (the journal, the daemon's lock).
_MARKERS = ("journal.sqlite", "daemon.lock")
#: A systemd instance name as a folder name: no "/", no "..", nothing hidden.
_INSTANCE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]{0,127}$")


class StateDirError(ValueError):
    """An instance name that cannot be a folder under the service's state root."""


def service_state_root() -> Path:
    """``/var/lib/smaskd``: the units' ``StateDirectory=smaskd`` (or ``smaskd/%i``)."""
    return Path(os.environ.get(SERVICE_ROOT_ENV) or "/var/lib/smaskd")


def _default(embedded: bool) -> Path:
    if embedded:  # the config-less default keeps state beside ./inbox and ./outbox
        return Path.cwd() / ".smaskd-state"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "smaskd"


def _may_hold_state(folder: Path) -> bool:
    """A daemon's state is there, or this user cannot tell (a 0750 folder of the service's user)."""
    for name in _MARKERS:
        try:
            os.stat(folder / name)
            return True
        except PermissionError:
            return True
        except OSError:
            continue
    return False


def _service_dir(config_file: Path) -> Path | None:
    """The unit's state directory for ``config_file`` if a daemon's state is there."""
    root = service_state_root()
    if config_file.stem == "smaskd":  # smaskd.service runs /etc/smaskd/smaskd.yaml
        folder = root  # not root/smaskd: in a 0750 root that could not even be looked for
    elif _INSTANCE.match(config_file.stem):  # smaskd@NAME runs /etc/smaskd/NAME.yaml
        folder = root / config_file.stem
    else:
        return None
    return folder if _may_hold_state(folder) else None


def resolve_state_dir(configured: Path | None, config_file: Path | None, *,
                      embedded: bool = False, instance: str | None = None,
                      find_service: bool = False) -> tuple[Path, str]:
    """``(state_dir, where it came from)``; the order is the module docstring's.

    ``configured``: the config's ``state_dir`` key; ``config_file``: the config's path;
    ``embedded``: no config file at all (``smaskd run`` alone); ``instance`` and
    ``find_service``: ``smaskd status``'s lookup.
    """
    if configured is not None:
        return configured, CONFIGURED
    if instance is not None:
        if not _INSTANCE.match(instance):
            raise StateDirError(f"{instance!r} is not an instance name (letters, digits, "
                                "'.', '_', '-', '@')")
        return (service_state_root() / instance,
                f"StateDirectory of smaskd@{instance}.service (--instance)")
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0]), "$STATE_DIRECTORY"
    if find_service and config_file is not None:
        found = _service_dir(config_file)
        if found is not None:
            unit = "smaskd.service" if found == service_state_root() else (
                f"smaskd@{found.name}.service")
            return found, f"StateDirectory of {unit} (named by the config file)"
    return _default(embedded), "the default (no state_dir, no $STATE_DIRECTORY)"
