"""YAML → typed, validated, frozen daemon configuration.

One validator serves ``check-config``, start-up and SIGHUP reload, so a file that passes
``smaskd check-config`` is exactly a file the daemon will run. The config is strict data:
``yaml.safe_load`` only, unknown keys rejected, every error is a ``ConfigError`` whose
``where`` is the key path (``rules[1].action``) so the user can find it without reading code.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from smaskd.convert import ConvertOptions
from smaskd.errors import ConfigError, SmaskdError
from smaskd.geometry.limits import InputLimits
from smaskd.listen import Listen, parse_listen
from smaskd.statelocation import CONFIGURED, resolve_state_dir

__all__ = [
    "Config",
    "Inbox",
    "Match",
    "Notify",
    "Prune",
    "Retention",
    "Rule",
    "config_warnings",
    "configured_state_dir",
    "default_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]

OBSERVERS = ("auto", "inotify", "polling")
ACTIONS = ("export", "import", "auto")
KINDS = ("annotations", "masks")
ON_CONFLICT = ("rename", "replace", "skip")
ON_SUCCESS = ("move", "delete")
UNMATCHED = ("fail", "leave")
LOG_LEVELS = ("debug", "info", "warning", "error")
NOTIFY_EVENTS = ("job_failed", "fault_started", "fault_ended")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$", re.I)
_SIZE_UNITS = {None: 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}
#: The smallest ``worker_memory`` accepted. A worker's address space holds the interpreter,
#: numpy, OpenCV and their thread pools before it reads a byte: converting a tiny file needs
#: 363 MiB (RLIMIT_AS; fails at 355 MiB) on a 2-CPU x86-64 Linux box, measured by
#: ``benchmarks/worker_memory_floor.py``. Thread pools grow with the CPU count, so the floor
#: keeps a margin: below it every job would fail with a memory error and good inputs would
#: land in failed/.
MIN_WORKER_MEMORY = 512 * 1024**2
_HOST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Match:
    """Conditions of a rule; all given ones must hold (``kind`` is sniffed from content)."""

    inbox: str | None = None
    glob: str | None = None
    regex: str | None = None
    kind: str | None = None
    #: ``glob`` ignores case unless this is set: Windows and macOS clients send ``SCAN.JSON``
    #: for ``*.json``, and a case-only difference would send their files to failed/.
    case_sensitive: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    outbox: Path
    match: Match = Match()
    action: str = "auto"
    options: ConvertOptions = ConvertOptions()
    on_conflict: str = "rename"
    on_success: str = "move"
    timeout: float | None = None  # None: the global job_timeout
    #: results (and logs) keep the input's sub-folder path below the outbox (trees.py)
    keep_tree: bool = False
    #: at most this many of the rule's jobs run at once; None: as many as there are workers
    max_jobs: int | None = None
    #: queued jobs of a higher priority start first when a worker is free (scheduling.py)
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Inbox:
    name: str
    path: Path
    observer: str = "auto"
    settle: float | None = None  # None: 2 s local, 5 s when polling (decided at start-up)
    rescan: float | None = None  # None: 60 s local, 15 s when polling
    recursive: bool = False
    done: Path | None = None  # None: <path>/done
    failed: Path | None = None  # None: <path>/failed
    ignore: tuple[str, ...] = ()
    grace: float = 600.0  # how long an incomplete zip/JSON may stay "not ready"
    #: ``data.json`` is taken only once ``data.json<ready_marker>`` exists (markers.py)
    ready_marker: str | None = None

    @property
    def done_dir(self) -> Path:
        return self.done or self.path / "done"

    @property
    def failed_dir(self) -> Path:
        return self.failed or self.path / "failed"


@dataclass(frozen=True, slots=True)
class Notify:
    """A command run on a failed job and on a fault that starts or ends (notifications.py).

    ``command`` is an argv list, never a shell string: the facts arrive in the environment
    and as JSON on stdin, so nothing a file name contains is ever parsed by a shell."""

    command: tuple[str, ...]
    on: tuple[str, ...] = NOTIFY_EVENTS
    timeout: float = 10.0
    max_running: int = 2


@dataclass(frozen=True, slots=True)
class Prune:
    """One kind of leftovers kept at most ``max_age`` seconds and/or ``max_count`` entries
    (None: no bound of that kind; both None: never pruned)."""

    max_age: float | None = None
    max_count: int | None = None

    @property
    def active(self) -> bool:
        return self.max_age is not None or self.max_count is not None


@dataclass(frozen=True, slots=True)
class Retention:
    """What is pruned (retention.py): inputs in done/, job logs in outboxes, journal rows of
    finished jobs. Nothing by default: deleting is the operator's decision."""

    done: Prune = Prune()
    logs: Prune = Prune()
    journal: Prune = Prune()
    every: float = 3600.0

    @property
    def active(self) -> bool:
        return self.done.active or self.logs.active or self.journal.active


