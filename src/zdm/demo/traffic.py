"""Simulated application traffic on the example ``users`` table.

Traffic tests, benchmarks and ``zdm demo`` use it to prove that a migration does not stall a
live application: worker threads run point selects, updates and inserts the way a web
application would, and every statement's start time, latency and error are recorded so the
caller can compare a baseline window with the window during a migration step.

The simulated application exists in two versions. The *old app* knows nothing of the
``phone`` column and keeps writing messy phone strings into ``contact``. The *new app*, deployed
with :meth:`Traffic.use_new_app` (or automatically once the column exists, with
``auto_new_app=True``), also reads ``phone`` and writes it, normalised exactly like the plan's
``regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import secrets
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, LiteralString, Self

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from zdm.stats import percentile

__all__ = [
    "KINDS",
    "KindStats",
    "Mix",
    "Traffic",
    "TrafficReport",
    "messy_phone",
    "normalize_phone",
]

KINDS: tuple[str, ...] = ("select", "update", "insert")
"""Statement kinds, in the order of their codes in the recorded samples."""
ALL_KINDS: tuple[str, ...] = (*KINDS, "txn")
"""With the multi-row transactions that only some traffic has (reported when it has them)."""

NEW_COLUMN = "phone"
"""The column the new application version reads and writes."""

CONTACT_UPDATE_SHARE = 0.2
"""Share of updates that also write a new messy phone into ``contact``."""

HOT_ROWS = 200
"""A ``txn`` of the hot kind updates rows among this many, spread evenly over the ids."""
HOT_SHARE = 1 / 3
"""Share of ``txn`` transactions among the hot rows."""

STATEMENT_TIMEOUT_S = 30.0
"""Client-side safety net so that a stuck test cannot hang forever."""

AUTO_CHECK_INTERVAL_S = 0.2
"""How often ``auto_new_app`` looks for the ``phone`` column."""

APPLICATION_NAME = "zdm-traffic"

_MAX_ERROR_MESSAGES = 1000
_RECONNECT_WAIT_S = 0.05
_ERROR_SAMPLES = 10
_PHONE_JUNK = re.compile(r"[^0-9+]")

_FIRST_NAMES = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret")
_LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_PHONE_FORMATS = (
    "({a}) {e}-{n}",
    "{a}-{e}-{n}",
    "{a}.{e}.{n}",
    "{a} {e} {n}",
    " {a}{e}{n} ",
    "+1 {a} {e} {n}",
    "+1 ({a}) {e}-{n}",
    "1-{a}-{e}-{n}",
    "+1-{a}-{e}-{n} ext. {x}",
    "tel: {a}/{e}-{n}",
)


def normalize_phone(raw: str | None) -> str | None:
    """Python twin of ``regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')``."""
    if raw is None:
        return None
    return _PHONE_JUNK.sub("", raw)


def messy_phone(rng: random.Random) -> str:
    """A legacy-looking phone string that normalises to ``^\\+?[0-9]{10,15}$``."""
    template = rng.choice(_PHONE_FORMATS)
    return template.format(
        a=rng.randint(200, 999),
        e=rng.randint(200, 999),
        n=f"{rng.randint(0, 9999):04d}",
        x=rng.randint(1, 99),
    )


@dataclass(frozen=True)
class Mix:
    """Relative weights of the statement kinds (they need not sum to 1)."""

    select: float = 0.6
    update: float = 0.3
    insert: float = 0.1
    txn: float = 0.0
    """Transactions that update 2 or 3 rows in random order, a third of them among the
    `HOT_ROWS` first rows: what an application's row locks look like to a backfill."""

    def __post_init__(self) -> None:
        weights = self.all_weights()
        if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise ValueError(f"mix weights must be finite, >= 0 and not all 0: {self}")

    def weights(self) -> tuple[float, ...]:
        """Weights in the order of :data:`KINDS`."""
        return (self.select, self.update, self.insert)

    def all_weights(self) -> tuple[float, ...]:
        """Weights in the order of :data:`ALL_KINDS`."""
        return (*self.weights(), self.txn)

    @classmethod
    def parse(cls, text: str) -> Mix:
        """Parse ``select=0.6,update=0.3,insert=0.1`` (omitted kinds get weight 0)."""
        values: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ALL_KINDS:
                raise ValueError(f"expected kind=weight with kind in {ALL_KINDS}, got {part!r}")
            values[key] = float(value)
        return cls(**{kind: values.get(kind, 0.0) for kind in ALL_KINDS})


