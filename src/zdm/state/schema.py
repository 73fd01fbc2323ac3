"""The state schema: zdm's own tables in the target database.

Invariants live in constraints: one unfinished run per plan (a partial unique index), statuses
from a fixed set (CHECK, written from the enums of state/statuses.py).

The tables are created with IF NOT EXISTS and gain later columns with ADD COLUMN IF NOT EXISTS,
so an older state schema is upgraded by running this again. A CHECK is only written when its
table is created: a change to a set of statuses needs its own ALTER here for existing tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import LiteralString

from psycopg import sql

from zdm.state.statuses import FINISHED, Direction, ErrorSource, RunStatus, StepStatus

_DDL: LiteralString = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan text NOT NULL,
    plan_sha256 text NOT NULL,
    plan_path text,
    direction text NOT NULL DEFAULT {forward} CHECK (direction IN ({directions})),
    status text NOT NULL CHECK (status IN ({run_statuses})),
    phase text,
    waiting_for text,
    gates_passed text[] NOT NULL DEFAULT '{{}}',
    pause_requested boolean NOT NULL DEFAULT false,
    owner_host text,
    owner_pid integer,
    heartbeat timestamptz,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    last_error text
);
-- owner_token, lease_expires: the run's owner proves itself by its token, and only while the lease
-- it renews with every heartbeat lasts (state/lease.py).
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS owner_token text;
ALTER TABLE {s}.runs ADD COLUMN IF NOT EXISTS lease_expires timestamptz;
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_unfinished_per_plan ON {s}.runs (plan)
    WHERE status NOT IN ({finished});
CREATE TABLE IF NOT EXISTS {s}.steps (
    run_id bigint NOT NULL REFERENCES {s}.runs ON DELETE CASCADE,
    ordinal integer NOT NULL,
    phase text NOT NULL,
    idx integer NOT NULL,
    kind text NOT NULL,
    fingerprint text NOT NULL,
    status text NOT NULL DEFAULT {pending} CHECK (status IN ({step_statuses})),
    attempts integer NOT NULL DEFAULT 0,
    started_at timestamptz,
    finished_at timestamptz,
    last_error text,
    adopted boolean NOT NULL DEFAULT false,
    remembered jsonb,
    PRIMARY KEY (run_id, ordinal)
);
-- adopted: the step found its effect already in place on its first attempt (the object existed
-- before the run), so rollback leaves it alone.
ALTER TABLE {s}.steps ADD COLUMN IF NOT EXISTS adopted boolean NOT NULL DEFAULT false;
-- remembered: what the step read from the catalog right before its first attempt (the default
-- it replaces, the definition of the index or constraint it drops), for its inverse; NULL when
-- it remembers nothing or ran under an older zdm.
ALTER TABLE {s}.steps ADD COLUMN IF NOT EXISTS remembered jsonb;
CREATE TABLE IF NOT EXISTS {s}.backfills (
    run_id bigint NOT NULL REFERENCES {s}.runs ON DELETE CASCADE,
    ordinal integer NOT NULL,
    worker integer NOT NULL DEFAULT 0,
    last_key jsonb,
    end_key jsonb,
    rows_done bigint NOT NULL DEFAULT 0,
    rows_updated bigint NOT NULL DEFAULT 0,
    rows_estimated bigint,
    batch_size integer,
    batches bigint NOT NULL DEFAULT 0,
    rate double precision,
    throttle text,
    done boolean NOT NULL DEFAULT false,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    part text NOT NULL DEFAULT '',     -- the partition a walk of a partitioned table is of
    PRIMARY KEY (run_id, ordinal, part, worker)
);
ALTER TABLE {s}.backfills ADD COLUMN IF NOT EXISTS part text NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS {s}.events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES {s}.runs ON DELETE CASCADE,
    ordinal integer,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    event text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{{}}'
);
CREATE TABLE IF NOT EXISTS {s}.migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    plan text NOT NULL,
    file text NOT NULL,
    sha256 text NOT NULL,
    run_id bigint REFERENCES {s}.runs ON DELETE SET NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.mapping_errors (
    id bigserial PRIMARY KEY,
    plan text NOT NULL,
    table_name text NOT NULL,          -- qualified, quoted form, e.g. public.users
    row_key jsonb NOT NULL,            -- primary-key columns -> values; {{"ctid": "(0,1)"}} without a key
    column_name text,                  -- the mapped column whose expression raised, if known
    sqlstate text NOT NULL,
    message text NOT NULL,
    source text NOT NULL CHECK (source IN ({sources})),
    at timestamptz NOT NULL DEFAULT now()
);
-- The dual-write triggers record here the rows their mapping raised for, as the application's
-- role, which may have no rights on this schema but USAGE: hence SECURITY DEFINER (zdm's role)
-- with a fixed search_path. row_data is the row as written: its key columns are kept (all of
-- it for a table without a primary key).
CREATE OR REPLACE FUNCTION {s}.record_mapping_error(
    plan text, rel oid, row_data jsonb, column_name text, sqlstate text, message text, source text
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $zdm$
DECLARE
    zdm_key jsonb;
    zdm_table text;
BEGIN
    rel := coalesce(pg_partition_root(rel), rel);  -- a partition's row is its table's
    SELECT format('%I.%I', n.nspname, c.relname) INTO zdm_table
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
    SELECT jsonb_object_agg(a.attname, row_data -> a.attname) INTO zdm_key
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = rel AND i.indisprimary;
    INSERT INTO {s}.mapping_errors (plan, table_name, row_key, column_name, sqlstate, message, source)
    VALUES (plan, coalesce(zdm_table, rel::text), coalesce(zdm_key, row_data), column_name,
            sqlstate, message, source);
END;
$zdm$;
GRANT USAGE ON SCHEMA {s} TO PUBLIC;
"""

# Serialises concurrent first runs creating the schema (CREATE … IF NOT EXISTS races otherwise).
SCHEMA_LOCK_KEY = 0x7A646D00


def one_of(values: Iterable[StrEnum]) -> sql.Composed:
    """`'running', 'waiting', …`: the values of a CHECK (… IN (…)) or NOT IN (…)."""
    return sql.SQL(", ").join(sql.Literal(str(v)) for v in values)


def schema_ddl(schema: str) -> sql.Composed:
    return sql.SQL(_DDL).format(
        s=sql.Identifier(schema),
        forward=sql.Literal(str(Direction.FORWARD)),
        directions=one_of(Direction),
        run_statuses=one_of(RunStatus),
        finished=one_of(FINISHED),
        pending=sql.Literal(str(StepStatus.PENDING)),
        step_statuses=one_of(StepStatus),
        sources=one_of(ErrorSource),
    )
