"""``smaskd run | check-config | route | status``: the daemon's command-line surface.

Each handler returns an exit code and raises ``SmaskdError`` for the CLI's one error table
(``ConfigError`` → 78), so ``check-config``, start-up and SIGHUP share one validator and one
message format (``rules[1].action: expected export|import|auto``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from smaskd.config import Config, config_warnings, default_config, load_config
from smaskd.errors import BusyError, ConfigError, SmaskdError, exit_code_for
from smaskd.words import count

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
    logsetup.configure(config.log_level, libraries=config.library_log_level)
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
    print(f"{args.file}: ok: {count(len(config.inboxes), 'inbox', 'inboxes')}, "
          f"{count(len(config.rules), 'rule')}, "
          f"unmatched: {config.unmatched}")
    return 0


def _route(args: argparse.Namespace) -> int:
    """What the daemon would do with each path, decided by the daemon's own code: its inbox
    listing (``scan_inbox``: ignore globs, ``recursive``, done/ and failed/ skipped) says
    whether it is taken at all, then ``route`` (kind sniffed from content) picks the rule."""
    from smaskd.convert import action_for
    from smaskd.daemon import markers
    from smaskd.daemon.intake import is_ignored, scan_inbox
    from smaskd.daemon.routing import find_inbox, route, safe_kind

    config = _config(args.config)
    listed: dict[str, dict[str, object]] = {}
    for path in args.paths:
        inbox_name, rel = find_inbox(config, path)
        inbox = next((i for i in config.inboxes if i.name == inbox_name), None)
        if inbox is None:
            rule = route(config, None, rel, lambda p=path: safe_kind(p) if p.exists() else None)
            print(f"{path}: outside every inbox: the daemon never takes it; " + (
                f"by name it would match rule {rule.name}" if rule else "no rule matched"))
            continue
        if inbox.name not in listed:
            listed[inbox.name] = {c.rel: c for c in scan_inbox(inbox)}
        cand = listed[inbox.name].get(rel)
        if cand is None:
            print(f"{path}: inbox {inbox.name}: not taken: {_not_listed_reason(inbox, path, rel, is_ignored)}")
            continue
        if cand.kind == "special":  # type: ignore[attr-defined]
            print(f"{path}: inbox {inbox.name}: not taken: not a regular file (left in place)")
            continue
        marked = markers.state(inbox, cand.path, cand.st)  # type: ignore[attr-defined]
        if marked == markers.MARKER:
            print(f"{path}: inbox {inbox.name}: not taken: a ready marker, never a job "
                  f"(ready_marker: {inbox.ready_marker!r})")
            continue
        if marked == markers.UNMARKED:
            marker = markers.marker_name(inbox, cand.path.name)  # type: ignore[attr-defined]
            print(f"{path}: inbox {inbox.name}: not taken yet: waiting for its ready marker "
                  f"{marker} (one older than the file does not count)")
            continue
        kind = (lambda p=path: safe_kind(p)) if cand.kind == "file" else (lambda: None)  # type: ignore[attr-defined]
        rule = route(config, inbox.name, rel, kind)
        if cand.kind == "symlink":  # type: ignore[attr-defined]
            print(f"{path}: inbox {inbox.name}: taken and failed: a symlink is never followed")
        elif rule is None:
            fate = ("failed/ with a report" if config.unmatched == "fail"
                    else "left in the inbox")
            print(f"{path}: inbox {inbox.name}: no rule matched → {fate} (unmatched: "
                  f"{config.unmatched})")
        else:
            action = rule.action
            if action == "auto":  # what the daemon's worker would do, decided the same way
                resolved = action_for(safe_kind(path)) if cand.kind == "file" else None  # type: ignore[attr-defined]
                action = f"auto ({resolved or 'unknown content: the job would fail'})"
            print(f"{path}: inbox {inbox.name}: rule {rule.name} ({_why(rule)}) → action "
                  f"{action} → outbox {rule.outbox}")
    return 0


def _why(rule) -> str:
    m = rule.match
    parts = [f"inbox {m.inbox}" if m.inbox else "",
             f"glob {m.glob!r}" + (" case-sensitive" if m.case_sensitive else "") if m.glob else "",
             f"regex {m.regex!r}" if m.regex else "", f"kind {m.kind} by content" if m.kind else ""]
    return "matched " + ", ".join(p for p in parts if p) if any(parts) else "matches everything"


def _not_listed_reason(inbox, path: Path, rel: str, is_ignored) -> str:
    """Why the daemon's listing skipped it: said in the listing's own terms."""
    absolute = Path(os.path.abspath(path))
    for role, folder in (("done/", inbox.done_dir), ("failed/", inbox.failed_dir)):
        if absolute.is_relative_to(folder):
            return f"in the inbox's {role} ({folder}), an output of the daemon"
    parts = rel.split("/")
    for part in parts:
        if is_ignored(part, inbox.ignore):
            return (f"{part!r} matches an ignore glob (the defaults or the inbox's "
                    f"ignore: {list(inbox.ignore)})")
    if len(parts) > 1 and not inbox.recursive:
        return "in a sub-folder, and the inbox is not recursive"
    if not os.path.lexists(path):
        return "no such file"
    if os.path.isdir(path) and not os.path.islink(path):
        return "a folder"
    return "not listed (a folder on the way cannot be read?)"


def _status_state_dir(args: argparse.Namespace, configured: Path | None,
                      source: Path | None) -> tuple[Path, str]:
    """Where the daemon of this config keeps its journal, found as the service finds it
    (:mod:`smaskd.statelocation`), though this shell has no ``$STATE_DIRECTORY``."""
    from smaskd.statelocation import StateDirError, resolve_state_dir

    if args.state_dir is not None:
        return Path(os.path.abspath(args.state_dir)), "--state-dir"
    try:
        return resolve_state_dir(configured, source, embedded=source is None,
                                 instance=args.instance, find_service=True)
    except StateDirError as e:
        raise ConfigError(str(e), "--instance") from None


def _status_config(args: argparse.Namespace) -> tuple[Path | None, Path | None, str | None]:
    """``(the config's state_dir, its file, the problem if the file does not pass)``.

    A probe must answer while the daemon runs on a config whose file no longer passes (a
    labelmap deleted, a notify command uninstalled, an edit not reloaded yet): the failure is
    reported as a problem of that daemon, not as exit 78. Only the ``state_dir`` key is then
    read; if even that cannot be read, ``ConfigError`` (and without ``--state-dir`` the
    state is unknown: exit 4)."""
    from smaskd.config import configured_state_dir
    from smaskd.statelocation import CONFIGURED

    try:
        config = _config(args.config, check_folders=False)  # aliased folders: it reports them
    except ConfigError as e:
        problem = (f"config {args.config} does not pass ({e}): a start would fail and a "
                   "reload would keep the config the daemon runs on")
        source = Path(args.config).resolve()
        if args.state_dir is not None:
            return None, source, problem
        try:
            return configured_state_dir(args.config), source, problem
        except ConfigError as unreadable:
            raise ConfigError(f"{unreadable}: the config says where the daemon keeps its "
                              "state; pass --state-dir DIR", str(args.config)) from None
    configured = config.state_dir if config.state_dir_from == CONFIGURED else None
    return configured, config.source, None


def _status(args: argparse.Namespace) -> int:
    """LSB status codes (``smaskd.daemon.probe``); the journal's counts and failures after."""
    import json

    from smaskd.daemon.journal import STATES, Journal
    from smaskd.daemon.probe import PROBLEMS, UNKNOWN, Probe, probe

    try:
        configured, source, config_problem = _status_config(args)
    except ConfigError as e:  # where the state is cannot be known: LSB's "unknown", not 78
        found = Probe("unknown", UNKNOWN, None, "", f"config unreadable: {e}")
        if args.json:
            print(json.dumps(found.as_dict(), indent=2))
        else:
            print(f"daemon: unknown: {found.reason}")
        return UNKNOWN
    state_dir, state_dir_from = _status_state_dir(args, configured, source)
    now = time.time()
    found = probe(state_dir, now)
    if config_problem:
        found.problems.append(config_problem)
        if found.state == "running":
            found.reason = count(len(found.problems), "problem")
    report: dict = found.as_dict()
    report["state_dir_from"] = state_dir_from
    journal_lines: list[str] = [f"state_dir: {state_dir} ({state_dir_from})"]
    try:
        journal = Journal(state_dir, create=False)
    except FileNotFoundError:
        journal = None
        journal_lines.append(f"no journal in {state_dir} "
                             "(the daemon has not run with this state_dir)")
    except (SmaskdError, OSError) as e:  # unreadable or corrupt: the state cannot be known
        journal = None
        found.state, found.code = "unknown", UNKNOWN
        found.reason = f"journal unreadable: {e}"
        report.update(state="unknown", exit_code=UNKNOWN, reason=found.reason)
    if journal is not None:
        try:
            counts = journal.counts()
            failures = journal.last_failures(args.failures)
        finally:
            journal.close()
        report["journal"] = str(journal.path)
        report["jobs"] = {s: counts.get(s, 0) for s in STATES}
        report["failures"] = [
            {"updated": row.updated, "job_id": row.job_id, "inbox": row.inbox, "name": row.name,
             "rule": row.rule, "attempts": row.attempts, "error": row.error} for row in failures]
        journal_lines.append(f"journal: {journal.path}")
        journal_lines.append("jobs: " + ", ".join(f"{s}={counts.get(s, 0)}" for s in STATES))
        if failures:
            journal_lines.append("last failures:")
        for row in failures:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.updated))
            journal_lines.append(f"  {when}  {row.job_id}  {row.inbox}/{row.name}  "
                                 f"rule={row.rule}  attempts={row.attempts}  {row.error}")
    code = found.code
    if args.problems_exit and found.state == "running" and found.problems:
        code = PROBLEMS
    report["exit_code"] = code
    if args.json:
        print(json.dumps(report, indent=2))
        return code
    head = f"daemon: {found.state}"
    if found.state == "running":
        head += f" (pid {found.pid}, status {found.status_age or 0:.0f} s old)"
    print(f"{head}: {found.reason}")
    if found.status:
        print(f"status: {found.status}")
    print("\n".join(f"problem: {p}" for p in found.problems) if found.problems else "", end="")
    if found.problems:
        print()
    print("\n".join(journal_lines))
    return code