@dataclass(frozen=True, slots=True)
class Config:
    inboxes: tuple[Inbox, ...]
    rules: tuple[Rule, ...]
    state_dir: Path
    host_id: str
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    unmatched: str = "fail"
    job_timeout: float = 300.0
    drain_timeout: float = 60.0
    max_input_bytes: int = 512 * 1024**2
    worker_memory: int | None = 4 * 1024**3  # RLIMIT_AS per worker; None: unlimited
    heartbeat_interval: float = 10.0  # how often this host rewrites its heartbeat per inbox
    lease: float = 60.0  # another host's claims are taken over after its heartbeat is this stale
    file_mode: int = 0o640
    umask: int = 0o027
    log_level: str = "info"
    #: Level of other libraries' loggers (watchdog, urllib3, ...): ``log_level: debug`` is
    #: for smaskd's own events; watchdog's debug line per inotify event is noise unless asked.
    library_log_level: str = "info"
    #: Claimed-but-not-started jobs the daemon holds at most; the rest stay in the inbox.
    queue_limit: int = 1000
    #: Longest wait between retries of jobs blocked by the filesystem (outbox full or not
    #: writable, inbox gone); the wait starts at 1 s and doubles up to this.
    fault_backoff: float = 60.0
    #: Per-item export bounds (max_polygon_points, max_instances), passed to every job.
    limits: InputLimits = InputLimits()
    #: ``metrics.listen``: where /metrics and /healthz are served (daemon/metrics.py); None: off
    metrics_listen: Listen | None = None
    notify: Notify | None = None  # None: no notification command
    retention: Retention = Retention()
    source: Path | None = None  # the file it came from; None: the embedded default
    #: How state_dir was decided (``smaskd status`` says it; statelocation.py has the order).
    state_dir_from: str = CONFIGURED

    def inbox(self, name: str) -> Inbox:
        return next(i for i in self.inboxes if i.name == name)


