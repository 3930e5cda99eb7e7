"""The journal: one SQLite row per job in ``state_dir`` on local disk.

Why: the order "publish output → journal says published → move input" is what makes a crash
harmless. After kill -9 the row tells the restarted daemon whether a claim still needs a
worker (claimed/running), only its outputs renamed into place (publishing: the planned
names are stored), or only the input moved (published). A failure is recorded the same
way (``failing`` with its log staged and the error as JSON in ``detail``) so a crash in the
middle of failing a job finishes that failure instead of running the job again and writing a
second log. ``moved_to`` is written between the link into done/ or failed/ and the unlink from
processing/, so an interrupted move is finished, never repeated under a ``-1`` name.
SQLite locking is unreliable on network filesystems, so a ``state_dir`` on NFS/SMB is refused.

States: claimed → running → publishing → published → done, and (from any) failing → failed;
``lost`` when the claim left this host (another host took it over, or a person removed it).

**Group commit: what a crash leaves, and why recovery handles it.** Each transition is its own
SQLite commit in WAL mode with ``synchronous=NORMAL``: the commit is written to the WAL (the
kernel has it) but not fsynced. :meth:`Journal.sync` is the one durability barrier: one fsync
of the WAL covering every commit since the last barrier, a no-op when there is none. It runs
only where the next step makes something visible that must never outrun its record:

1. before the first rename of a publish or fail plan into the outbox (the ``publishing`` or
   ``failing`` row with its plan; the decision marker is fsynced before it, claims.py), and
2. before a claimed input leaves ``processing/``: after its link into done/ (or failed/) and
   its ``moved_to`` commit, done/ is fsynced, then the WAL, then the claim is unlinked; with
   ``on_success: delete``, ``published`` is durable before the unlink.

``published`` is committed only after the outbox was fsynced following the plan's renames:
an automatic checkpoint may make any commit durable early, and recovery reads ``published``
as "the outputs are in place". ``moved_to`` may become durable before its link: recovery
then finds the claim still there with one link and links it again. Between barriers (claims,
``claimed``/``running``, sha256, ``done``) nothing is synced. The jobs that finish in one loop
pass share the barriers and the folder fsyncs (groupcommit.py): per pass, one WAL fsync after
the plans, one per outbox after the renames, one per done/ and one WAL fsync before the
unlinks, instead of eight commit fsyncs and four folder fsyncs per job (benchmarks/README.md,
"Burst throughput").

- *The daemon is killed* (kill -9, OOM killer, a crash point in the tests): nothing committed
  is lost: the WAL is in the page cache, and SQLite's WAL is consistent after an application
  crash whatever ``synchronous`` says. Recovery sees exactly what it saw with per-commit syncs.
  A restarted daemon's first barrier also covers its predecessor's unsynced commits.
- *The machine loses power or the kernel crashes*: the journal comes back as a prefix of its
  commits (the WAL's checksum chain ends at the first frame not on disk), no shorter than
  the last barrier. What that prefix can lack, and what recovery then does: the row of a
  claim (journalled and run afresh), ``claimed``/``running``/``attempts`` (the job runs
  again, one attempt fewer counted), ``sha256`` (hashed again), ``done`` (``published`` with
  ``moved_to`` and no claim: completed as ``done``; ``failing`` with ``moved_to``: the report
  is written again). It cannot lack ``publishing``/``failing`` once a file of its plan was
  renamed into the outbox (barrier 1), nor ``moved_to`` (and ``published``) once the claim
  was unlinked (barrier 2).
- A barrier that fails (fsync EIO on ``state_dir``) raises JournalError: the job waits at the
  step it reached (journalwait.py), exactly as for a commit that failed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smaskd.daemon.mounts import fs_type, is_network_fs
from smaskd.daemon.statedir import make_state_dir, not_writable
from smaskd.errors import ConfigError, JournalError, OutputError, SmaskdError

__all__ = ["BUSY_TIMEOUT", "Journal", "Row", "STATES", "TERMINAL", "probe_writable"]

#: How long a write waits for a lock another process holds. Short: the daemon's one thread
#: must not stall on it; a write that gives up raises JournalError and the loop retries.
BUSY_TIMEOUT = 0.2

STATES = ("claimed", "running", "publishing", "published", "failing", "done", "failed", "lost")
TERMINAL = ("done", "failed", "lost")  # lost: the claim left this host (taken over, or removed)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id     TEXT PRIMARY KEY,
    host_id    TEXT NOT NULL,
    inbox      TEXT NOT NULL,
    name       TEXT NOT NULL,
    claim_path TEXT NOT NULL,
    rule       TEXT,
    action     TEXT,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    size       INTEGER,
    sha256     TEXT,
    outputs    TEXT,
    error      TEXT,
    created    REAL NOT NULL,
    updated    REAL NOT NULL,
    detail     TEXT,
    moved_to   TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_sha ON jobs(sha256, rule);
"""
# Columns added after the first release; an older journal gets them on open.
_ADDED = {"detail": "TEXT", "moved_to": "TEXT"}


