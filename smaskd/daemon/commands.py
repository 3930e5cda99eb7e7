"""``smaskd run | check-config | route | status``: the daemon's command-line surface.

Each handler returns an exit code and raises ``SmaskdError`` for the CLI's one error table
(``ConfigError`` → 78), so ``check-config``, start-up and SIGHUP share one validator and one
message format (``rules[1].action: expected export|import|auto``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from smaskd.config import Config, config_warnings, default_config, load_config
from smaskd.errors import BusyError, ConfigError, SmaskdError, exit_code_for

__all__ = ["add_daemon_commands"]


def _config(path: Path | None, host_id: str | None = None, check_folders: bool = True) -> Config:
    config = load_config(path, check_folders) if path else default_config(host_id)
    if host_id:
        if not host_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError("expected letters, digits, '.', '_' or '-'", "--host-id")
        config = dataclasses.replace(config, host_id=host_id)
    return config


def _run(args: argparse.Namespace) -> int:
    from smaskd import log as logsetup
    from smaskd.daemon.service import Service

    config = _config(args.config, args.host_id)
    logsetup.configure(config.log_level)
    log = logsetup.get_logger("smaskd.daemon")
    for key, message in config_warnings(config):
        log.warning("config.warning", key=key, warning=message)
    try:
        return Service(config, log, once=args.once, host_override=args.host_id).run()
    except SmaskdError as e:  # the CLI prints it too; the log is what systemd's journal keeps
        event = {ConfigError: "daemon.config_error", BusyError: "daemon.busy"}.get(
            type(e), "daemon.start_failed")
        log.error(event, error=str(e), exit_code=exit_code_for(e))
        raise


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    for key, message in config_warnings(config):
        print(f"smaskd check-config: warning: {key}: {message}", file=sys.stderr)
    print(f"{args.file}: ok: {len(config.inboxes)} inbox(es), {len(config.rules)} rule(s), "
          f"unmatched: {config.unmatched}")
    return 0


def _route(args: argparse.Namespace) -> int:
    from smaskd.daemon.routing import find_inbox, route, safe_kind

    from smaskd.convert import action_for

    config = _config(args.config)
    for path in args.paths:
        inbox, rel = find_inbox(config, path)
        rule = route(config, inbox, rel, lambda p=path: safe_kind(p) if p.exists() else None)
        where = f"inbox {inbox}" if inbox else "outside every inbox"
        if rule is None:
            print(f"{path}: no rule matched ({where}); unmatched: {config.unmatched}")
        else:
            action = rule.action
            if action == "auto":  # what the daemon's worker would do, decided the same way
                resolved = action_for(safe_kind(path)) if path.exists() else None
                action = f"auto ({resolved or 'unknown content: the job would fail'})"
            print(f"{path}: rule {rule.name} ({where}) → action {action} → outbox {rule.outbox}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from smaskd.daemon.journal import STATES, Journal
    from smaskd.daemon.statusfile import describe, read_status

    config = _config(args.config, check_folders=False)  # aliased folders are what it reports
    live = read_status(config.state_dir)
    if live is not None:  # the daemon's own STATUS line: says *why* jobs wait, if they do
        print("\n".join(describe(live)))
    try:
        journal = Journal(config.state_dir, create=False)
    except FileNotFoundError:
        print(f"no journal in {config.state_dir} (the daemon has not run with this state_dir)")
        return 0
    try:
        counts = journal.counts()
        print(f"journal: {journal.path}")
        print("jobs: " + ", ".join(f"{s}={counts.get(s, 0)}" for s in STATES))
        failures = journal.last_failures(args.failures)
        if failures:
            print("last failures:")
        for row in failures:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.updated))
            print(f"  {when}  {row.job_id}  {row.inbox}/{row.name}  rule={row.rule}  "
                  f"attempts={row.attempts}  {row.error}")
    finally:
        journal.close()
    return 0


def add_daemon_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``run``, ``check-config``, ``route`` and ``status`` to the CLI's subparsers."""
    p = sub.add_parser("run", help="watch inbox folders and convert what is dropped there")
    p.add_argument("-c", "--config", type=Path, help="YAML config (default: ./inbox → ./outbox)")
    p.add_argument("--once", action="store_true",
                   help="process what is there (once stable), then exit: 0, or 65 if any failed")
    p.add_argument("--host-id", help="claim folder name (default: config host_id or hostname)")
    p.set_defaults(handler=_run)

    p = sub.add_parser("check-config", help="validate a config file (exit 78 if invalid)")
    p.add_argument("file", type=Path)
    p.set_defaults(handler=_check_config)

    p = sub.add_parser("route", help="show which rule and outbox each path would get")
    p.add_argument("-c", "--config", type=Path)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.set_defaults(handler=_route)

    p = sub.add_parser("status", help="job counts and the last failures, from the journal")
    p.add_argument("-c", "--config", type=Path)
    p.add_argument("--failures", type=int, default=10, help="how many failures to list")
    p.set_defaults(handler=_status)