def parse_duration(value: Any, where: str) -> float:
    """``2s``, ``500ms``, ``1.5m``, ``1h``, ``30d`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ConfigError("expected a duration like 2s or 500ms", where)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400,
                                        None: 1}[m.group(2)]
    else:
        raise ConfigError("expected a duration like 2s, 500ms or 30d", where)
    if seconds < 0:
        raise ConfigError("must not be negative", where)
    return seconds


def parse_size(value: Any, where: str) -> int:
    """Bytes: ``512MiB``, ``4GiB``, ``10MB`` or a plain integer."""
    if isinstance(value, bool):
        raise ConfigError("expected a size like 512MiB", where)
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ConfigError("expected a size like 512MiB or a number of bytes", where)
    if size < 0:
        raise ConfigError("must not be negative", where)
    return size


def _mode(value: Any, where: str, limit: int) -> int:
    # YAML 1.1 reads an unquoted 0640 as the octal int 416 already; a string is parsed as octal.
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?o?[0-7]{1,4}", value.strip()):
        mode = int(value.strip().replace("o", ""), 8)
    else:
        raise ConfigError('expected an octal mode like "0640"', where)
    if not 0 <= mode <= limit:
        raise ConfigError(f"expected an octal mode up to {limit:o}", where)
    return mode


class _Reader:
    """Typed access to one mapping of the YAML that remembers its key path."""

    def __init__(self, data: Any, where: str, known: set[str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping, got {type(data).__name__}", where or "(top)")
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown key; expected one of {', '.join(sorted(known))}",
                                  _join(where, str(key)))
        self.data = data
        self.where = where

    def path(self, key: str) -> str:
        return _join(self.where, key)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key, default)
        return default if value is None else value

    def str(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str | None:
        value = self.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError("expected a non-empty string", self.path(key))
        if choices and value not in choices:
            raise ConfigError(f"expected {'|'.join(choices)}", self.path(key))
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError("expected true or false", self.path(key))
        return value

    def abspath(self, key: str, required: bool = False) -> Path | None:
        value = self.get(key)
        if value is None:
            if required:
                raise ConfigError("required", self.path(key))
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError("expected a path", self.path(key))
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            raise ConfigError(f"expected an absolute path, got {value!r}", self.path(key))
        return Path(os.path.normpath(path))

    def opt(self, key: str, parse: Callable[[Any, str], Any], default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else parse(value, self.path(key))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _items(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list, got {type(value).__name__}", where)
    return value


def _inbox(data: Any, where: str) -> Inbox:
    r = _Reader(data, where, {"name", "path", "observer", "settle", "rescan", "recursive", "done",
                              "failed", "ignore", "grace", "ready_marker"})
    name = r.str("name")
    if name is None:
        raise ConfigError("required", r.path("name"))
    ignore = _items(r.get("ignore"), r.path("ignore"))
    for i, pattern in enumerate(ignore):
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError("expected a glob string", f"{r.path('ignore')}[{i}]")
    return Inbox(
        name=name,
        path=r.abspath("path", required=True),  # type: ignore[arg-type]
        observer=r.str("observer", "auto", OBSERVERS),  # type: ignore[arg-type]
        settle=r.opt("settle", parse_duration),
        rescan=r.opt("rescan", parse_duration),
        recursive=r.bool("recursive", False),
        done=r.abspath("done"),
        failed=r.abspath("failed"),
        ignore=tuple(ignore),
        grace=r.opt("grace", parse_duration, 600.0),
        ready_marker=_ready_marker(r.get("ready_marker"), r.path("ready_marker")),
    )


def _ready_marker(value: Any, where: str) -> str | None:
    """A suffix such as ``.done`` or ``.ready``: one file name component, never a path."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError('expected a non-empty suffix like ".done"', where)
    if "/" in value or "\0" in value or value in (".", ".."):
        raise ConfigError(f'expected a file name suffix like ".done", got {value!r}', where)
    return value


def _rule_limit(value: Any, where: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"expected an integer from {low} to {high}", where)
    return value


def _rule(data: Any, where: str, index: int) -> Rule:
    r = _Reader(data, where, {"name", "match", "action", "options", "outbox", "on_conflict",
                              "on_success", "timeout", "keep_tree", "max_jobs", "priority"})
    m = _Reader(r.get("match", {}), r.path("match"),
                {"inbox", "glob", "regex", "kind", "case_sensitive"})
    regex = m.str("regex")
    if regex is not None:
        try:
            re.compile(regex)
        except re.error as e:
            raise ConfigError(f"regex does not compile: {e}", m.path("regex")) from None
    glob = m.str("glob")
    if glob is not None:
        fnmatch.translate(glob)
    options_raw = r.get("options", {})
    if not isinstance(options_raw, dict):
        raise ConfigError("expected a mapping", r.path("options"))
    try:
        options = ConvertOptions.from_mapping(options_raw, r.path("options"))
    except SmaskdError as e:
        raise ConfigError(e.message, e.where) from None
    if options.labelmap is not None and not options.labelmap.is_absolute():
        raise ConfigError("expected an absolute path", r.path("options") + ".labelmap")
    return Rule(
        name=r.str("name") or f"rule{index}",
        match=Match(inbox=m.str("inbox"), glob=glob, regex=regex, kind=m.str("kind", None, KINDS),
                    case_sensitive=m.bool("case_sensitive", False)),
        action=r.str("action", "auto", ACTIONS),  # type: ignore[arg-type]
        options=options,
        outbox=r.abspath("outbox", required=True),  # type: ignore[arg-type]
        on_conflict=r.str("on_conflict", "rename", ON_CONFLICT),  # type: ignore[arg-type]
        on_success=r.str("on_success", "move", ON_SUCCESS),  # type: ignore[arg-type]
        timeout=r.opt("timeout", parse_duration),
        keep_tree=r.bool("keep_tree", False),
        max_jobs=r.opt("max_jobs", lambda v, w: _rule_limit(v, w, 1, 256)),
        priority=r.opt("priority", lambda v, w: _rule_limit(v, w, -1000, 1000), 0),
    )