@dataclass(frozen=True)
class KindStats:
    """Latency statistics of one statement kind, or of all statements."""

    count: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    throughput: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "throughput": round(self.throughput, 3),
        }


def _stats(latencies: list[float], errors: int, duration_s: float) -> KindStats:
    latencies.sort()
    count = len(latencies)
    return KindStats(
        count=count,
        errors=errors,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] if latencies else 0.0,
        mean_ms=math.fsum(latencies) / count if count else 0.0,
        throughput=count / duration_s if duration_s > 0 else 0.0,
    )


class _Samples:
    """Compact column store of recorded statements: about 9 bytes each, errors kept sparse."""

    __slots__ = ("err_at", "err_msg", "kinds", "latencies_ms", "messages", "starts")

    def __init__(self, messages: list[str] | None = None) -> None:
        self.kinds = array("b")
        self.starts = array("f")  # seconds since the traffic started
        self.latencies_ms = array("f")
        self.err_at = array("q")  # indices of failed statements, ascending
        self.err_msg = array("H")  # index into messages, parallel to err_at
        self.messages: list[str] = messages if messages is not None else []

    def __len__(self) -> int:
        return len(self.kinds)

    def errors(self) -> Iterator[tuple[float, int, str]]:
        """(start, kind, message) of every failed statement."""
        for at, msg in zip(self.err_at, self.err_msg, strict=True):
            yield self.starts[at], self.kinds[at], self.messages[msg]

    @classmethod
    def merge(cls, parts: Sequence[_Samples], messages: list[str]) -> _Samples:
        merged = cls(messages)
        for part in parts:
            offset = len(merged)
            merged.kinds.extend(part.kinds)
            merged.starts.extend(part.starts)
            merged.latencies_ms.extend(part.latencies_ms)
            merged.err_at.extend(offset + at for at in part.err_at)
            merged.err_msg.extend(part.err_msg)
        return merged

    def select(self, t0: float, t1: float) -> _Samples:
        """The statements that started within ``[t0, t1)``."""
        out = _Samples(self.messages)
        failed = dict(zip(self.err_at, self.err_msg, strict=True))
        for i, start in enumerate(self.starts):
            if t0 <= start < t1:
                if i in failed:
                    out.err_at.append(len(out))
                    out.err_msg.append(failed[i])
                out.kinds.append(self.kinds[i])
                out.starts.append(start)
                out.latencies_ms.append(self.latencies_ms[i])
        return out


