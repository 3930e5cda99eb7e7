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
"""

from __future__ import annotations

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
from smaskd.errors import ConfigError, OutputError, SmaskdError

__all__ = ["Journal", "Row", "STATES", "TERMINAL"]

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
            self.db.execute("PRAGMA synchronous=FULL")
            if create:
                self.db.executescript(_SCHEMA)
                have = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
                for column, kind in _ADDED.items():
                    if column not in have:
                        self.db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            else:
                self.db.execute("SELECT COUNT(*) FROM jobs").fetchone()
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def add(self, job_id: str, host_id: str, inbox: str, name: str, claim_path: Path,
            size: int | None = None) -> None:
        now = time.time()
        self.db.execute(
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
        self.db.execute(f"UPDATE jobs SET {cols} WHERE job_id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> Row | None:
        cur = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        found = cur.fetchone()
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
        found = self.db.execute(
            "SELECT job_id FROM jobs WHERE sha256 = ? AND rule = ? AND job_id != ? "
            "AND state IN ('published', 'done') ORDER BY created LIMIT 1",
            (sha256, rule, job_id)).fetchone()
        return found[0] if found else None

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
