"""The journal: one SQLite file in WAL mode, the single source of truth for jobs and the daemons running them.

Every daemon on the root, and `lyra-assets status`, open the same file; each thread gets its own connection.
Anything that must not race with another daemon (claiming a name, picking the next job, filing originals)
runs inside `locked()`, a write transaction taken up front (BEGIN IMMEDIATE), so SQLite serialises it.

A job moves   claimed -> queued -> running -> done | duplicate | failed
(a crash sends `claimed` and `running` back round; see service.py). `filed` turns 1 once the originals have
left work/ for done/ or failed/, so a daemon that dies between the two steps has its filing finished for it.
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS daemons (
    id        TEXT PRIMARY KEY,
    host      TEXT NOT NULL,
    pid       INTEGER NOT NULL,
    started   REAL NOT NULL,
    heartbeat REAL NOT NULL,
    stopped   REAL                      -- set on a clean exit
);
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,      -- also the folder work/<id>/
    source       TEXT NOT NULL,         -- the file's name as dropped
    sidecars     TEXT NOT NULL,         -- JSON list of the sidecar names as dropped
    rerun_of     TEXT,                  -- a late sidecar's job: the job whose image it builds again
    name         TEXT NOT NULL,         -- output name: out/<name>/, and the files' names in work/<id>/
    state        TEXT NOT NULL,
    filed        INTEGER NOT NULL DEFAULT 0,
    owner        TEXT,                  -- the daemon claiming, running or filing it
    attempts     INTEGER NOT NULL DEFAULT 0,   -- runs that ended in a crash or an unexpected error
    key          TEXT,                  -- job key: image bytes + resolved settings + pipeline version
    plan         TEXT,                  -- JSON: the validated settings the run uses
    error        TEXT,
    duplicate_of TEXT,
    filed_as     TEXT,                  -- where the original went: done/... or failed/...
    created      REAL NOT NULL,
    updated      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs(key);
"""

ACTIVE = ("claimed", "queued", "running")
STALE_AFTER_S = 60.0  # a daemon on another host whose heartbeat is older is dead (the only sign there is)
FINAL = ("done", "duplicate", "failed")


@dataclass(frozen=True)
class JobRow:
    id: str
    source: str
    sidecars: list[str]
    rerun_of: str | None
    name: str
    state: str
    filed: bool
    owner: str | None
    attempts: int
    key: str | None
    plan: dict[str, Any] | None
    error: str | None
    duplicate_of: str | None
    filed_as: str | None
    created: float
    updated: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRow:
        values = dict(row)
        values["sidecars"] = json.loads(values["sidecars"])
        values["plan"] = json.loads(values["plan"]) if values["plan"] else None
        values["filed"] = bool(values["filed"])
        return cls(**values)