@dataclass(frozen=True)
class TrafficReport:
    """What the application saw: counts, errors and latencies, overall and per kind.

    Latency statistics cover every statement, failed ones included: a statement that waited
    for a lock and then failed was a stall all the same.
    """

    duration_s: float
    count: int
    errors: int
    error_samples: list[str]
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    throughput: float
    kinds: dict[str, KindStats]
    t0: float = 0.0
    """Where this report's time span begins, in seconds since the traffic started."""
    _samples: _Samples = field(default_factory=_Samples, repr=False, compare=False)

    @classmethod
    def _build(cls, samples: _Samples, t0: float, t1: float) -> TrafficReport:
        duration = max(0.0, t1 - t0)
        by_kind: list[list[float]] = [[] for _ in ALL_KINDS]
        for kind, ms in zip(samples.kinds, samples.latencies_ms, strict=True):
            by_kind[kind].append(ms)
        errors_by_kind = [0] * len(ALL_KINDS)
        error_samples: list[str] = []
        for _, kind, message in sorted(samples.errors()):
            errors_by_kind[kind] += 1
            if len(error_samples) < _ERROR_SAMPLES and message not in error_samples:
                error_samples.append(message)
        overall = _stats(list(samples.latencies_ms), len(samples.err_at), duration)
        return cls(
            duration_s=duration,
            count=overall.count,
            errors=overall.errors,
            error_samples=error_samples,
            p50_ms=overall.p50_ms,
            p99_ms=overall.p99_ms,
            max_ms=overall.max_ms,
            mean_ms=overall.mean_ms,
            throughput=overall.throughput,
            kinds={
                name: _stats(by_kind[code], errors_by_kind[code], duration)
                for code, name in enumerate(ALL_KINDS)
                if name in KINDS or by_kind[code]
            },
            t0=t0,
            _samples=samples,
        )

    def stalls(self, threshold_ms: float) -> list[tuple[float, str, float]]:
        """(start s, kind, latency ms) of every statement that took at least ``threshold_ms``."""
        s = self._samples
        found = [
            (float(s.starts[i]), ALL_KINDS[s.kinds[i]], float(ms))
            for i, ms in enumerate(s.latencies_ms)
            if ms >= threshold_ms
        ]
        return sorted(found)

    def latencies(self) -> list[tuple[float, float]]:
        """(start in seconds since the traffic started, latency ms) of every statement."""
        s = self._samples
        return [(float(a), float(ms)) for a, ms in zip(s.starts, s.latencies_ms, strict=True)]

    def window(self, t0: float, t1: float) -> TrafficReport:
        """Report of the statements that started within ``[t0, t1)`` seconds after the start.

        The window's duration (for throughput) is clipped to the part of it inside this report.
        """
        lo = max(t0, self.t0)
        hi = min(t1, self.t0 + self.duration_s)
        return TrafficReport._build(self._samples.select(t0, t1), lo, max(lo, hi))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "duration_s": round(self.duration_s, 3),
            "count": self.count,
            "errors": self.errors,
            "error_samples": list(self.error_samples),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
            "mean_ms": round(self.mean_ms, 3),
            "throughput": round(self.throughput, 3),
            "kinds": {name: stats.as_dict() for name, stats in self.kinds.items()},
        }

    def format_table(self) -> str:
        """A small aligned text table: one row per kind, then all statements."""
        header = ("kind", "count", "errors", "p50_ms", "p99_ms", "max_ms", "per_s")
        rows = [header]
        overall = KindStats(
            self.count,
            self.errors,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            self.mean_ms,
            self.throughput,
        )
        for name, st in [*self.kinds.items(), ("all", overall)]:
            rows.append(
                (
                    name,
                    str(st.count),
                    str(st.errors),
                    f"{st.p50_ms:.2f}",
                    f"{st.p99_ms:.2f}",
                    f"{st.max_ms:.2f}",
                    f"{st.throughput:.1f}",
                )
            )
        widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if col == 0 else cell.rjust(w)
                for col, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.append(f"duration {self.duration_s:.1f} s")
        return "\n".join(lines)


