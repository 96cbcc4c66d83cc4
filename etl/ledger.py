"""The ledger: what was sent, under which key, and what came of it. The only sqlite3 user.

The "record" stage (… → send → **record** → report), and the memory that makes a re-run safe.
One SQLite file (WAL, ``synchronous=FULL``: every commit that guards money is fsynced) holds:

    captures   one row per identity (order_id, capture_reference): content hash, key generation,
               key, state, capture id, correlation id, amount, times, attempt count
    attempts   every HTTP attempt: time, status, latency, correlation id, error
    runs       every run: id, pid, start and end, how it ended

States of a capture::

    sending ──► captured            (201)
       │  ├───► rejected            (a definitive 4xx: nothing was captured)
       │  ├───► failed / unknown    (retries exhausted; unknown: a timeout or drop, may exist)
       │  └───► planned             (admitted but never started: nothing left the machine)

Write-ahead: ``intents`` commits ``sending`` for a batch before any of it is sent; ``outcomes``
commits the result right after the answers (the sender batches both). A crash in between leaves
``sending``, which the next run treats as unknown.

Two runs on one ledger: an exclusive lock (``flock`` on ``<ledger>.lock``) held for the whole
run. The kernel drops it when the process dies, even by SIGKILL, so a crash never leaves a stale
lock, and no claim timeout has to be tuned; the second run waits up to ``--lock-wait`` seconds,
then refuses with the holder's pid and start time. The ledger must be on a local filesystem
(``flock`` is not reliable over NFS).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from etl.config import ENV_LEDGER, IDEMPOTENCY_WINDOW_SECONDS, default_ledger_path
from etl.errors import LedgerBusyError, LedgerError
from etl.model import AttemptRecord, CaptureOutcome, CaptureRequest

SCHEMA_VERSION = 1
LedgerState = Literal["planned", "sending", "captured", "rejected", "failed", "unknown"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS captures (
    order_id TEXT NOT NULL,
    capture_reference TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    captured_amount INTEGER,
    currency TEXT,
    capture_id TEXT,
    capture_location TEXT,
    correlation_id TEXT,
    http_status INTEGER,
    error_code TEXT,
    error_messages TEXT,
    key_first_sent_at TEXT,
    completed_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_id TEXT,
    PRIMARY KEY (order_id, capture_reference)
);
CREATE INDEX IF NOT EXISTS captures_key ON captures (idempotency_key);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    run_id TEXT,
    order_id TEXT NOT NULL,
    capture_reference TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    latency_ms REAL,
    http_status INTEGER,
    correlation_id TEXT,
    error TEXT,
    outcome_unknown INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS attempts_identity ON attempts (order_id, capture_reference);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    inputs TEXT,
    outcome TEXT
);
"""


def resolve_ledger_path(option: Path | None) -> Path:
    """``--ledger``, else ``$BULKCAPTURE_LEDGER``, else the documented default."""
    if option is not None:
        return option
    env = os.environ.get(ENV_LEDGER)
    return Path(env) if env else default_ledger_path()


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat() if dt else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class LedgerRow:
    """One capture as the ledger knows it."""

    order_id: str
    capture_reference: str
    content_hash: str
    generation: int
    idempotency_key: str
    state: LedgerState
    captured_amount: int | None
    currency: str | None
    capture_id: str | None
    capture_location: str | None
    correlation_id: str | None
    http_status: int | None
    error_code: str | None
    error_messages: str | None
    key_first_sent_at: datetime | None
    completed_at: datetime | None
    attempts: int
    run_id: str | None

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> LedgerRow:
        d = dict(row)
        d["key_first_sent_at"] = _dt(d["key_first_sent_at"])
        d["completed_at"] = _dt(d["completed_at"])
        return cls(**d)


