"""Reads and writes of zdm's state tables; every function takes the connection to use.

Functions that mark work done take the connection of the transaction that did the work, so the
work and its bookkeeping commit together.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from zdm.ddl import Query
from zdm.state.schema import SCHEMA_LOCK_KEY, one_of, schema_ddl
from zdm.state.statuses import FINISHED, Direction, RunStatus, StepStatus

# Allowed run transitions: (from, to). A transition not listed raises IllegalTransition.
_R = RunStatus
RUN_TRANSITIONS: frozenset[tuple[RunStatus, RunStatus]] = frozenset(
    {
        (_R.RUNNING, _R.WAITING),
        (_R.RUNNING, _R.PAUSED),
        (_R.RUNNING, _R.FAILED),
        (_R.RUNNING, _R.COMPLETED),
        (_R.RUNNING, _R.ROLLED_BACK),
        (_R.RUNNING, _R.RUNNING),  # a resume after a crash: the dead owner left it running
        (_R.WAITING, _R.RUNNING),
        (_R.PAUSED, _R.RUNNING),
        (_R.FAILED, _R.RUNNING),
        (_R.COMPLETED, _R.RUNNING),  # rollback of a completed run
        (_R.WAITING, _R.ROLLED_BACK),
        (_R.PAUSED, _R.ROLLED_BACK),
        (_R.FAILED, _R.ROLLED_BACK),
    }
)


class IllegalTransition(Exception):
    pass


@dataclass(frozen=True)
class Run:
    id: int
    plan: str
    plan_sha256: str
    direction: Direction
    status: RunStatus
    phase: str | None
    waiting_for: str | None
    gates_passed: list[str]
    pause_requested: bool
    owner_host: str | None
    owner_pid: int | None
    heartbeat: datetime | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    last_error: str | None
    plan_path: str | None = None
    owner_token: str | None = None
    lease_expires: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))
        object.__setattr__(self, "direction", Direction(self.direction))


@dataclass(frozen=True)
class StepRow:
    ordinal: int
    phase: str
    idx: int
    kind: str
    fingerprint: str
    status: StepStatus
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    adopted: bool = False
    remembered: dict[str, Any] | None = None
    """What the step read from the catalog before its first attempt, for its inverse."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", StepStatus(self.status))

    @property
    def key(self) -> str:
        return f"{self.phase}[{self.idx}]"


_STEP_COLUMNS = frozenset(f.name for f in fields(StepRow))


@dataclass(frozen=True)
class BackfillRow:
    ordinal: int
    worker: int
    last_key: list[str] | None
    end_key: list[str] | None
    rows_done: int
    rows_updated: int
    rows_estimated: int | None
    batch_size: int | None
    batches: int
    rate: float | None
    throttle: str | None
    done: bool
    started_at: datetime
    updated_at: datetime
    part: str = ""
    """The partition this walk is of (a backfill of a partitioned table walks each on its own)."""


@dataclass(frozen=True)
class NewStep:
    phase: str
    idx: int
    kind: str
    fingerprint: str