def default_host_id() -> str:
    """The host name reduced to a safe folder name (claims live in processing/<host-id>/)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-") or "localhost"
    return name[:64]


def parse_config(data: Any, source: Path | None = None, check_folders: bool = True) -> Config:
    """Validate a ``yaml.safe_load`` result into a ``Config`` (or raise ``ConfigError``).

    ``check_folders=False`` skips only the folder-identity check (``smaskd status`` must read
    a config whose folders alias each other *now*: that is what it reports)."""
    r = _Reader({} if data is None else data, "", {
        "workers", "state_dir", "host_id", "inboxes", "rules", "unmatched", "job_timeout",
        "drain_timeout", "max_input_bytes", "worker_memory", "file_mode", "umask", "log_level",
        "library_log_level", "queue_limit", "fault_backoff", "heartbeat_interval", "lease", "max_polygon_points",
        "max_instances", "metrics", "notify", "retention"})
    workers = r.get("workers", os.cpu_count() or 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 256:
        raise ConfigError("expected an integer from 1 to 256", "workers")
    host_id = r.str("host_id") or default_host_id()
    if not _HOST_ID.match(host_id):
        raise ConfigError("expected letters, digits, '.', '_' or '-' (a folder name)", "host_id")
    inboxes = [_inbox(d, f"inboxes[{i}]") for i, d in enumerate(_items(r.get("inboxes"), "inboxes"))]
    if not inboxes:
        raise ConfigError("at least one inbox is required", "inboxes")
    rules = [_rule(d, f"rules[{i}]", i) for i, d in enumerate(_items(r.get("rules"), "rules"))]
    memory = r.data.get("worker_memory", 4 * 1024**3)
    heartbeat = r.opt("heartbeat_interval", parse_duration, 10.0)
    if heartbeat <= 0:
        raise ConfigError("must be more than 0", "heartbeat_interval")
    lease = r.opt("lease", parse_duration, 60.0)
    if lease < 3 * heartbeat:  # a live host must be able to beat several times per lease
        raise ConfigError(f"must be at least 3 x heartbeat_interval ({3 * heartbeat:g}s)", "lease")
    state_dir, state_dir_from = resolve_state_dir(r.abspath("state_dir"), source)
    config = Config(
        inboxes=tuple(inboxes),
        rules=tuple(rules),
        state_dir=state_dir,
        state_dir_from=state_dir_from,
        host_id=host_id,
        workers=workers,
        unmatched=r.str("unmatched", "fail", UNMATCHED),  # type: ignore[arg-type]
        job_timeout=r.opt("job_timeout", parse_duration, 300.0),
        drain_timeout=r.opt("drain_timeout", parse_duration, 60.0),
        max_input_bytes=r.opt("max_input_bytes", parse_size, 512 * 1024**2),
        worker_memory=_worker_memory(memory),
        heartbeat_interval=heartbeat,
        lease=lease,
        file_mode=r.opt("file_mode", lambda v, w: _mode(v, w, 0o777), 0o640),
        umask=r.opt("umask", lambda v, w: _mode(v, w, 0o777), 0o027),
        log_level=r.str("log_level", "info", LOG_LEVELS),  # type: ignore[arg-type]
        library_log_level=r.str("library_log_level", "info", LOG_LEVELS),
        queue_limit=_queue_limit(r.get("queue_limit", 1000)),
        fault_backoff=_fault_backoff(r.opt("fault_backoff", parse_duration, 60.0)),
        limits=InputLimits(*(_count(r.get(key, getattr(InputLimits(), key)), key)
                             for key in ("max_polygon_points", "max_instances"))),
        metrics_listen=_metrics(r.get("metrics", {})),
        notify=_notify(r.get("notify")),
        retention=_retention(r.get("retention")),
        source=source,
    )
    _check_relations(config, check_folders)
    _check_labelmaps(config)
    return config


def _check_labelmaps(config: Config) -> None:
    """Read and parse every rule's labelmap now: a missing or malformed one would otherwise
    pass the config and then fail every job of that rule (as an internal error, input to
    failed/). The worker reads it again per job, so an edit takes effect without a reload."""
    from smaskd.smask.labelmap import parse_labelmap

    for i, rule in enumerate(config.rules):
        path = rule.options.labelmap
        if path is None:
            continue
        where = f"rules[{i}].options.labelmap"
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(f"no such file: {path}", where) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 ({e.reason} at byte {e.start})", where) from None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}", where) from None
        try:
            parse_labelmap(text, source=str(path))
        except SmaskdError as e:
            raise ConfigError(f"{e.where}: {e.message}" if e.where else e.message, where) from None


def config_warnings(config: Config) -> list[tuple[str, str]]:
    """(key, message) of settings that are valid but will fail some valid inputs: printed by
    ``check-config`` and logged at start-up, not refused (small frames still convert)."""
    from smaskd import MAX_IMAGE_PIXELS
    from smaskd.geometry.limits import frame_memory

    found = []
    need = frame_memory(MAX_IMAGE_PIXELS)
    if config.worker_memory is not None and config.worker_memory < need:
        side = math.isqrt(MAX_IMAGE_PIXELS)
        found.append(("worker_memory", (
            f"{config.worker_memory / 1024**2:g} MiB is less than a worker needs for the largest "
            f"accepted frame ({side}x{side} pixels: {math.ceil(need / 1024**2)} MiB); inputs "
            "with frames that large will fail with a memory error. Set at least "
            f"{math.ceil(need / 1024**3 * 4) / 4:g}GiB, or 0 for unlimited")))
    if not config.rules:  # valid (unmatched: leave may be meant), but surely not intended
        fate = ("goes to failed/ with a report" if config.unmatched == "fail"
                else "stays in the inbox untouched")
        found.append(("rules", f"none: no file can match, so every file dropped {fate} "
                               f"(unmatched: {config.unmatched})"))
    return found


def _metrics(data: Any) -> Listen | None:
    """``metrics: {listen: "HOST:PORT"}``; no ``listen``, no listener."""
    m = _Reader(data, "metrics", {"listen"})
    value = m.get("listen")
    return None if value is None else parse_listen(value, m.path("listen"))


def _worker_memory(value: Any) -> int | None:
    if value in (None, 0):
        return None
    size = parse_size(value, "worker_memory")
    if size < MIN_WORKER_MEMORY:
        raise ConfigError(
            f"{size / 1024**2:g} MiB is less than a worker needs to start (~360 MiB of address "
            f"space for Python, numpy and OpenCV): expected at least "
            f"{MIN_WORKER_MEMORY // 1024**2}MiB, or 0 for unlimited", "worker_memory")
    return size


def _queue_limit(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
        raise ConfigError("expected an integer from 1 to 1000000", "queue_limit")
    return value


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError("expected a positive integer", where)
    return value


def _notify(data: Any) -> Notify | None:
    """``notify:`` {command, on, timeout, max_running}; the command must exist and be
    executable now (as a labelmap must): a typo would otherwise only show when the first
    job fails, which is when the notification is needed."""
    if data is None:
        return None
    r = _Reader(data, "notify", {"command", "on", "timeout", "max_running"})
    argv = _items(r.get("command"), r.path("command"))
    if not argv:
        raise ConfigError("required: the program and its arguments as a list", r.path("command"))
    for i, arg in enumerate(argv):
        if not isinstance(arg, str) or not arg:
            raise ConfigError("expected a non-empty string", f"{r.path('command')}[{i}]")
    program = _program(argv[0], f"{r.path('command')}[0]")
    on = _items(r.get("on", list(NOTIFY_EVENTS)), r.path("on"))
    for i, event in enumerate(on):
        if event not in NOTIFY_EVENTS:
            raise ConfigError(f"expected {'|'.join(NOTIFY_EVENTS)}", f"{r.path('on')}[{i}]")
    timeout = r.opt("timeout", parse_duration, 10.0)
    if timeout <= 0:
        raise ConfigError("must be more than 0", r.path("timeout"))
    running = r.get("max_running", 2)
    if not isinstance(running, int) or isinstance(running, bool) or not 1 <= running <= 64:
        raise ConfigError("expected an integer from 1 to 64", r.path("max_running"))
    return Notify((program, *argv[1:]), tuple(dict.fromkeys(on)), timeout, running)


def _program(name: str, where: str) -> str:
    """An absolute path, or a bare name found on ``$PATH`` now (stored resolved, so what
    runs does not change with the environment); an executable regular file either way."""
    if os.sep not in name:
        found = shutil.which(name)
        if found is None:
            raise ConfigError(f"{name!r} is not found on PATH ({os.environ.get('PATH', '')}); "
                              "give an absolute path", where)
        name = os.path.abspath(found)
    elif not os.path.isabs(name):
        raise ConfigError(f"expected an absolute path or a bare name on PATH, got {name!r}",
                          where)
    if not os.path.isfile(name):
        raise ConfigError(f"no such program: {name}", where)
    if not os.access(name, os.X_OK):
        raise ConfigError(f"{name} is not executable (chmod +x?)", where)
    return name


def _retention(data: Any) -> Retention:
    """``retention:`` {done, logs, journal: {max_age, max_count}, every}."""
    if data is None:
        return Retention()
    r = _Reader(data, "retention", {"done", "logs", "journal", "every"})
    parts = {}
    for key in ("done", "logs", "journal"):
        p = _Reader(r.get(key, {}), r.path(key), {"max_age", "max_count"})
        count = p.get("max_count")
        if count is not None:
            count = _count(count, p.path("max_count"))
        parts[key] = Prune(p.opt("max_age", parse_duration), count)
    every = r.opt("every", parse_duration, 3600.0)
    if every <= 0:
        raise ConfigError("must be more than 0", r.path("every"))
    return Retention(every=every, **parts)


def _fault_backoff(value: float) -> float:
    if value < 1.0:
        raise ConfigError("expected at least 1s (retries start 1 s apart)", "fault_backoff")
    return value


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _check_relations(config: Config, check_folders: bool = True) -> None:
    """Cross-field rules: names resolve, folders do not alias or nest in ways that would loop
    (compared by identity: ``smaskd.overlaps``)."""
    from smaskd.overlaps import config_folders, find_overlaps, is_within

    names: dict[str, int] = {}
    for i, inbox in enumerate(config.inboxes):
        if inbox.name in names:
            raise ConfigError(f"duplicate inbox name {inbox.name!r}", f"inboxes[{i}].name")
        names[inbox.name] = i
    rule_names: set[str] = set()
    for i, rule in enumerate(config.rules):
        if rule.name in rule_names:
            raise ConfigError(f"duplicate rule name {rule.name!r}", f"rules[{i}].name")
        rule_names.add(rule.name)
        if rule.match.inbox is not None and rule.match.inbox not in names:
            raise ConfigError(f"unknown inbox {rule.match.inbox!r}; expected one of "
                              f"{', '.join(names)}", f"rules[{i}].match.inbox")
    for overlap in find_overlaps(config_folders(config)) if check_folders else ():
        raise ConfigError(overlap.message, overlap.inner.key)
    for inbox in config.inboxes:
        if _inside(config.state_dir, inbox.path) or (
                check_folders and is_within(config.state_dir, inbox.path)):
            raise ConfigError(f"state_dir is inside inbox {inbox.name!r}: inbox writers could "
                              "reach the journal", "state_dir")


def load_config(path: Path | str, check_folders: bool = True) -> Config:
    """Read and validate a YAML file; every failure is a ``ConfigError`` (exit 78)."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        return parse_config(data, source=path.resolve(), check_folders=check_folders)
    except ConfigError as e:
        e.add_note(f"in {path}")
        raise


