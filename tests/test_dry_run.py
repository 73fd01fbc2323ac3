"""`zdm run --dry-run`: changes nothing, and prints exactly what `zdm run` then executes.

What users rely on: "can I see what it will do before it does it".

- With a database, the dry-run leaves the catalog, the data and zdm's own state exactly as they
  were, and never creates the `zdm` schema.
- Its statements are the run's statements: for every unit of every step but the backfill, the
  non-comment lines the dry-run prints equal, in order, the statements the run logs at debug
  level (`{"event": "sql"}`), transaction boundaries and `SET LOCAL` timeouts included. A unit
  the dry-run prints but the run skips must be one the dry-run marked as conditional ("skipped
  if the catalog shows it done") and one the run logged as `already_done`.
- The backfill is a template in the dry-run (one batch, `%s` for the keys): its batch statement
  (range, UPDATE and checkpoint in one) is compared with the statements the running backfill is
  seen executing in pg_stat_activity (`$n` parameters read as `%s`), and a batch's whole
  transaction with what the workers log at debug level (`batch_sql`).
- The `verify` query is the one the run logs.
- Without any database (no --dsn, no ZDM_DSN/DATABASE_URL/PG* variables) it still prints the
  plan, and says that nothing was checked.
- After a partial run (`--until backfill`) it marks the finished steps as done.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from zdm_helpers import (
    add_phone,
    events,
    output_of,
    scalar,
    seed,
    start_zdm,
    write_plan,
    zdm,
)

from zdm import api

ROWS = 20_000

CATALOG = {
    "namespaces": "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_(toast|temp)' ORDER BY 1",
    "relations": "SELECT c.oid::regclass::text, c.relkind, c.relfilenode FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'zdm')"
    " ORDER BY 1",
    "columns": "SELECT a.attrelid::regclass::text, a.attname, a.atttypid::regtype::text,"
    " a.attnotnull, a.attisdropped, a.atthasdef FROM pg_attribute a JOIN pg_class c"
    " ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname IN ('public', 'zdm') AND a.attnum > 0 ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, contype, convalidated,"
    " pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace IN"
    " (SELECT oid FROM pg_namespace WHERE nspname IN ('public', 'zdm')) ORDER BY 1, 2",
    "indexes": "SELECT indexrelid::regclass::text, indisvalid, indisready,"
    " pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid IN (SELECT c.oid FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'zdm'))"
    " ORDER BY 1",
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger"
    " WHERE NOT tgisinternal ORDER BY 1, 2",
    "functions": "SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc p"
    " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'zdm')"
    " ORDER BY 1",
    "users": "SELECT count(*), md5(string_agg(u::text, '|' ORDER BY id)) FROM users u",
}
STATE_TABLES = ("runs", "steps", "backfills", "events")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The user schema's catalog and data, and zdm's state, as comparable values."""
    snap: dict[str, Any] = {k: conn.execute(q).fetchall() for k, q in CATALOG.items()}
    if scalar(conn, "SELECT to_regnamespace('zdm') IS NOT NULL"):
        for t in STATE_TABLES:
            snap[f"zdm.{t}"] = conn.execute(
                f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM zdm.{t} t"
            ).fetchone()
    return snap


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    return dsn


@pytest.fixture
def watcher(seeded: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(seeded, autocommit=True) as conn:
        yield conn


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "add_phone.yaml", add_phone(backfill={"batch_size": 200}))


# -- the dry-run's text, and the run's log, as units -----------------------------------------


@dataclass
class DryStep:
    key: str
    kind: str
    done: bool
    blocks: list[tuple[str, bool]] = field(default_factory=list)
    """(statements, conditional) of each unit it prints to run."""
    lines: list[str] = field(default_factory=list)


CONDITIONAL = "skipped if the catalog still shows it done"