@dataclass(frozen=True)
class DaemonRow:
    id: str
    host: str
    pid: int
    started: float
    heartbeat: float
    stopped: float | None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit transactions; locked() opens them explicitly.
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a claim that returned is on disk, even after power loss
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front; nests (an inner call joins the outer transaction)."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- daemons ---------------------------------------------------------------------------------------

    def register_daemon(self, daemon_id: str) -> None:
        now = time.time()
        with self.locked() as db:
            db.execute("INSERT INTO daemons VALUES (?, ?, ?, ?, ?, NULL)",
                       (daemon_id, socket.gethostname(), os.getpid(), now, now))

    def heartbeat(self, daemon_id: str) -> None:
        with self.locked() as db:
            db.execute("UPDATE daemons SET heartbeat = ? WHERE id = ?", (time.time(), daemon_id))

    def daemon_stopped(self, daemon_id: str) -> None:
        with self.locked() as db:
            db.execute("UPDATE daemons SET stopped = ?, heartbeat = ? WHERE id = ?",
                       (time.time(), time.time(), daemon_id))

    def daemons(self) -> list[DaemonRow]:
        return [DaemonRow(**dict(r)) for r in self._conn().execute("SELECT * FROM daemons ORDER BY started")]

    def dead_daemons(self, stale_after_s: float) -> list[str]:
        """Daemons that stopped; on this host, those whose process is gone (a live PID is never declared dead,
        however old its heartbeat: it may be stopped, swapping or busy, and would carry on building what
        another daemon took over); on another host, those whose heartbeat is stale."""
        now, host = time.time(), socket.gethostname()
        dead = []
        for d in self.daemons():
            if d.stopped is not None or (not _alive(d.pid, d.started) if d.host == host
                                         else now - d.heartbeat > stale_after_s):
                dead.append(d.id)
        return dead

    # -- jobs ------------------------------------------------------------------------------------------

    def add_job(self, job_id: str, source: str, sidecars: list[str], name: str, owner: str,
                rerun_of: str | None = None) -> None:
        now = time.time()
        with self.locked() as db:
            db.execute("INSERT INTO jobs (id, source, sidecars, rerun_of, name, state, owner, created, updated) "
                       "VALUES (?, ?, ?, ?, ?, 'claimed', ?, ?, ?)",
                       (job_id, source, json.dumps(sidecars, ensure_ascii=False), rerun_of, name, owner, now, now))

    def delete_job(self, job_id: str) -> None:
        with self.locked() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def update(self, job_id: str, **fields: Any) -> None:
        for column in ("plan", "sidecars"):
            if fields.get(column) is not None:
                fields[column] = json.dumps(fields[column], ensure_ascii=False, sort_keys=True)
        if "filed" in fields:
            fields["filed"] = int(fields["filed"])
        fields["updated"] = time.time()
        columns = ", ".join(f"{column} = ?" for column in fields)
        with self.locked() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))

    def get(self, job_id: str) -> JobRow | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else JobRow.from_row(row)

    def jobs(self, states: tuple[str, ...] | None = None, owner: str | None = None) -> list[JobRow]:
        query, args = "SELECT * FROM jobs WHERE 1", []
        if states is not None:
            query += f" AND state IN ({', '.join('?' * len(states))})"
            args += states
        if owner is not None:
            query += " AND owner = ?"
            args.append(owner)
        return [JobRow.from_row(r) for r in self._conn().execute(query + " ORDER BY created, id", args)]

    def owned_by_others(self, daemon_id: str) -> list[JobRow]:
        """Jobs another daemon is claiming, running or filing: what recovery looks at."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE owner IS NOT NULL AND owner != ? ORDER BY created",
                                    (daemon_id,))
        return [JobRow.from_row(r) for r in rows]

    def names_in_use(self) -> set[str]:
        """Output names held by jobs that may still write them (finished jobs hold theirs by the folder)."""
        rows = self._conn().execute(f"SELECT name FROM jobs WHERE state IN ({', '.join('?' * len(ACTIVE))})", ACTIVE)
        return {r["name"] for r in rows}

    def done_with_key(self, key: str) -> JobRow | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE key = ? AND state = 'done' ORDER BY updated DESC",
                                   (key,)).fetchone()
        return None if row is None else JobRow.from_row(row)

    def next_queued(self) -> JobRow | None:
        """The oldest queued job whose key is not being built right now (one build per key at a time)."""
        row = self._conn().execute(
            "SELECT * FROM jobs AS q WHERE state = 'queued' AND NOT EXISTS "
            "(SELECT 1 FROM jobs AS r WHERE r.key = q.key AND r.state = 'running') ORDER BY created, id LIMIT 1"
        ).fetchone()
        return None if row is None else JobRow.from_row(row)

    def latest_with_stem(self, stem: str, sidecar_suffixes: tuple[str, ...]) -> JobRow | None:
        """The newest job of an image with this stem (not of a sidecar that came alone): what a late sidecar
        `stem.toml` builds again."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE substr(source, 1, ?) = ? ORDER BY created DESC, id DESC",
                                    (len(stem), stem))
        for row in rows:  # "hall.png" and "hall.v2.png" both start with "hall"
            source_stem, suffix = os.path.splitext(row["source"])
            if source_stem == stem and suffix.lower() not in sidecar_suffixes:
                return JobRow.from_row(row)
        return None

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}


def _alive(pid: int, registered: float) -> bool:
    """Is the daemon that registered at `registered` still this PID? A PID reused by a later process (a
    restarted container numbers its processes from 1 again) started after the daemon registered."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    started = _process_start(pid)
    return started is None or started <= registered + 2.0  # the boot time has whole-second precision


def _process_start(pid: int) -> float | None:
    """When the process started (Linux /proc); None where that cannot be read."""
    try:
        ticks = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")