class Store:
    """The state tables of one schema (`zdm` unless --state-schema says otherwise)."""

    def __init__(self, schema: str = "zdm", part: str | None = None) -> None:
        self.schema = schema
        self.part = part
        """The partition whose backfill checkpoints this store reads and writes; None: every
        checkpoint row is read, and those written are of no partition."""

    def for_part(self, part: str) -> Store:
        """The same state, its backfill checkpoints those of one partition's walk."""
        return Store(self.schema, part)

    @property
    def _part(self) -> str:
        return self.part or ""

    def t(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    # -- schema ------------------------------------------------------------------------------

    def exists(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [self.t("runs").as_string(conn)]
        ).fetchone()
        return bool(row and row[0])

    def ensure(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [SCHEMA_LOCK_KEY])
            conn.execute(schema_ddl(self.schema))
            # A state schema of an older zdm: one checkpoint row per partition's walk too.
            key = conn.execute(
                "SELECT array_length(conkey, 1) FROM pg_constraint WHERE contype = 'p'"
                " AND conrelid = %s::regclass",
                [self.t("backfills").as_string(conn)],
            ).fetchone()
            if key is not None and key[0] == 3:
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} DROP CONSTRAINT backfills_pkey,"
                        " ADD PRIMARY KEY (run_id, ordinal, part, worker)"
                    ).format(self.t("backfills"))
                )

    # -- runs --------------------------------------------------------------------------------

    def _run(
        self, conn: psycopg.Connection[Any], where: sql.Composable, params: Sequence[Any]
    ) -> Run | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE {} ORDER BY id DESC LIMIT 1").format(
                    self.t("runs"), where
                ),
                params,
            )
            row = cur.fetchone()
        return Run(**row) if row else None

    def unfinished_run(self, conn: psycopg.Connection[Any], plan: str) -> Run | None:
        return self._run(
            conn, sql.SQL("plan = %s AND status NOT IN ({})").format(one_of(FINISHED)), [plan]
        )

    def latest_run(self, conn: psycopg.Connection[Any], plan: str) -> Run | None:
        return self._run(conn, sql.SQL("plan = %s"), [plan])

    def get_run(self, conn: psycopg.Connection[Any], run_id: int) -> Run:
        run = self._run(conn, sql.SQL("id = %s"), [run_id])
        assert run is not None
        return run

    def all_plans(self, conn: psycopg.Connection[Any]) -> list[str]:
        rows = conn.execute(
            sql.SQL("SELECT plan FROM {} GROUP BY plan ORDER BY max(id) DESC").format(
                self.t("runs")
            )
        ).fetchall()
        return [r[0] for r in rows]

    def create_run(
        self,
        conn: psycopg.Connection[Any],
        plan: str,
        sha256: str,
        path: str | None,
        steps: Sequence[NewStep],
    ) -> Run:
        with conn.transaction():
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (plan, plan_sha256, plan_path, status, owner_host, owner_pid, heartbeat)"
                    " VALUES (%s, %s, %s, %s, %s, %s, now()) RETURNING id"
                ).format(self.t("runs")),
                [plan, sha256, path, RunStatus.RUNNING, socket.gethostname(), os.getpid()],
            ).fetchone()
            assert row is not None
            run_id = int(row[0])
            self._insert_steps(conn, run_id, steps, start=0)
        return self.get_run(conn, run_id)

    def _insert_steps(
        self, conn: psycopg.Connection[Any], run_id: int, steps: Sequence[NewStep], start: int
    ) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (run_id, ordinal, phase, idx, kind, fingerprint) VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(self.t("steps")),
                [
                    (run_id, start + i, s.phase, s.idx, s.kind, s.fingerprint)
                    for i, s in enumerate(steps)
                ],
            )

    def replace_steps(
        self, conn: psycopg.Connection[Any], run: Run, steps: Sequence[NewStep], sha256: str
    ) -> None:
        """After `--force` on a changed plan: the new steps, with those at a finished position done.

        A step that did not change keeps its whole record (attempts, adopted, remembered): its
        inverse still needs what it remembered before it first ran.
        """
        with conn.transaction():
            old = {(s.phase, s.idx): s for s in self.steps(conn, run.id)}
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE run_id = %s").format(self.t("steps")), [run.id]
            )
            self._insert_steps(conn, run.id, steps, start=0)
            kept = []
            for ordinal, new in enumerate(steps):
                prev = old.get((new.phase, new.idx))
                if prev is None:
                    continue
                same = (prev.kind, prev.fingerprint) == (new.kind, new.fingerprint)
                if not same and prev.status != StepStatus.DONE:
                    continue
                kept.append(
                    {
                        "run_id": run.id,
                        "ordinal": ordinal,
                        "status": prev.status if same else StepStatus.DONE,
                        "attempts": prev.attempts if same else 0,
                        "started_at": prev.started_at if same else None,
                        "finished_at": prev.finished_at if same else None,
                        "last_error": prev.last_error if same else None,
                        "adopted": prev.adopted and same,
                        "remembered": (
                            Jsonb(prev.remembered) if same and prev.remembered is not None else None
                        ),
                    }
                )
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL(
                        "UPDATE {} SET status = %(status)s, attempts = %(attempts)s,"
                        " started_at = %(started_at)s, finished_at = CASE WHEN %(status)s = {}"
                        " THEN coalesce(%(finished_at)s, now()) ELSE %(finished_at)s END,"
                        " last_error = %(last_error)s, adopted = %(adopted)s,"
                        " remembered = %(remembered)s WHERE run_id = %(run_id)s"
                        " AND ordinal = %(ordinal)s"
                    ).format(self.t("steps"), sql.Literal(str(StepStatus.DONE))),
                    kept,
                )
            conn.execute(
                sql.SQL("UPDATE {} SET plan_sha256 = %s, updated_at = now() WHERE id = %s").format(
                    self.t("runs")
                ),
                [sha256, run.id],
            )

    def transition(
        self,
        conn: psycopg.Connection[Any],
        run: Run,
        status: RunStatus,
        *,
        phase: str | None = None,
        waiting_for: str | None = None,
        error: str | None = None,
        direction: Direction | None = None,
    ) -> Run:
        current = self.get_run(conn, run.id)
        if (current.status, status) not in RUN_TRANSITIONS:
            raise IllegalTransition(f"run {run.id}: {current.status} -> {status} is not allowed")
        # last_error: set by a failure, kept otherwise (a resumed run shows what stopped it).
        conn.execute(
            sql.SQL(
                "UPDATE {} SET status = %s, phase = coalesce(%s, phase), waiting_for = %s,"
                " last_error = CASE WHEN %s THEN %s ELSE last_error END,"
                " direction = coalesce(%s, direction), owner_host = %s, owner_pid = %s,"
                " heartbeat = now(), updated_at = now(),"
                " finished_at = CASE WHEN %s THEN now() END WHERE id = %s"
            ).format(self.t("runs")),
            [
                status,
                phase,
                waiting_for,
                status == RunStatus.FAILED,
                error,
                direction,
                socket.gethostname(),
                os.getpid(),
                status.finished,
                run.id,
            ],
        )
        return self.get_run(conn, run.id)

    def set_phase(self, conn: psycopg.Connection[Any], run: Run, phase: str) -> None:
        conn.execute(
            sql.SQL("UPDATE {} SET phase = %s, updated_at = now() WHERE id = %s").format(
                self.t("runs")
            ),
            [phase, run.id],
        )

    def pass_gate(self, conn: psycopg.Connection[Any], run: Run, phase: str) -> None:
        conn.execute(
            sql.SQL(
                "UPDATE {} SET gates_passed = array_append(gates_passed, %s) WHERE id = %s"
            ).format(self.t("runs")),
            [phase, run.id],
        )

    def request_pause(self, conn: psycopg.Connection[Any], plan: str, pause: bool) -> Run | None:
        conn.execute(
            sql.SQL(
                "UPDATE {} SET pause_requested = %s, updated_at = now()"
                " WHERE plan = %s AND status NOT IN ({})"
            ).format(self.t("runs"), one_of(FINISHED)),
            [pause, plan],
        )
        return self.unfinished_run(conn, plan)

    def pause_requested(self, conn: psycopg.Connection[Any], run_id: int) -> bool:
        row = conn.execute(
            sql.SQL("SELECT pause_requested FROM {} WHERE id = %s").format(self.t("runs")), [run_id]
        ).fetchone()
        return bool(row and row[0])

    # -- steps -------------------------------------------------------------------------------

    def steps(self, conn: psycopg.Connection[Any], run_id: int) -> list[StepRow]:
        # Every column StepRow knows of: a state schema that `zdm run` or `zdm rollback` has not
        # upgraded yet lacks the newest, which then keep their defaults (read-only commands,
        # such as status and the dry-runs, never upgrade it).
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE run_id = %s ORDER BY ordinal").format(
                    self.t("steps")
                ),
                [run_id],
            )
            return [
                StepRow(**{k: v for k, v in r.items() if k in _STEP_COLUMNS})
                for r in cur.fetchall()
            ]

    def step_started(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinal: int,
        remember: Query | None = None,
    ) -> int:
        """Marks the step running; returns its attempt number (1 on its first start).

        `remember` is the step's catalog query (`zdm.operations.plan_memo`). On the first attempt
        its value is recorded by the same statement that marks the step running, before any of
        the step's work: a step never runs without its record, and a resume, which may find the
        step's own effect in the catalog, never replaces it.
        """
        record: sql.Composable = sql.SQL("")
        if remember is not None:
            record = sql.SQL(
                ", remembered = coalesce(remembered, CASE WHEN attempts = 0 THEN ({}) END)"
            ).format(remember)
        with conn.transaction():
            if remember is not None:
                # Names in remembered SQL come out schema-qualified: the inverse then means the
                # same thing under whatever search_path the rollback's session has.
                conn.execute("SELECT set_config('search_path', '', true)")
            row = conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = {}, attempts = attempts + 1,"
                    " started_at = coalesce(started_at, now()), last_error = NULL{}"
                    " WHERE run_id = %s AND ordinal = %s RETURNING attempts"
                ).format(self.t("steps"), sql.Literal(str(StepStatus.RUNNING)), record),
                [run_id, ordinal],
            ).fetchone()
        return int(row[0]) if row else 1

    def step_finished(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinal: int,
        status: StepStatus = StepStatus.DONE,
        *,
        adopted: bool = False,
    ) -> None:
        # A rolled-back step keeps the time its forward run finished (NULL if it never did): the
        # report's step durations are those of the migration, not "until the rollback".
        conn.execute(
            sql.SQL(
                "UPDATE {} SET status = %s, adopted = %s, finished_at = CASE WHEN %s"
                " THEN finished_at ELSE now() END WHERE run_id = %s AND ordinal = %s"
            ).format(self.t("steps")),
            [status, adopted, status == StepStatus.ROLLED_BACK, run_id, ordinal],
        )

    def step_failed(
        self, conn: psycopg.Connection[Any], run_id: int, ordinal: int, error: str
    ) -> None:
        conn.execute(
            sql.SQL(
                "UPDATE {} SET status = {}, last_error = %s WHERE run_id = %s AND ordinal = %s"
            ).format(self.t("steps"), sql.Literal(str(StepStatus.FAILED))),
            [error, run_id, ordinal],
        )

    # -- backfills ---------------------------------------------------------------------------

    def backfills(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinal: int | None = None,
        worker: int | None = None,
    ) -> list[BackfillRow]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT ordinal, worker, last_key, end_key, rows_done, rows_updated, rows_estimated,"
                    " batch_size, batches, rate, throttle, done, started_at, updated_at, part FROM {}"
                    " WHERE run_id = %s AND (%s::int IS NULL OR ordinal = %s)"
                    " AND (%s::int IS NULL OR worker = %s) AND (%s::text IS NULL OR part = %s)"
                    " ORDER BY ordinal, part, worker"
                ).format(self.t("backfills")),
                [run_id, ordinal, ordinal, worker, worker, self.part, self.part],
            )
            return [BackfillRow(**r) for r in cur.fetchall()]

    def backfill_init(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinals: Sequence[int],
        ranges: Sequence[tuple[list[str] | None, list[str] | None, int]],
    ) -> None:
        """One checkpoint row per worker and step: (start after, end at, rows estimated).

        Call it inside a transaction: a crash must not leave half of the ranges behind.
        """
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL(
                    "INSERT INTO {} (run_id, ordinal, worker, last_key, end_key, rows_estimated, part)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (run_id, ordinal, part, worker) DO NOTHING"
                ).format(self.t("backfills")),
                [
                    (run_id, ordinal, worker, _json(last), _json(end), estimated, self._part)
                    for ordinal in ordinals
                    for worker, (last, end, estimated) in enumerate(ranges)
                ],
            )

    def backfill_finished(
        self, conn: psycopg.Connection[Any], run_id: int, ordinals: Sequence[int], worker: int
    ) -> None:
        """A worker walked its whole range."""
        conn.execute(
            sql.SQL(
                "UPDATE {} SET done = true, rate = NULL, throttle = NULL,"
                " updated_at = clock_timestamp()"
                " WHERE run_id = %s AND ordinal = ANY(%s) AND worker = %s AND part = %s"
            ).format(self.t("backfills")),
            [run_id, list(ordinals), worker, self._part],
        )

    def backfill_throttle(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinals: Sequence[int],
        throttle: str | None,
    ) -> None:
        """Why the walk waits (a throttle, a pause), or None: what `zdm status` shows."""
        conn.execute(
            sql.SQL(
                "UPDATE {} SET throttle = %s, updated_at = clock_timestamp()"
                " WHERE run_id = %s AND ordinal = ANY(%s) AND part = %s AND NOT done"
            ).format(self.t("backfills")),
            [throttle, run_id, list(ordinals), self._part],
        )

    def backfill_restart(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinals: Sequence[int],
        last_end: list[str] | None,
    ) -> None:
        """Another pass: each worker starts again where the range before its own ends.

        `last_end` replaces the end of the last worker's range when given (a ctid walk ends at
        the table's size, which may have grown).
        """
        with conn.transaction():
            conn.execute(
                sql.SQL(
                    "UPDATE {t} b SET last_key = (SELECT p.end_key FROM {t} p"
                    " WHERE p.run_id = b.run_id AND p.ordinal = b.ordinal AND p.part = b.part"
                    " AND p.worker = b.worker - 1),"
                    " done = false, rate = NULL, updated_at = clock_timestamp()"
                    " WHERE b.run_id = %s AND b.ordinal = ANY(%s) AND b.part = %s"
                ).format(t=self.t("backfills")),
                [run_id, list(ordinals), self._part],
            )
            if last_end is not None:
                conn.execute(
                    sql.SQL(
                        "UPDATE {t} SET end_key = %s WHERE run_id = %s AND ordinal = ANY(%s)"
                        " AND part = %s AND worker = (SELECT max(worker) FROM {t} WHERE run_id = %s"
                        " AND ordinal = ANY(%s) AND part = %s)"
                    ).format(t=self.t("backfills")),
                    [
                        _json(last_end),
                        run_id,
                        list(ordinals),
                        self._part,
                        run_id,
                        list(ordinals),
                        self._part,
                    ],
                )

    # -- events ------------------------------------------------------------------------------

    def event(
        self,
        conn: psycopg.Connection[Any],
        run_id: int,
        ordinal: int | None,
        event: str,
        **detail: Any,
    ) -> None:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, ordinal, event, detail) VALUES (%s, %s, %s, %s)"
            ).format(self.t("events")),
            [run_id, ordinal, event, json.dumps(detail, default=str)],
        )

    def events(self, conn: psycopg.Connection[Any], run_id: int) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL(
                    "SELECT ordinal, at, event, detail FROM {} WHERE run_id = %s ORDER BY id"
                ).format(self.t("events")),
                [run_id],
            )
            return list(cur.fetchall())

    # -- rows a mapping cannot convert ------------------------------------------------------

    def record_mapping_error(
        self,
        conn: psycopg.Connection[Any],
        plan: str,
        table: str,
        row_key: dict[str, Any],
        error: psycopg.Error,
        source: str,
    ) -> None:
        """One row whose mapping raised `error` (its key, SQLSTATE and message)."""
        diag = error.diag
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (plan, table_name, row_key, column_name, sqlstate, message, source)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(self.t("mapping_errors")),
            [
                plan,
                table,
                json.dumps(row_key),
                diag.column_name,
                diag.sqlstate or "XX000",
                diag.message_primary or str(error).strip(),
                source,
            ],
        )

    def mapping_errors(
        self,
        conn: psycopg.Connection[Any],
        plan: str,
        *,
        table: str | None = None,
        source: str | None = None,
    ) -> list[dict[str, Any]]:
        """The rows recorded for `plan` (optionally one table's, from one source), oldest first;
        none in a state schema that an older zdm created and no run has brought up to date."""
        found = conn.execute(
            "SELECT to_regclass(%s)", [self.t("mapping_errors").as_string(conn)]
        ).fetchone()
        if not found or found[0] is None:
            return []
        conds = [sql.SQL("plan = %s")]
        params: list[Any] = [plan]
        if table is not None:
            conds.append(sql.SQL("table_name = %s"))
            params.append(table)
        if source is not None:
            conds.append(sql.SQL("source = %s"))
            params.append(source)
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                sql.SQL("SELECT * FROM {} WHERE {} ORDER BY id").format(
                    self.t("mapping_errors"), sql.SQL(" AND ").join(conds)
                ),
                params,
            )
            return list(cur.fetchall())

    def forget_mapping_error(self, conn: psycopg.Connection[Any], error_id: int) -> None:
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE id = %s").format(self.t("mapping_errors")), [error_id]
        )


def _json(value: list[str] | None) -> str | None:
    return None if value is None else json.dumps(value)