class _IdRange:
    """The ids that point reads and writes draw from; inserts widen it."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi
        self._lock = threading.Lock()

    def grow(self, new_id: int) -> None:
        with self._lock:
            if self.hi < self.lo:
                self.lo = new_id
            self.hi = max(self.hi, new_id)

    def draw(self, rng: random.Random) -> int:
        lo, hi = self.lo, self.hi
        return rng.randint(lo, hi) if hi >= lo else lo


@dataclass(frozen=True)
class _Statements:
    select_old: sql.Composed
    select_new: sql.Composed
    update_name: sql.Composed
    update_contact_old: sql.Composed
    update_contact_new: sql.Composed
    insert_old: sql.Composed
    insert_new: sql.Composed
    id_range: sql.Composed

    @classmethod
    def build(cls, schema: str, table: str) -> _Statements:
        t = sql.Identifier(schema, table)
        phone = sql.Identifier(NEW_COLUMN)

        def q(template: LiteralString) -> sql.Composed:
            return sql.SQL(template).format(t=t, phone=phone)

        return cls(
            select_old=q(
                "SELECT id, email, name, email_verified, contact, created_at, updated_at"
                " FROM {t} WHERE id = %s AND deleted_at IS NULL"
            ),
            select_new=q(
                "SELECT id, email, name, email_verified, contact, {phone}, created_at, updated_at"
                " FROM {t} WHERE id = %s AND deleted_at IS NULL"
            ),
            update_name=q(
                "UPDATE {t} SET name = %s, updated_at = now() WHERE id = %s AND deleted_at IS NULL"
            ),
            update_contact_old=q(
                "UPDATE {t} SET name = %s, contact = contact || %s, updated_at = now()"
                " WHERE id = %s AND deleted_at IS NULL"
            ),
            update_contact_new=q(
                "UPDATE {t} SET name = %s, contact = contact || %s, {phone} = %s,"
                " updated_at = now() WHERE id = %s AND deleted_at IS NULL"
            ),
            insert_old=q(
                "INSERT INTO {t} (email, name, password_hash, email_verified, contact)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id"
            ),
            insert_new=q(
                "INSERT INTO {t} (email, name, password_hash, email_verified, contact, {phone})"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
            ),
            id_range=q("SELECT min(id), max(id) FROM {t}"),
        )


def _connect(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME)
    # Never prepare: a column added mid-run must not trip "cached plan must not change result type".
    conn.prepare_threshold = None
    try:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            (f"{int(STATEMENT_TIMEOUT_S * 1000)}ms",),
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _describe(exc: BaseException) -> str:
    """``ClassName: primary message`` — without details that would make every error distinct."""
    message = ""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        message = exc.diag.message_primary
    if not message:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}"


class _Worker:
    """One application thread: its own connection, its own random stream, its own samples."""

    def __init__(self, traffic: Traffic, index: int) -> None:
        self.traffic = traffic
        self.index = index
        self.rng = random.Random(traffic.seed * 1_000_003 + index)
        self.samples = _Samples()
        self.conn: psycopg.Connection[Any] | None = None
        self.inserted = 0
        self.crash: BaseException | None = None
        self.thread = threading.Thread(target=self.run, name=f"zdm-traffic-{index}", daemon=True)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not vanish with the thread
            self.crash = exc
        finally:
            if self.conn is not None:
                self.conn.close()

    def _loop(self) -> None:
        tr = self.traffic
        weights = tr.mix.all_weights()
        total = sum(weights)
        pause_s = tr.pause_ms / 1000.0
        reconnect_wait = _RECONNECT_WAIT_S
        while not tr._stopping.is_set():
            pick = self.rng.random() * total
            kind = 0
            while kind < len(weights) - 1 and pick >= weights[kind]:
                pick -= weights[kind]
                kind += 1
            # Take the time before reading the app version: a statement that starts after a
            # switch is then guaranteed to run as the version switched to.
            started = time.monotonic()
            new_app = tr._new_app.is_set()
            error: str | None = None
            try:
                if self.conn is None:
                    self.conn = _connect(tr.dsn)
                self._execute(self.conn, kind, new_app)
            except psycopg.Error as exc:
                if tr._cancelled.is_set():
                    break  # cancelled by stop(): not something the application saw
                error = _describe(exc)
                if self.conn is not None and (self.conn.closed or self.conn.broken):
                    self.conn.close()
                    self.conn = None
            self._record(kind, started, time.monotonic(), error)
            if self.conn is None:
                # The server is unreachable: back off instead of spinning on connects.
                wait, reconnect_wait = reconnect_wait, min(1.0, reconnect_wait * 2)
            else:
                wait, reconnect_wait = pause_s, _RECONNECT_WAIT_S
            if wait > 0 and tr._stopping.wait(wait):
                break

    def _record(self, kind: int, started: float, ended: float, error: str | None) -> None:
        s = self.samples
        if error is not None:
            s.err_at.append(len(s))
            s.err_msg.append(self.traffic._message_id(error))
        s.kinds.append(kind)
        s.starts.append(started - self.traffic._t0)
        s.latencies_ms.append((ended - started) * 1000.0)

    def _execute(self, conn: psycopg.Connection[Any], kind: int, new_app: bool) -> None:
        tr = self.traffic
        st = tr._sql
        rng = self.rng
        if kind == 0:
            conn.execute(st.select_new if new_app else st.select_old, (tr._ids.draw(rng),))
        elif kind == 1:
            name = self._name()
            target = tr._ids.draw(rng)
            if rng.random() >= CONTACT_UPDATE_SHARE:
                conn.execute(st.update_name, (name, target))
            else:
                phone = messy_phone(rng)
                contact = Jsonb({"phone": phone})
                if new_app:
                    params: tuple[Any, ...] = (name, contact, normalize_phone(phone), target)
                    conn.execute(st.update_contact_new, params)
                else:
                    conn.execute(st.update_contact_old, (name, contact, target))
        elif kind == 3:
            hot = rng.random() < HOT_SHARE
            lo, step = tr._ids.lo, max(1, (tr._ids.hi - tr._ids.lo + 1) // HOT_ROWS)
            size = rng.choice((2, 3))
            targets: list[int] = []
            while len(targets) < size:
                target = lo + rng.randrange(HOT_ROWS) * step if hot else tr._ids.draw(rng)
                if target not in targets:
                    targets.append(target)
            with conn.transaction():
                for i, target in enumerate(targets):  # in random order, as applications do
                    if i and tr.txn_think_ms:
                        time.sleep(tr.txn_think_ms / 1000)  # the application's work between
                    conn.execute(st.update_name, (self._name(), target))
        else:
            self.inserted += 1
            name = self._name()
            local = re.sub(r"[^a-z]", "", name.lower())
            email = f"{local}.{tr._token}.{self.index}.{self.inserted}@example.com"
            password_hash = "$argon2id$v=19$m=65536,t=3,p=4$" + secrets.token_hex(16)
            phone = messy_phone(rng)
            values: tuple[Any, ...] = (
                email,
                name,
                password_hash,
                rng.random() < 0.5,
                Jsonb({"phone": phone}),
            )
            if new_app:
                cur = conn.execute(st.insert_new, (*values, normalize_phone(phone)))
            else:
                cur = conn.execute(st.insert_old, values)
            row = cur.fetchone()
            if row is not None:
                tr._ids.grow(int(row[0]))

    def _name(self) -> str:
        return f"{self.rng.choice(_FIRST_NAMES)} {self.rng.choice(_LAST_NAMES)}"


class Traffic:
    """Concurrent application traffic on the ``users`` table, recorded statement by statement.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with Traffic(dsn, threads=4) as traffic:
            time.sleep(1)
            t = traffic.now()
            run_migration()
        report = traffic.report
        print(report.window(0, t).p99_ms, report.window(t, report.duration_s).p99_ms)
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        table: str = "users",
        threads: int = 4,
        mix: Mix | None = None,
        pause_ms: float = 0.0,
        auto_new_app: bool = False,
        seed: int = 0,
        txn_think_ms: float = 0.0,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        if pause_ms < 0:
            raise ValueError("pause_ms must be >= 0")
        self.dsn = dsn
        self.schema = schema
        self.table = table
        self.threads = threads
        self.mix = mix if mix is not None else Mix()
        self.pause_ms = pause_ms
        self.auto_new_app = auto_new_app
        self.seed = seed
        self.txn_think_ms = txn_think_ms
        """Time a `txn` transaction spends between its updates, holding the rows it wrote."""
        self.report: TrafficReport | None = None
        """Set by :meth:`stop`."""
        self.new_app_since: float | None = None
        """Seconds after the start at which the new app was switched on, if it was."""
        self._sql = _Statements.build(schema, table)
        self._token = secrets.token_hex(4)  # keeps emails unique across runs on one table
        self._new_app = threading.Event()
        self._stopping = threading.Event()
        self._cancelled = threading.Event()
        self._messages: list[str] = []
        self._message_ids: dict[str, int] = {}
        self._messages_lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._watcher: threading.Thread | None = None
        self._watcher_error: BaseException | None = None
        self._ids = _IdRange(1, 0)
        self._t0 = 0.0
        self._started = False

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        """Read the id range, then start the worker threads (and the new-app watcher)."""
        if self._started:
            raise RuntimeError("traffic already started")
        with _connect(self.dsn) as conn:
            row = conn.execute(self._sql.id_range).fetchone()
        lo, hi = (row[0], row[1]) if row is not None else (None, None)
        self._ids = _IdRange(1, 0) if lo is None or hi is None else _IdRange(int(lo), int(hi))
        self._started = True
        self._t0 = time.monotonic()
        if self._new_app.is_set():
            self.new_app_since = 0.0
        self._workers = [_Worker(self, i) for i in range(self.threads)]
        for worker in self._workers:
            worker.thread.start()
        if self.auto_new_app and not self._new_app.is_set():
            self._watcher = threading.Thread(
                target=self._watch, name="zdm-traffic-watcher", daemon=True
            )
            self._watcher.start()

    def stop(self, timeout: float = 5.0) -> TrafficReport:
        """Stop issuing statements and return the report.

        Statements in flight get ``timeout`` seconds to finish; then they are cancelled and left
        out of the report (the application did not see them fail: the test ended).
        """
        if self.report is not None:
            return self.report
        if not self._started:
            raise RuntimeError("traffic not started")
        duration = self.now()
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [w for w in self._workers if w.thread.is_alive()]
        if stuck:
            self._cancelled.set()
            for worker in stuck:
                conn = worker.conn
                if conn is not None and not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.cancel_safe(timeout=5.0)
            for worker in stuck:
                worker.thread.join(STATEMENT_TIMEOUT_S)
        if self._watcher is not None:
            self._watcher.join(STATEMENT_TIMEOUT_S)
        for worker in self._workers:
            if worker.crash is not None:
                raise RuntimeError(f"traffic worker {worker.index} crashed") from worker.crash
        if self._watcher_error is not None:
            raise RuntimeError("traffic new-app watcher crashed") from self._watcher_error
        with self._messages_lock:
            messages = list(self._messages)
        samples = _Samples.merge([w.samples for w in self._workers], messages)
        self.report = TrafficReport._build(samples, 0.0, duration)
        return self.report

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started and self.report is None:
            self.stop()

    def now(self) -> float:
        """Seconds since :meth:`start` (0.0 before it): the time base of every report."""
        return time.monotonic() - self._t0 if self._started else 0.0

    # -- application version -------------------------------------------------------------

    def use_new_app(self, enabled: bool = True) -> None:
        """Deploy (or roll back) the new application version, which reads and writes ``phone``.

        Statements that start after this call returns run as the chosen version. The new app
        selects ``phone`` too, so switch it off before anything drops that column.
        """
        if enabled and not self._new_app.is_set():
            self.new_app_since = self.now()
            self._new_app.set()
        elif not enabled:
            self._new_app.clear()

    @property
    def new_app(self) -> bool:
        """Whether the new application version is deployed."""
        return self._new_app.is_set()

    def _watch(self) -> None:
        """Switch to the new app once the ``phone`` column exists (``auto_new_app``)."""
        query = sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a"
            " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s"
            " AND a.attnum > 0 AND NOT a.attisdropped)"
        )
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stopping.is_set() and not self._new_app.is_set():
                try:
                    if conn is None:
                        conn = _connect(self.dsn)
                    row = conn.execute(query, (self.schema, self.table, NEW_COLUMN)).fetchone()
                    if row is not None and row[0]:
                        self.use_new_app(True)
                        break
                except psycopg.Error:
                    if conn is not None and conn.closed:
                        conn = None
                self._stopping.wait(AUTO_CHECK_INTERVAL_S)
        except BaseException as exc:
            self._watcher_error = exc
        finally:
            if conn is not None:
                conn.close()

    def _message_id(self, message: str) -> int:
        with self._messages_lock:
            found = self._message_ids.get(message)
            if found is not None:
                return found
            if len(self._messages) >= _MAX_ERROR_MESSAGES:
                message = message.partition(":")[0] + ": (further distinct messages elided)"
                found = self._message_ids.get(message)
                if found is not None:
                    return found
            self._message_ids[message] = len(self._messages)
            self._messages.append(message)
            return len(self._messages) - 1