def dry_steps(text: str) -> dict[str, DryStep]:
    """The dry-run's steps; each unit is a run of consecutive statement (non-comment) lines."""
    steps: dict[str, DryStep] = {}
    current: DryStep | None = None
    block: list[str] = []
    conditional = False

    def close() -> None:
        nonlocal block, conditional
        if current is not None and block:
            current.blocks.append(("\n".join(block), conditional))
        block, conditional = [], False

    for line in text.splitlines():
        m = re.match(r"-- step (\S+) (\S+)", line)
        if m:
            close()
            current = steps[m[1]] = DryStep(m[1], m[2], "already done by this run" in line)
            continue
        if current is None:
            continue
        current.lines.append(line)
        if line.startswith("--") or not line.strip():
            if block:
                close()
            if CONDITIONAL in line:
                conditional = True
            continue
        block.append(line)
    close()
    return steps


@dataclass
class RunStep:
    key: str
    units: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)


def run_steps(stderr: str) -> dict[str, RunStep]:
    """The run's steps: each unit is the `sql` events logged between two unit boundaries."""
    steps: dict[str, RunStep] = {}
    current: RunStep | None = None
    unit: list[str] = []
    for e in events(stderr):
        name = e["event"]
        if name == "step_start":
            current = steps[e["step"]] = RunStep(e["step"])
        elif current is None:
            continue
        elif name == "sql":
            unit.append(e["sql"] + ";")
        elif name == "unit_done":
            current.units.append("\n".join(unit))
            unit = []
        elif name == "already_done":
            current.skipped.append(e["unit"])
        elif name == "verify":
            current.verify.append(e["sql"] + ";")
    assert not unit, f"statements logged outside any unit: {unit}"
    return steps


def assert_same_statements(dry: dict[str, DryStep], ran: dict[str, RunStep]) -> None:
    """Every unit the run executed is the next unit the dry-run printed, statement by statement."""
    for key, step in ran.items():
        printed = dry[key]
        assert not printed.done, f"{key}: the dry-run said it was done, but the run ran it"
        if printed.kind == "backfill":
            continue  # a template: checked against pg_stat_activity instead
        if printed.kind == "verify":
            assert step.verify == [b for b, _ in printed.blocks], key
            continue
        executed = list(step.units)
        skipped = len(step.skipped)
        for block, conditional in printed.blocks:
            if executed and block == executed[0]:
                executed.pop(0)
                continue
            # The dry-run may print a unit the run then skips: only if it said so.
            assert conditional, f"{key}: the run did not execute this printed unit:\n{block}"
            assert skipped > 0, f"{key}: printed unit neither executed nor skipped:\n{block}"
            skipped -= 1
        assert executed == [], f"{key}: the run executed units the dry-run did not print:\n" + (
            "\n---\n".join(executed)
        )
    for key, printed in dry.items():
        if key not in ran:
            assert printed.done, f"{key}: printed as to run, but the run did not run it"