@dataclass(frozen=True, slots=True)
class Row:
    job_id: str
    host_id: str
    inbox: str
    name: str
    claim_path: str
    rule: str | None
    action: str | None
    state: str
    attempts: int
    size: int | None
    sha256: str | None
    outputs: list[list[str]] | None
    error: str | None
    created: float
    updated: float
    detail: dict[str, Any] | None = None
    moved_to: str | None = None


class Journal:
    """A thin, synchronous store; only the daemon's main thread writes to it."""

    FILE = "journal.sqlite"

    def __init__(self, state_dir: Path, create: bool = True) -> None:
        if create:
            make_state_dir(state_dir)
        kind = fs_type(state_dir)
        if is_network_fs(kind):
            raise ConfigError(f"state_dir {state_dir} is on a network filesystem ({kind}); "
                              "the journal needs local disk", "state_dir")
        path = state_dir / self.FILE
        if not create and not path.exists():
            raise FileNotFoundError(str(path))
        self.path = path
        #: commits and barriers so far (the ``daemon.stopped`` line reports them)
        self.writes = self.syncs = 0
        # commits since the last barrier; 1 at first: a killed predecessor's commits may
        # still be only in the page cache, and the first barrier must cover them too
        self._unsynced = 1
        try:
            self._open(create)
        except sqlite3.DatabaseError as e:
            raise _translate(path, e) from None

    def _open(self, create: bool) -> None:
        if create and self.path.exists() and not os.access(self.path, os.W_OK):
            raise sqlite3.OperationalError("attempt to write a readonly database")
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # durable by barriers (sync), not per commit: see "Group commit" above
            self.db.execute("PRAGMA synchronous=NORMAL")
            if create:
                self.db.executescript(_SCHEMA)
                have = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
                for column, kind in _ADDED.items():
                    if column not in have:
                        self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            else:
                self.db.execute("SELECT COUNT(*) FROM jobs").fetchone()
            self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")  # see _write
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(JournalError):
            self.sync()
        self.db.close()

    def sync(self) -> None:
        """Make every commit so far durable: one fsync of the WAL (see "Group commit").

        A no-op when nothing was written since the last call, so callers put it before every
        step that needs it and the loop's transitions share one. JournalError when it fails.
        """
        if not self._unsynced:
            return
        try:
            fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # checkpointed into the database file, which SQLite synced
            self._unsynced = 0
            return
        except OSError as e:
            raise JournalError(f"cannot be synced: {e}", str(self.path)) from e
        try:
            os.fsync(fd)
        except OSError as e:
            raise JournalError(f"cannot be synced: {e}", str(self.path)) from e
        finally:
            os.close(fd)
        self.syncs += 1
        self._unsynced = 0

    def _write(self, sql: str, params: tuple = ()) -> None:
        """One statement (autocommit); JournalError when SQLite cannot write it now."""
        try:
            self.db.execute(sql, params)
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
            raise JournalError(f"cannot be written: {e}", str(self.path)) from e
        self.writes += 1
        self._unsynced += 1

    def _one(self, sql: str, params: tuple = ()) -> tuple | None:
        """One row of a query; JournalError when SQLite cannot read now."""
        try:
            return self.db.execute(sql, params).fetchone()
        except sqlite3.Error as e:  # another process holds it in exclusive locking mode
            raise JournalError(f"cannot be read: {e}", str(self.path)) from e

    def add(self, job_id: str, host_id: str, inbox: str, name: str, claim_path: Path,
            size: int | None = None) -> None:
        now = time.time()
        self._write(
            "INSERT OR IGNORE INTO jobs (job_id, host_id, inbox, name, claim_path, state, size, "
            "created, updated) VALUES (?, ?, ?, ?, ?, 'claimed', ?, ?, ?)",
            (job_id, host_id, inbox, name, str(claim_path), size, now, now))

    def update(self, job_id: str, **fields: Any) -> None:
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(fields["state"])
        for key in ("outputs", "detail"):
            if fields.get(key) is not None:
                fields[key] = json.dumps(fields[key], default=str)
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        self._write(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> Row | None:
        try:
            cur = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
            found = cur.fetchone()
        except sqlite3.Error as e:  # another process holds it in exclusive locking mode
            raise JournalError(f"cannot be read: {e}", str(self.path)) from e
        return self._row(cur, found) if found else None

    def rows(self, where: str = "1", params: tuple = (), order: str = "created") -> Iterator[Row]:
        cur = self.db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY {order}", params)
        for found in cur.fetchall():
            yield self._row(cur, found)

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())

    def last_failures(self, limit: int = 10) -> list[Row]:
        return list(self.rows("state = 'failed'", order=f"updated DESC LIMIT {int(limit)}"))

    def duplicate_of(self, job_id: str, sha256: str, rule: str) -> str | None:
        """An earlier finished job with the same content and rule (recognised, not skipped)."""
        found = self._one(
            "SELECT job_id FROM jobs WHERE sha256 = ? AND rule = ? AND job_id != ? "
            "AND state IN ('published', 'done') ORDER BY created LIMIT 1",
            (sha256, rule, job_id))
        return found[0] if found else None

    def newer_publisher(self, job_id: str, rule: str, final: str) -> str | None:
        """A job of ``rule`` claimed after ``job_id`` that already published to ``final``.

        For ``on_conflict: replace``: the newest drop wins whatever finishes first, so an
        older drop that finishes later must not overwrite it. Claim order is drop order
        (the inbox is claimed oldest mtime first, each file after ``settle``).
        """
        found = self._one(
            "SELECT job_id FROM jobs WHERE rule = ? AND job_id != ? "
            "AND state IN ('publishing', 'published', 'done') "
            "AND created > (SELECT created FROM jobs WHERE job_id = ?) "
            "AND instr(outputs, ?) > 0 ORDER BY created DESC LIMIT 1",
            (rule, job_id, job_id, _needle(final)))
        return found[0] if found else None

    def published_from(self, sha256: str, rule: str, final: str) -> str | None:
        """A finished job of ``rule`` whose input had this content and published ``final``:
        an input skipped because ``final`` exists may then be deleted without loss."""
        found = self._one(
            "SELECT job_id FROM jobs WHERE sha256 = ? AND rule = ? "
            "AND state IN ('publishing', 'published', 'done') AND instr(outputs, ?) > 0 "
            "ORDER BY created DESC LIMIT 1", (sha256, rule, _needle(final)))
        return found[0] if found else None

    def prune(self, before: float | None, keep: int | None, limit: int = 500) -> int:
        """Delete at most ``limit`` rows of finished jobs (``TERMINAL`` states only) last
        updated before ``before`` (epoch seconds) or older than the newest ``keep`` finished
        ones; returns how many went. A row of a job still under way is never touched: it is
        what a restart resumes from. Bounded, so the main loop's write stays short; the
        caller repeats while a batch comes back full (retention.py)."""
        if before is None and keep is None:
            return 0
        finished = "state IN ('done', 'failed', 'lost')"
        old = ["updated < ?"] if before is not None else []
        if keep is not None:
            old.append(f"job_id NOT IN (SELECT job_id FROM jobs WHERE {finished} "
                       "ORDER BY updated DESC, job_id DESC LIMIT ?)")
        params = tuple(p for p in (before, keep) if p is not None)
        sql = (f"DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs WHERE {finished} "
               f"AND ({' OR '.join(old)}) ORDER BY updated LIMIT ?)")
        before_changes = self.db.total_changes
        self._write(sql, (*params, int(limit)))
        return self.db.total_changes - before_changes

    @staticmethod
    def _row(cur: sqlite3.Cursor, values: tuple) -> Row:
        data = dict(zip([d[0] for d in cur.description], values))
        for key in ("outputs", "detail"):
            data[key] = json.loads(data[key]) if data.get(key) else None
        return Row(**data)