class RunLock:
    """An exclusive ``flock`` on ``<ledger>.lock``; the file names the holder for the message."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0, run_id: str = "",
                sleep: Callable[[float], None] = time.sleep) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger lock {self.path}: {exc.strerror}; "
                              "choose another --ledger path.") from exc
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise LedgerBusyError(
                        f"another bulkcapture run holds the ledger {self.path.with_suffix('')} "
                        f"({holder}); wait for it to finish, or pass --lock-wait SECONDS to "
                        "wait for it.") from None
                sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"run {run_id}, pid {os.getpid()}, since "
                      f"{datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Ledger:
    """The SQLite ledger. ``run_id`` tags what this process writes."""

    def __init__(self, path: Path, *, now: Callable[[], datetime] | None = None) -> None:
        self.path = path
        self.now = now or (lambda: datetime.now(UTC))
        self.run_id: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout= is the busy timeout from the first statement on: a reader (the ledger
            # command) may open it while a run writes.
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                      timeout=10.0)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: each commit is fsynced, so an intent is on disk before its request leaves.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            version = self.db.execute("SELECT value FROM meta WHERE key='schema_version'")
            found = version.fetchone()
            if found is None:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                (str(SCHEMA_VERSION),))
            elif int(found[0]) != SCHEMA_VERSION:
                raise LedgerError(f"ledger {path} has schema version {found[0]}, this bulkcapture "
                                  f"knows {SCHEMA_VERSION}; use a matching bulkcapture version.")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}; check the path, or move a "
                              "damaged file aside.") from exc
        except OSError as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc.strerror}; choose another "
                              "--ledger path.") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction; a SQLite failure becomes a ``LedgerError`` (exit 1)."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write the ledger {self.path}: {exc}; nothing more is "
                              "sent. Free disk space or fix the path, then re-run: captures "
                              "whose outcome was not recorded are re-sent with the same "
                              "key.") from exc

    # -- runs --------------------------------------------------------------------------------
    def begin_run(self, run_id: str, inputs: Sequence[str]) -> None:
        self.run_id = run_id
        with self._tx() as db:
            db.execute("INSERT INTO runs (run_id, pid, started_at, inputs) VALUES (?,?,?,?)",
                       (run_id, os.getpid(), _iso(self.now()), json.dumps(list(inputs))))

    def end_run(self, outcome: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE runs SET finished_at=?, outcome=? WHERE run_id=?",
                       (_iso(self.now()), outcome, self.run_id))

    # -- lookups -----------------------------------------------------------------------------
    def rows_for(self, identities: Iterable[tuple[str, str]]) -> dict[tuple[str, str], LedgerRow]:
        """The ledger rows of these identities (a temp-table join: fast for a million)."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (o TEXT, r TEXT)")
        self.db.execute("DELETE FROM wanted")
        self.db.executemany("INSERT INTO wanted VALUES (?, ?)", identities)
        cur = self.db.execute(
            "SELECT c.* FROM captures c JOIN wanted w "
            "ON c.order_id = w.o AND c.capture_reference = w.r")
        out = {(r["order_id"], r["capture_reference"]): LedgerRow.from_sql(r) for r in cur}
        self.db.execute("DELETE FROM wanted")
        return out

    def captures_of(self, order_id: str) -> list[LedgerRow]:
        cur = self.db.execute("SELECT * FROM captures WHERE order_id=? ORDER BY completed_at",
                              (order_id,))
        return [LedgerRow.from_sql(r) for r in cur]

    def attempts_of(self, order_id: str, capture_reference: str) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT * FROM attempts WHERE order_id=? AND capture_reference=? ORDER BY id",
            (order_id, capture_reference))
        return [dict(r) for r in cur]

    def captured_rows(self) -> list[dict[str, Any]]:
        """Every captured capture as a results-shaped row (what ``reconcile`` reads)."""
        cur = self.db.execute(
            "SELECT order_id, capture_reference, capture_id, captured_amount, currency, "
            "completed_at, run_id, 'captured' AS status FROM captures WHERE state='captured'")
        return [{**dict(r), "completed_at": _dt(r["completed_at"]), "source_file": str(self.path)}
                for r in cur]

    # -- the Recorder protocol (etl.send) ----------------------------------------------------
    def intents(self, reqs: Sequence[CaptureRequest], at: datetime) -> None:
        """``sending`` for each request, committed (fsynced) before any of them leaves.

        ``key_first_sent_at`` is kept while the key stays the same: it anchors the provider's
        24 h idempotency window for that key.
        """
        rows = [(r.order_id, r.capture_reference, r.content_hash, r.generation,
                 r.idempotency_key, r.captured_amount, r.currency, _iso(at), self.run_id)
                for r in reqs]
        with self._tx() as db:
            db.executemany(
                """INSERT INTO captures (order_id, capture_reference, content_hash, generation,
                       idempotency_key, state, captured_amount, currency, key_first_sent_at,
                       run_id)
                   VALUES (?1, ?2, ?3, ?4, ?5, 'sending', ?6, ?7, ?8, ?9)
                   ON CONFLICT (order_id, capture_reference) DO UPDATE SET
                       content_hash=?3, generation=?4,
                       key_first_sent_at=CASE WHEN idempotency_key=?5
                           AND key_first_sent_at IS NOT NULL THEN key_first_sent_at ELSE ?8 END,
                       idempotency_key=?5, state='sending', captured_amount=?6, currency=?7,
                       run_id=?9, http_status=NULL, error_code=NULL, error_messages=NULL,
                       capture_id=NULL, capture_location=NULL, correlation_id=NULL,
                       completed_at=NULL""",
                rows)

    def attempts(self, records: Sequence[AttemptRecord]) -> None:
        if not records:
            return
        with self._tx() as db:
            db.executemany(
                """INSERT INTO attempts (run_id, order_id, capture_reference, idempotency_key,
                       attempt, started_at, latency_ms, http_status, correlation_id, error,
                       outcome_unknown)
                   SELECT ?, order_id, capture_reference, ?, ?, ?, ?, ?, ?, ?, ?
                   FROM captures WHERE idempotency_key = ?""",
                [(self.run_id, a.idempotency_key, a.attempt, _iso(a.started_at), a.latency_ms,
                  a.http_status, a.correlation_id, a.error, int(a.outcome_unknown),
                  a.idempotency_key) for a in records])
            db.executemany(
                "UPDATE captures SET attempts = attempts + 1 WHERE idempotency_key = ?",
                [(a.idempotency_key,) for a in records])

    def outcomes(self, done: Sequence[tuple[CaptureRequest, CaptureOutcome]]) -> None:
        with self._tx() as db:
            db.executemany(
                """UPDATE captures SET state=?, capture_id=?, capture_location=?,
                       correlation_id=?, http_status=?, error_code=?, error_messages=?,
                       completed_at=?
                   WHERE order_id=? AND capture_reference=? AND idempotency_key=?""",
                [(_state_of(o), o.capture_id, o.capture_location, o.correlation_id,
                  o.http_status, o.error_code, "; ".join(o.error_messages) or None,
                  _iso(o.completed_at), r.order_id, r.capture_reference, r.idempotency_key)
                 for r, o in done])

    def record_found(self, req: CaptureRequest, capture: dict[str, Any], at: datetime) -> None:
        """A capture found on the order (by its reference) after an unknown outcome."""
        with self._tx() as db:
            db.execute(
                """UPDATE captures SET state='captured', capture_id=?, completed_at=?,
                       error_code=NULL, error_messages=NULL
                   WHERE order_id=? AND capture_reference=?""",
                (capture.get("capture_id"), capture.get("captured_at") or _iso(at),
                 req.order_id, req.capture_reference))

    def within_window(self, row: LedgerRow) -> bool:
        """Is this row's key still inside the provider's idempotency window (23 h, for margin)?"""
        if row.key_first_sent_at is None:
            return True
        age = self.now() - row.key_first_sent_at
        return age < timedelta(seconds=IDEMPOTENCY_WINDOW_SECONDS)


def _state_of(o: CaptureOutcome) -> LedgerState:
    if o.status == "captured":
        return "captured"
    if o.status == "rejected":
        return "rejected"
    if o.status == "not_sent":
        return "planned"
    return "unknown" if o.outcome_unknown else "failed"
