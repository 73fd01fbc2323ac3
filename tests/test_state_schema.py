"""The state tables' CHECK constraints come from the status enums, and a state schema made by the
previous zdm (whose CHECKs were written out by hand) is upgraded in place with the same ones."""

from __future__ import annotations

from typing import Any

import psycopg

from zdm.state import Store
from zdm.state.statuses import Direction, ErrorSource, RunStatus, StepStatus

# The tables as the previous zdm created them, with only the columns the CHECKs are on: every
# other column is added by `ensure` (ADD COLUMN IF NOT EXISTS) or its table is new.
PREVIOUS = """
CREATE SCHEMA zdm;
CREATE TABLE zdm.runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan text NOT NULL,
    plan_sha256 text NOT NULL,
    plan_path text,
    direction text NOT NULL DEFAULT 'forward' CHECK (direction IN ('forward', 'rollback')),
    status text NOT NULL CHECK (status IN ('running', 'waiting', 'paused', 'failed', 'completed',
                                           'rolled_back')),
    phase text,
    waiting_for text,
    gates_passed text[] NOT NULL DEFAULT '{}',
    pause_requested boolean NOT NULL DEFAULT false,
    owner_host text,
    owner_pid integer,
    heartbeat timestamptz,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_error text
);
CREATE UNIQUE INDEX runs_one_unfinished_per_plan ON zdm.runs (plan)
    WHERE status NOT IN ('completed', 'rolled_back');
CREATE TABLE zdm.steps (
    run_id bigint NOT NULL REFERENCES zdm.runs ON DELETE CASCADE,
    ordinal integer NOT NULL,
    phase text NOT NULL,
    idx integer NOT NULL,
    kind text NOT NULL,
    fingerprint text NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'rolled_back')),
    attempts integer NOT NULL DEFAULT 0,
    started_at timestamptz,
    finished_at timestamptz,
    last_error text,
    PRIMARY KEY (run_id, ordinal)
);
"""

CHECKS = """
SELECT c.relname, pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
 WHERE k.contype = 'c' AND c.relnamespace = 'zdm'::regnamespace
 ORDER BY 1, 2
"""
INDEX = "SELECT pg_get_indexdef('zdm.runs_one_unfinished_per_plan'::regclass)"


def _constraints(conn: psycopg.Connection[Any]) -> tuple[list[tuple[str, str]], str]:
    index = conn.execute(INDEX).fetchone()
    assert index is not None
    return [(r[0], r[1]) for r in conn.execute(CHECKS).fetchall()], str(index[0])


def test_checks_list_the_enums(conn: psycopg.Connection[Any]) -> None:
    Store().ensure(conn)
    checks, _ = _constraints(conn)
    listed = {(table, value) for table, text in checks for value in text.split("'")[1::2]}
    assert {("runs", s.value) for s in (*RunStatus, *Direction)} <= listed
    assert {("steps", s.value) for s in StepStatus} <= listed
    assert {("mapping_errors", s.value) for s in ErrorSource} <= listed


def test_a_previous_state_schema_upgrades_to_the_same_constraints(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as old:
        old.execute(PREVIOUS)
        old.execute(
            "INSERT INTO zdm.runs (plan, plan_sha256, status) VALUES ('p', 'x', 'completed')"
        )
        Store().ensure(old)
        upgraded = _constraints(old)
        (status,) = old.execute("SELECT status FROM zdm.runs").fetchone() or ()
        assert status == RunStatus.COMPLETED
        old.execute("DROP SCHEMA zdm CASCADE")
        Store().ensure(old)
        assert _constraints(old) == upgraded