def _translate(path: Path, error: sqlite3.DatabaseError) -> SmaskdError:
    """SQLite's words ("unable to open database file") → which file, and what to do."""
    text = str(error)
    if "readonly" in text or "unable to open" in text:
        return not_writable(path, OSError(errno.EACCES, "read-only or not writable"),
                            "the journal")
    if isinstance(error, sqlite3.OperationalError) and "locked" in text:
        return OutputError(f"the journal is locked by another process ({text}); is another "
                           "smaskd or a sqlite3 shell holding it?", str(path))
    return OutputError(
        f"the journal is not a readable SQLite database ({text}): restore it from a backup, or "
        f"move it aside (mv {path} {path}.broken) and start again: a new journal is created and "
        "claims left in processing/ are run again or finished from their plan markers",
        str(path))


def _needle(final: str) -> str:
    """``final`` as it appears inside the JSON of the ``outputs`` column (quoted, escaped)."""
    return json.dumps(final)


def probe_writable(path: Path) -> str | None:
    """None if the journal at ``path`` takes a write now, else why not (for STATUS).

    A real committed write on a connection of its own (a lock probe alone would miss a full
    disk), into a one-row table, waiting no longer than a journal write does.
    """
    try:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    except sqlite3.Error as e:
        return f"cannot be opened: {e}"
    try:
        db.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, at REAL)")
        db.execute("INSERT OR REPLACE INTO probe VALUES (1, ?)", (time.time(),))
    except sqlite3.Error as e:
        return f"cannot be written: {e}"
    finally:
        db.close()
    return None