class Sampler(threading.Thread):
    """Collects the statements zdm's sessions are seen running in pg_stat_activity."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.seen: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                for (query,) in conn.execute(
                    "SELECT query FROM pg_stat_activity WHERE application_name LIKE 'zdm %'"
                ).fetchall():
                    self.seen.add(re.sub(r"\$\d+", "%s", query))
                self.stop.wait(0.002)


# -- tests -------------------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_prints_what_the_run_executes(
    seeded: str, watcher: psycopg.Connection[Any], plan: Path, server_version: int
) -> None:
    before = snapshot(watcher)
    dry = zdm("run", plan, "--dry-run", "--dsn", seeded)
    assert dry.returncode == 0, output_of(dry)
    assert snapshot(watcher) == before
    assert scalar(watcher, "SELECT to_regnamespace('zdm')") is None
    assert "Traceback" not in dry.stderr
    assert f"PostgreSQL {server_version // 10000}" in dry.stdout

    sampler = Sampler(seeded)
    sampler.start()
    try:
        proc = start_zdm(
            "--log-level", "debug", "--log-format", "json", "run", plan, "--dsn", seeded
        )
        ran = proc.wait()
    finally:
        sampler.stop.set()
        sampler.join()
    assert ran.returncode == 0, output_of(ran)

    printed = dry_steps(dry.stdout)
    executed = run_steps(ran.stderr)
    assert list(printed) == list(executed)
    assert_same_statements(printed, executed)

    # The backfill: the batch statement (range, UPDATE, checkpoint) the dry-run shows is the
    # one the run executes.
    backfill = [line for line in printed["backfill[0]"].lines if line.startswith("WITH zdm_range")]
    assert len(backfill) == 1
    template = backfill[0].rstrip(";")
    first_batch = template.replace('("id") > (%s) AND ', "").replace(' WHERE ("id") > (%s)', "")
    updates = {q for q in sampler.seen if q.startswith("WITH zdm_range")}
    assert template in updates, sorted(sampler.seen)
    assert updates <= {template, first_batch}, sorted(updates)


def test_a_backfill_batch_sends_the_statements_the_dry_run_prints(seeded: str, plan: Path) -> None:
    """A batch's whole transaction, as the workers log what they send (`batch_sql`, debug),
    is the one the dry-run prints: BEGIN, the lock policy's SETs, the batch statement with its
    checkpoint, COMMIT; the first batch only lacks the lower bound (there is no last key yet)."""
    dry = zdm("run", plan, "--dry-run", "--dsn", seeded)
    assert dry.returncode == 0, output_of(dry)
    lines = dry_steps(dry.stdout)["backfill[0]"].lines
    begin = lines.index("BEGIN;")
    printed = lines[begin : lines.index("COMMIT;", begin) + 1]
    assert [line.split(" ")[0] for line in printed] == ["BEGIN;", "SET", "WITH", "COMMIT;"]

    ran = zdm("--log-level", "debug", "--log-format", "json", "run", plan, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)
    sent = [
        e["sql"] for e in events(ran.stderr) if e["event"] == "batch_sql" and e["kind"] == "batch"
    ]
    assert len(sent) == -(-ROWS // 200) + 1  # 200 rows a batch, and the one that finds none
    first = [
        q.replace('("id") > (%s) AND ', "").replace(' WHERE ("id") > (%s)', "") for q in printed
    ]
    assert sent[0] == first
    assert all(batch == printed for batch in sent[1:]), sent[1]


def test_dry_run_without_a_database(plan: Path) -> None:
    dry = zdm("run", plan, "--dry-run")  # the helper's environment has no DSN and no PG*
    assert dry.returncode == 0, output_of(dry)
    assert "no database given" in dry.stdout
    assert 'ALTER TABLE "public"."users" ADD COLUMN "phone" varchar(20);' in dry.stdout
    assert "CREATE INDEX CONCURRENTLY" in dry.stdout
    assert "Traceback" not in dry.stderr


def test_dry_run_after_a_partial_run_marks_finished_steps(
    seeded: str, watcher: psycopg.Connection[Any], plan: Path
) -> None:
    partial = zdm("run", plan, "--until", "backfill", "--dsn", seeded)
    assert partial.returncode == 0, output_of(partial)
    assert "waiting" in partial.stderr

    before = snapshot(watcher)
    dry = zdm("run", plan, "--dry-run", "--dsn", seeded)
    assert dry.returncode == 0, output_of(dry)
    assert snapshot(watcher) == before  # zdm's own state included

    printed = dry_steps(dry.stdout)
    assert {k for k, s in printed.items() if s.done} == {
        "additive[0]",
        "dual_write[0]",
        "backfill[0]",
    }
    for key in ("additive[0]", "dual_write[0]"):
        assert printed[key].blocks == [], f"{key} is done: nothing of it is printed to run"

    # What is left is what the resumed run executes.
    ran = zdm("--log-level", "debug", "--log-format", "json", "run", plan, "--dsn", seeded)
    assert ran.returncode == 0, output_of(ran)
    assert_same_statements(printed, run_steps(ran.stderr))


def test_raw_sql_ending_with_its_own_semicolon_is_printed_once(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path / "raw.yaml",
        {
            "version": 1,
            "name": "raw",
            "phases": {
                "cleanup": [
                    {
                        "sql": {
                            "up": "UPDATE settings SET v = 1;\nUPDATE settings SET v = 2;\n",
                            "lock": "ROW EXCLUSIVE",
                            "tables": ["settings"],
                        }
                    },
                    {"sql": {"up": "UPDATE settings SET v = 3", "lock": "ROW EXCLUSIVE"}},
                ]
            },
        },
    )
    text = api.dry_run(plan, None)
    assert "UPDATE settings SET v = 2;\nCOMMIT;" in text, text
    assert "UPDATE settings SET v = 3;\nCOMMIT;" in text, text
    assert "\n;\n" not in text, text