def _default_dsn() -> str:
    return os.environ.get("ZDM_DSN") or os.environ.get("DATABASE_URL") or ""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zdm.demo.traffic``: run traffic for a while and print the report table."""
    parser = argparse.ArgumentParser(
        prog="python -m zdm.demo.traffic", description="Simulated application traffic on users."
    )
    parser.add_argument("--dsn", default=_default_dsn(), help="default: ZDM_DSN, DATABASE_URL")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--schema", default="public")
    parser.add_argument("--table", default="users")
    parser.add_argument(
        "--mix", type=Mix.parse, default=Mix(), help="e.g. select=0.6,update=0.3,insert=0.1"
    )
    parser.add_argument("--pause-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--new-app", action="store_true", help="run the new app from the start")
    parser.add_argument("--auto-new-app", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--latency-out",
        metavar="FILE",
        help="write every statement's start (epoch s) and latency (ms) as CSV, the form"
        " `zdm report --html --latency` reads",
    )
    args = parser.parse_args(argv)
    try:
        traffic = Traffic(
            args.dsn,
            schema=args.schema,
            table=args.table,
            threads=args.threads,
            mix=args.mix,
            pause_ms=args.pause_ms,
            auto_new_app=args.auto_new_app,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    traffic.use_new_app(args.new_app)
    try:
        traffic.start()
    except psycopg.Error as exc:
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        time.sleep(args.seconds)
    wall0 = time.time() - traffic.now()
    report = traffic.stop()
    if args.latency_out:
        from zdm.timeline import write_latency_csv

        write_latency_csv(args.latency_out, ((wall0 + at, ms) for at, ms in report.latencies()))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format_table())
        for sample in report.error_samples:
            print(f"error: {sample}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