def configured_state_dir(path: Path | str) -> Path | None:
    """Only the ``state_dir`` key of a config file that may not pass as a whole.

    Why: ``smaskd status`` is a probe and must still find the running daemon's journal when
    the file on disk no longer passes (a rule's labelmap deleted, a notify command
    uninstalled, an edit saved but not reloaded): the daemon keeps running on the config it
    loaded. ``ConfigError`` when even this key cannot be read (not YAML, not a mapping, a
    bad ``state_dir``): then where the state is cannot be known from this file."""
    path = Path(path)
    data = _read_yaml(path)
    data = {} if data is None else data
    return _Reader(data, "", set(data) if isinstance(data, dict) else set()).abspath("state_dir")


def _read_yaml(path: Path) -> Any:
    """The file's YAML, or a ``ConfigError`` saying where it is not readable or not YAML."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"not valid YAML: {getattr(e, 'problem', None) or e}", where) from None
    return data


def default_config(host_id: str | None = None) -> Config:
    """The embedded default: ``./inbox`` → ``./outbox``, action ``auto``, state beside them."""
    cwd = Path.cwd()
    state_dir, state_dir_from = resolve_state_dir(None, None, embedded=True)
    return Config(
        inboxes=(Inbox(name="inbox", path=cwd / "inbox"),),
        rules=(Rule(name="auto", outbox=cwd / "outbox", action="auto"),),
        state_dir=state_dir,
        host_id=host_id or default_host_id(),
        state_dir_from=state_dir_from,
    )