def add_daemon_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``run``, ``check-config``, ``route`` and ``status`` to the CLI's subparsers."""
    p = sub.add_parser("run", help="watch inbox folders and convert what is dropped there")
    p.add_argument("-c", "--config", type=Path, help="YAML config (default: ./inbox → ./outbox)")
    p.add_argument("--once", action="store_true",
                   help="process what is there (once stable), then exit: 0, or 65 if any failed")
    p.add_argument("--host-id", help="claim folder name (default: config host_id or hostname)")
    p.set_defaults(handler=_run)

    p = sub.add_parser("check-config", help="validate a config file (exit 78 if invalid)")
    p.add_argument("file", type=Path, help="the YAML config to check")
    p.set_defaults(handler=_check_config)

    p = sub.add_parser("route", help="show which rule and outbox each path would get")
    p.add_argument("-c", "--config", type=Path,
                   help="the daemon's YAML config (default: ./inbox → ./outbox)")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="files in (or meant for) an inbox")
    p.set_defaults(handler=_route)

    p = sub.add_parser(
        "status", help="is the daemon running, its problems, job counts and the last failures",
        description="Exit status as LSB's: 0 running, 1 dead (stopped without a clean stop: "
                    "killed or crashed), 3 not running, 4 unknown (state_dir or journal "
                    "unreadable). With --problems-exit, running with problems (a missing "
                    "inbox, an unwritable outbox, a failed reload, a config file that no longer "
                    "passes ...) exits 150. A config file that is not even YAML: 4, unless "
                    "--state-dir says where to look.")
    p.add_argument("-c", "--config", type=Path,
                   help="the daemon's YAML config (its state_dir locates the journal)")
    p.add_argument("--instance", metavar="NAME",
                   help="the daemon of smaskd@NAME.service: its state directory "
                   "/var/lib/smaskd/NAME, unless the config sets state_dir")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="look in DIR, whatever the config says")
    p.add_argument("--failures", type=int, default=10, help="how many failures to list")
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.add_argument("--problems-exit", action="store_true",
                   help="exit 150 when the daemon runs but reports problems")
    p.set_defaults(handler=_status)
