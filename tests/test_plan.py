"""The plan format: models, YAML loading with positions, cross-step rules, JSON Schema."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zdm.plan import (
    PHASES,
    STEP_KINDS,
    AddCheck,
    AddColumn,
    Backfill,
    BackfillFrom,
    CreateIndex,
    DropColumn,
    DropDualWrite,
    DualWrite,
    LoadedPlan,
    Phase,
    Phases,
    Plan,
    PlanError,
    PlanIssue,
    PlanStep,
    Settings,
    Verify,
    format_duration,
    load_plan,
    parse_duration,
    parse_plan,
    plan_json_schema,
)

# The example of DESIGN.md, "Plan format (version 1)", verbatim.
EXAMPLE = r"""version: 1
name: add_phone                 # optional; defaults to the file name without extension
description: Add a validated, indexed, required phone column to users.
schema: public                  # schema of unqualified table names
settings:                       # every key optional; these are the defaults
  lock_timeout: 200ms           # first attempt of a statement whose lock would block app traffic
  lock_timeout_max: 2s          # later attempts wait a little longer each time, up to this
  statement_timeout: 0          # DDL statements; 0 = none (validating scans never time out)
  lock_retries: 50              # attempts per step before the run fails (resumable)
  retry_max_wait: 30s           # cap of the exponential backoff between attempts (with jitter)
gates: [cleanup]                # phases before which a run stops until `zdm run --continue`
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: varchar(20)}}
  dual_write:
    - dual_write:
        table: users
        set: {phone: "regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"}
  backfill:
    - backfill: {table: users, batch_size: auto}
  dual_read:
    - verify:
        sql: SELECT count(*) FROM users WHERE phone IS NULL
        expect: 0
  cleanup:
    - create_index: {table: users, name: idx_users_phone, columns: [phone]}
    - add_check: {table: users, name: check_phone_format, check: "phone ~ '^\\+?[0-9]{10,15}$'"}
    - set_not_null: {table: users, column: phone}
    - drop_dual_write: {table: users}
"""

# The smallest valid body of each kind, in the phase where it is allowed.
MINIMAL: dict[str, tuple[Phase, str]] = {
    "create_table": ("additive", "{table: t, columns: [{name: id, type: bigint}]}"),
    "drop_table": ("cleanup", "{table: t}"),
    "rename_table": ("cleanup", "{table: t, to: u}"),
    "add_column": ("additive", "{table: t, column: {name: c, type: text}}"),
    "drop_column": ("cleanup", "{table: t, column: c}"),
    "set_type": ("additive", "{table: t, column: c, type: varchar(20)}"),
    "rename_column": ("cleanup", "{table: t, column: c, to: d}"),
    "set_default": ("additive", "{table: t, column: c, default: '0'}"),
    "drop_default": ("cleanup", "{table: t, column: c}"),
    "set_comment": ("additive", "{table: t, column: c, comment: hello}"),
    "rename_constraint": ("cleanup", "{table: t, name: a, to: b}"),
    "add_primary_key": ("additive", "{table: t, name: t_pkey, columns: [c]}"),
    "set_replica_identity": ("additive", "{table: t, type: full}"),
    "create_index": ("additive", "{table: t, name: i, columns: [c]}"),
    "drop_index": ("cleanup", "{name: i}"),
    "add_check": ("additive", "{table: t, name: k, check: c > 0}"),
    "add_foreign_key": (
        "additive",
        "{table: t, name: fk, columns: [u_id], references: {table: u, columns: [id]}}",
    ),
    "add_unique": ("additive", "{table: t, name: uq, columns: [c]}"),
    "validate_constraint": ("cleanup", "{table: t, name: k}"),
    "drop_constraint": ("cleanup", "{table: t, name: k}"),
    "set_not_null": ("cleanup", "{table: t, column: c}"),
    "drop_not_null": ("cleanup", "{table: t, column: c}"),
    "dual_write": ("dual_write", "{table: t, set: {c: lower(b)}}"),
    "drop_dual_write": ("cleanup", "{table: t}"),
    "backfill": ("backfill", "{table: t, set: {c: lower(b)}}"),
    "verify": ("dual_read", "{sql: select 1, expect: 1}"),
    "sql": ("additive", "{up: select 1}"),
    "expose": ("dual_read", "{schema: app_v2, tables: [{table: t}]}"),
    "unexpose": ("cleanup", "{schema: app_v2}"),
}

DESTRUCTIVE = {
    "drop_table",
    "rename_table",
    "drop_column",
    "rename_column",
    "drop_default",
    "drop_index",
    "drop_constraint",
    "rename_constraint",
    "set_not_null",
    "drop_not_null",
    "drop_dual_write",
    "unexpose",
}


def plan_text(phase: str, *steps: str, header: str = "") -> str:
    """A minimal plan whose ``phase`` holds ``steps`` (each a line like ``- kind: {...}``)."""
    lines = ["version: 1", *filter(None, [header]), "phases:", f"  {phase}:"]
    lines += [f"    {step}" for step in steps]
    return "\n".join(lines) + "\n"


def issues_of(text: str, filename: str = "p.yaml") -> list[str]:
    """The issues of an invalid plan, as printed."""
    with pytest.raises(PlanError) as caught:
        parse_plan(text, filename)
    return [str(issue) for issue in caught.value.issues]


# --- valid plans ----------------------------------------------------------------------------


def test_design_example_parses() -> None:
    loaded = parse_plan(EXAMPLE, "plans/add_phone.yaml")
    plan = loaded.plan

    assert loaded.name == "add_phone"
    assert loaded.sha256 == hashlib.sha256(EXAMPLE.encode()).hexdigest()
    assert plan.schema_ == "public"
    # DESIGN.md's example lists its defaults; zdm's measured lock_timeout default is 50ms.
    assert plan.settings == Settings(lock_timeout=200)
    assert Settings().lock_timeout == 50
    assert plan.settings.lock_timeout_max == 2000
    assert plan.gates == ["cleanup"]
    assert [(step.key, step.kind) for step in loaded.steps()] == [
        ("additive[0]", "add_column"),
        ("dual_write[0]", "dual_write"),
        ("backfill[0]", "backfill"),
        ("dual_read[0]", "verify"),
        ("cleanup[0]", "create_index"),
        ("cleanup[1]", "add_check"),
        ("cleanup[2]", "set_not_null"),
        ("cleanup[3]", "drop_dual_write"),
    ]
    add = plan.phases.additive[0]
    assert isinstance(add, AddColumn)
    assert (add.column.name, add.column.type, add.column.nullable) == ("phone", "varchar(20)", True)
    dual = plan.phases.dual_write[0]
    assert isinstance(dual, DualWrite)
    assert dual.set == {"phone": "regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"}
    assert dual.trigger_name == "zdm_dw_users"
    verify = plan.phases.dual_read[0]
    assert isinstance(verify, Verify)
    assert verify.expect == 0 and type(verify.expect) is int
    check = plan.phases.cleanup[1]
    assert isinstance(check, AddCheck)
    assert check.check == r"phone ~ '^\+?[0-9]{10,15}$'"
    assert check.validate is True
    assert loaded.step_line("additive[0]") == 14
    assert loaded.step_line("cleanup[3]") == 29
    assert loaded.step_line("cleanup[4]") is None


def test_iter_steps_in_phase_order() -> None:
    plan = parse_plan(EXAMPLE).plan
    phases = [phase for phase, _, _ in plan.iter_steps()]
    assert phases == sorted(phases, key=PHASES.index)
    assert all(isinstance(step, PlanStep) for step in plan.steps())
    assert [index for phase, index, _ in plan.iter_steps() if phase == "cleanup"] == [0, 1, 2, 3]


def test_load_plan_from_file(tmp_path: Path) -> None:
    path = tmp_path / "2024_add_phone.yaml"
    text = EXAMPLE.replace("name: add_phone", "# no name")
    path.write_bytes(text.encode())

    loaded = load_plan(path)

    assert isinstance(loaded, LoadedPlan)
    assert loaded.name == "2024_add_phone"
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.text == text
    assert loaded.base_dir == tmp_path
    assert loaded.path == path
    assert load_plan(str(path)).plan == loaded.plan


def test_phases_literal_matches_tuple() -> None:
    assert get_args(Phase) == PHASES
    assert tuple(Phases.model_fields) == PHASES


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_every_kind_parses(kind: str) -> None:
    phase, body = MINIMAL[kind]
    plan = parse_plan(plan_text(phase, f"- {kind}: {body}")).plan
    (step,) = plan.phases.of(phase)
    assert type(step) is STEP_KINDS[kind]
    assert step.kind == kind


def test_minimal_covers_every_kind_and_destructive_flags() -> None:
    assert set(MINIMAL) == set(STEP_KINDS)
    assert {kind for kind, cls in STEP_KINDS.items() if cls.destructive} == DESTRUCTIVE


def test_full_fields_of_rich_kinds() -> None:
    text = plan_text(
        "additive",
        "- create_table:",
        "    table: app.orders",
        "    columns:",
        "      - {name: id, type: bigint}",
        "      - {name: user_id, type: bigint, nullable: false,",
        "         references: {table: users, on_delete: cascade}}",
        "      - {name: total, type: numeric, default: '0', check: total >= 0, unique: true}",
        "    primary_key: [id]",
        "- create_index: {table: t, name: i, expression: lower(email), unique: true,",
        "                 where: deleted_at IS NULL, include: [id], method: btree}",
        "- sql: {up_file: up.sql, down: drop table x, transactional: false, lock: SHARE}",
        "- backfill:",
        "    table: t",
        "    set: {c: a.c}",
        "    from: {table: a, on: a.id = t.a_id}",
        "    where: c IS NULL",
        "    batch_size: 500",
        "    batch_time: 1.5s",
        "    min_batch: 10",
        "    max_batch: 1000",
        "    workers: 4",
        "    pause: 50ms",
        "    max_replica_lag: 5s",
        "    throttle_query: select false",
        "    pause_on_autovacuum: true",
    )
    additive = parse_plan(text).plan.phases.additive
    table, index, sql, backfill = additive
    assert table.model_dump(exclude_defaults=True)["columns"][1]["references"] == {
        "table": "users",
        "on_delete": "cascade",
    }
    assert isinstance(index, CreateIndex) and index.include == ["id"]
    assert sql.model_dump()["lock"] == "SHARE"
    assert isinstance(backfill, Backfill)
    assert backfill.from_ == BackfillFrom(table="a", on="a.id = t.a_id")
    assert (backfill.batch_size, backfill.batch_time, backfill.pause) == (500, 1500, 50)
    assert backfill.max_replica_lag == 5000


def test_models_round_trip_through_model_dump() -> None:
    plan = parse_plan(EXAMPLE).plan
    dumped = plan.model_dump(by_alias=True)
    assert dumped["settings"]["lock_timeout"] == 200
    assert dumped["phases"]["cleanup"][2] == {"set_not_null": {"table": "users", "column": "phone"}}
    assert Plan.model_validate(dumped) == plan
    as_json = plan.model_dump(mode="json", by_alias=True)
    assert as_json["settings"]["lock_timeout"] == "200ms"
    assert parse_plan(yaml.safe_dump(as_json)).plan == plan


def test_models_are_frozen_and_constructible_in_code() -> None:
    step = DropColumn(table="users", column="phone")
    with pytest.raises(ValueError, match="frozen"):
        step.column = "x"
    backfill = Backfill.model_validate({"table": "t", "from_": {"table": "a", "on": "true"}})
    assert backfill.from_ is not None
    assert Settings(lock_timeout=500, lock_timeout_max=500).lock_timeout == 500
    plan = Plan(version=1, phases=Phases(cleanup=[step]))
    assert [s.spec for s in plan.steps()] == [step]


def test_trigger_names() -> None:
    assert DualWrite(table="s.users", set={"a": "b"}).trigger_name == "zdm_dw_users"
    assert DropDualWrite(table="users", name="my_trigger").trigger_name == "my_trigger"
    long_name = "é" * 31  # 62 bytes: fits, but not with the prefix
    trigger = DropDualWrite(table=long_name).trigger_name
    assert len(trigger.encode()) <= 63 and trigger.startswith("zdm_dw_é")


def test_yaml_core_schema_scalars() -> None:
    text = plan_text(
        "backfill",
        "- backfill: {table: t, set: {c: 'yes'}, from: {table: a, on: a.id = t.id}}",
        "- verify: {sql: select 1, expect: yes}",
        "- verify: {sql: select 1, expect: 2024-01-01}",
        "- verify: {sql: select 1, expect: 010}",
        "- verify: {sql: select 1, expect: true}",
        "- verify: {sql: select 1, expect: 1.5}",
        "- verify: {sql: select 1, expect: ~}",
        "- verify: {sql: select 1, expect: 0x1F}",
        "- backfill: {table: t, set: {c: x}, max_batch: 100_000}",
    )
    steps = parse_plan(text).plan.phases.backfill
    expects = [step.expect for step in steps if isinstance(step, Verify)]
    assert expects == ["yes", "2024-01-01", 10, True, 1.5, None, 31]
    assert [type(value) for value in expects[2:4]] == [int, bool]
    assert steps[-1].max_batch == 100_000  # type: ignore[attr-defined]


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("2s", 2000), ("5m", 300_000), ("1h", 3_600_000), ("1.5s", 1500), ("0", 0)],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms
    loaded = parse_plan(f"version: 1\nsettings: {{retry_max_wait: '{text}'}}\nphases: {{}}\n")
    assert loaded.plan.settings.retry_max_wait == ms


@pytest.mark.parametrize("value", ["2", "2 s", "-1s", "1.0005s", "s", "2d", "1e3ms", "", "0.5ms"])
def test_bad_duration_strings(value: str) -> None:
    with pytest.raises(ValueError, match="expected a duration with a unit such as 500ms"):
        parse_duration(value)


def test_zero_and_bare_numbers_in_plan_files() -> None:
    loaded = parse_plan("version: 1\nsettings: {statement_timeout: 0}\nphases: {}\n")
    assert loaded.plan.settings.statement_timeout == 0
    assert issues_of("version: 1\nsettings: {statement_timeout: 30}\nphases: {}\n") == [
        "p.yaml:2:31: settings.statement_timeout: expected a duration with a unit such as "
        "500ms, 2s or 5m, got the bare number 30 (write 30ms?)"
    ]
    assert issues_of("version: 1\nsettings: {pause: true}\nphases: {}\n")[0].endswith(
        "unknown key 'pause'; expected one of: lock_timeout, lock_timeout_max, "
        "statement_timeout, lock_retries, retry_max_wait, reconnect_timeout"
    )


def test_format_duration() -> None:
    assert [format_duration(ms) for ms in (0, 200, 2000, 1500, 300_000, 7_200_000)] == [
        "0",
        "200ms",
        "2s",
        "1500ms",
        "5m",
        "2h",
    ]


def test_settings_rules() -> None:
    assert issues_of("version: 1\nsettings: {lock_timeout: 0}\nphases: {}\n") == [
        "p.yaml:2:26: settings.lock_timeout: lock_timeout must be longer than 0: without it a "
        "blocked ALTER queues all traffic behind it"
    ]
    assert issues_of("version: 1\nsettings: {lock_timeout: 5s}\nphases: {}\n") == [
        "p.yaml:2:26: settings.lock_timeout: lock_timeout_max (2s) is shorter than "
        "lock_timeout (5s)"
    ]
    text = "version: 1\nsettings:\n  lock_timeout: 1s\n  lock_timeout_max: 500ms\nphases: {}\n"
    assert issues_of(text) == [
        "p.yaml:4:21: settings.lock_timeout_max: lock_timeout_max (500ms) is shorter than "
        "lock_timeout (1s)"
    ]


# --- errors: where and what -----------------------------------------------------------------


def test_issue_format() -> None:
    issue = PlanIssue("plans/x.yaml", 12, 7, "phases.cleanup[1].add_check.check", "boom")
    assert str(issue) == "plans/x.yaml:12:7: phases.cleanup[1].add_check.check: boom"
    assert str(PlanIssue("x.yaml", None, None, "", "gone")) == "x.yaml: gone"
    error = PlanError([issue, PlanIssue("x.yaml", 3, None, "version", "bad")])
    assert str(error) == f"{issue}\nx.yaml:3: version: bad"
    assert pickle.loads(pickle.dumps(error)).issues == error.issues


def test_missing_field_points_at_its_mapping() -> None:
    text = plan_text(
        "cleanup",
        "- set_not_null: {table: users, column: phone}",
        "- add_check: {table: users, name: check_phone}",
    )
    assert issues_of(text, "plans/x.yaml") == [
        "plans/x.yaml:5:18: phases.cleanup[1].add_check.check: missing required field 'check'"
    ]


def test_missing_field_in_block_mapping() -> None:
    text = plan_text("cleanup", "- add_check:", "    table: users", "    check: x > 0")
    assert issues_of(text) == [
        "p.yaml:5:9: phases.cleanup[0].add_check.name: missing required field 'name'"
    ]


def test_missing_top_level_fields() -> None:
    assert issues_of("name: x\n") == [
        "p.yaml:1:1: version: missing required field 'version'",
        "p.yaml:1:1: phases: missing required field 'phases' (or 'changes')",
    ]


def test_unknown_key_lists_the_expected_keys() -> None:
    text = plan_text("cleanup", "- add_check: {table: users, name: c, check: x, foo: 1}")
    assert issues_of(text) == [
        "p.yaml:4:52: phases.cleanup[0].add_check.foo: unknown key 'foo'; "
        "expected one of: table, name, check, no_inherit, validate"
    ]


def test_python_field_names_are_not_plan_keys() -> None:
    text = plan_text(
        "backfill", "- backfill: {table: t, from_: {table: a, on: x}}", header="schema_: s"
    )
    assert issues_of(text) == [
        "p.yaml:2:1: schema_: unknown key 'schema_' (did you mean 'schema'?); expected one of: "
        "version, name, description, schema, settings, gates, version_schema, changes, phases",
        "p.yaml:5:28: phases.backfill[0].backfill.from_: unknown key 'from_' (did you mean "
        "'from'?); expected one of: table, set, where, from, batch_size, batch_time, min_batch, "
        "max_batch, workers, pause, max_replica_lag, throttle_query, pause_on_autovacuum",
    ]


def test_unknown_key_suggests_the_near_one() -> None:
    text = "version: 1\nphases:\n  clenup: []\n"
    assert issues_of(text) == [
        "p.yaml:3:3: phases.clenup: unknown key 'clenup' (did you mean 'cleanup'?); "
        "expected one of: additive, dual_write, backfill, dual_read, cleanup"
    ]


def test_wrong_types_say_what_was_expected() -> None:
    text = plan_text(
        "cleanup",
        "- drop_column: {table: [users], column: 1}",
        "- add_check: {table: t, name: c, check: x, validate: 'yes'}",
        "- drop_table: users",
        "- drop_dual_write:",
    )
    assert issues_of(text) == [
        "p.yaml:4:28: phases.cleanup[0].drop_column.table: expected a string, got a list",
        "p.yaml:4:45: phases.cleanup[0].drop_column.column: expected a string, got the integer 1",
        "p.yaml:5:58: phases.cleanup[1].add_check.validate: expected true or false, "
        "got the string 'yes'",
        "p.yaml:6:19: phases.cleanup[2].drop_table: expected a mapping (keys: table), "
        "got the string 'users'",
        "p.yaml:7:23: phases.cleanup[3].drop_dual_write: expected a mapping "
        "(keys: table, name), got null",
    ]


def test_literal_and_bounds() -> None:
    text = plan_text(
        "backfill",
        "- backfill: {table: t, set: {a: b}, workers: 64, batch_size: 0}",
        "- backfill: {table: t, set: {}, min_batch: 10, max_batch: 5}",
        header="gates: [cleanup, Backfill]",
    )
    assert issues_of(text) == [
        "p.yaml:2:18: gates[1]: expected 'additive', 'dual_write', 'backfill', 'dual_read' or "
        "'cleanup', got the string 'Backfill' (did you mean 'backfill'?)",
        "p.yaml:5:50: phases.backfill[0].backfill.workers: expected a number <= 32, "
        "got the integer 64",
        "p.yaml:5:66: phases.backfill[0].backfill.batch_size: expected a batch size >= 1 or auto, "
        "got 0",
        "p.yaml:6:33: phases.backfill[1].backfill.set: expected at least 1 entry, got none",
    ]
    text = plan_text("backfill", "- backfill: {table: t, set: {a: b}, min_batch: 10, max_batch: 5}")
    assert issues_of(text) == [
        "p.yaml:4:67: phases.backfill[0].backfill.max_batch: min_batch (10) is larger than "
        "max_batch (5)"
    ]


def test_version() -> None:
    assert issues_of("version: 2\nphases: {}\n") == [
        "p.yaml:1:10: version: unsupported plan version 2; this zdm reads version 1"
    ]
    assert issues_of("version: true\nphases: {}\n") == [
        "p.yaml:1:10: version: expected the plan format version 1, got a boolean"
    ]


def test_step_model_rules() -> None:
    text = plan_text(
        "additive",
        "- add_column: {table: t, column: {name: c, type: int, nullable: false}}",
        "- create_index: {table: t, name: i}",
        "- create_index: {table: t, name: i2, columns: [a], expression: lower(a)}",
        "- add_foreign_key: {table: t, name: f, columns: [a, b], references: {table: u, "
        "columns: [id]}}",
        "- sql: {up: select 1, up_file: x.sql}",
        "- create_table: {table: t, columns: [{name: id, type: int, primary_key: true}], "
        "primary_key: [id]}",
    )
    assert issues_of(text) == [
        "p.yaml:4:69: phases.additive[0].add_column.column.nullable: a NOT NULL column without "
        "a default fails on a non-empty table; add it nullable, backfill, then set_not_null in "
        "cleanup",
        "p.yaml:5:21: phases.additive[1].create_index: give either 'columns' or 'expression'",
        "p.yaml:6:68: phases.additive[2].create_index.expression: give either 'columns' or "
        "'expression', not both",
        "p.yaml:7:73: phases.additive[3].add_foreign_key.references: 2 column(s) reference 1 "
        "column(s); give the same number on both sides",
        "p.yaml:8:36: phases.additive[4].sql.up_file: give either 'up' or 'up_file', not both",
        "p.yaml:9:98: phases.additive[5].create_table.primary_key: the primary key is given "
        "both here and on column 'id'; keep one of them",
    ]
    ok = plan_text(
        "additive",
        "- add_column: {table: t, column: {name: c, type: int, nullable: false, default: '0'}}",
    )
    assert parse_plan(ok).plan.phases.additive[0].column.default == "0"  # type: ignore[attr-defined]


def test_identifiers() -> None:
    long_name = "x" * 64
    text = plan_text(
        "cleanup",
        f"- drop_table: {{table: {long_name}}}",
        "- drop_table: {table: a.b.c}",
        "- drop_column: {table: public.t, column: t.c}",
        "- drop_column: {table: t, column: ''}",
        "- drop_index: {name: public.idx}",
    )
    assert issues_of(text) == [
        f"p.yaml:4:27: phases.cleanup[0].drop_table.table: {'x' * 20!r}... is 64 bytes long; "
        "PostgreSQL names are at most 63 bytes",
        "p.yaml:5:27: phases.cleanup[1].drop_table.table: expected name or schema.name, "
        "got 'a.b.c'",
        "p.yaml:6:46: phases.cleanup[2].drop_column.column: expected a bare name without a "
        "schema or table prefix, got 't.c'",
        "p.yaml:7:39: phases.cleanup[3].drop_column.column: expected a name, got an empty name",
    ]


def test_unknown_step_kind() -> None:
    text = plan_text("cleanup", "- drop_colum: {table: t, column: c}")
    (issue,) = issues_of(text)
    assert issue.startswith(
        "p.yaml:4:7: phases.cleanup[0]: unknown step kind 'drop_colum' "
        "(did you mean 'drop_column'?); known kinds: create_table, drop_table, "
    )
    assert all(kind in issue for kind in STEP_KINDS)


def test_step_with_two_keys() -> None:
    text = plan_text("cleanup", "- drop_column:", "  table: t", "  column: c")
    (issue,) = issues_of(text)
    assert issue.startswith(
        "p.yaml:4:7: phases.cleanup[0]: a step is a mapping with exactly one key, its kind; "
        "got 3 keys: drop_column, table, column (indent the step's fields under its kind); "
        "known kinds: create_table,"
    )


@pytest.mark.parametrize(
    ("step", "got"),
    [("- {}", "empty step; expected one key naming its kind"), ("- drop_column", "a mapping")],
)
def test_step_that_is_not_a_one_key_mapping(step: str, got: str) -> None:
    (issue,) = issues_of(plan_text("cleanup", step))
    assert issue.startswith("p.yaml:4:7: phases.cleanup[0]: ")
    assert "known kinds: create_table," in issue
    assert (got in issue) if got.startswith("empty") else ("expected a step: a mapping" in issue)


def test_duplicate_yaml_keys() -> None:
    text = plan_text(
        "cleanup",
        "- drop_column:",
        "    table: users",
        "    column: a",
        "    table: orders",
        header="version: 1",
    )
    assert issues_of(text) == [
        "p.yaml:2:1: version: duplicate key 'version' (first on line 1); keys must be unique",
        "p.yaml:8:9: phases.cleanup[0].drop_column.table: duplicate key 'table' (first on "
        "line 6); keys must be unique",
    ]


def test_all_issues_are_reported_in_file_order() -> None:
    text = plan_text(
        "cleanup",
        "- drop_column: {table: t}",
        "- add_check: {table: t, name: c, check: x, nope: 1}",
        "- bogus: {}",
        header="settings: {lock_retries: 0}",
    )
    issues = issues_of(text)
    assert [issue.split(": ")[1] for issue in issues] == [
        "settings.lock_retries",
        "phases.cleanup[0].drop_column.column",
        "phases.cleanup[1].add_check.nope",
        "phases.cleanup[2]",
    ]


# --- cross-step rules -----------------------------------------------------------------------


def test_destructive_steps_only_in_cleanup() -> None:
    text = plan_text(
        "additive",
        "- add_column: {table: t, column: {name: c, type: int}}",
        "- drop_column: {table: t, column: old}",
        "- set_not_null: {table: t, column: c}",
    )
    assert issues_of(text) == [
        "p.yaml:5:7: phases.additive[1].drop_column: drop_column is destructive and belongs in "
        "the cleanup phase, after the application stopped using the old shape; move it to "
        "phases.cleanup",
        "p.yaml:6:7: phases.additive[2].set_not_null: set_not_null is destructive and belongs in "
        "the cleanup phase, after the application stopped using the old shape; move it to "
        "phases.cleanup",
    ]


def test_backfill_without_set_needs_an_earlier_dual_write() -> None:
    message = (
        "this backfill of {t} has no 'set' and there is no earlier dual_write step on {t} to "
        "take it from; add a dual_write step before it or give the backfill a 'set'"
    )
    text = plan_text("backfill", "- backfill: {table: users}")
    assert issues_of(text) == [
        "p.yaml:4:7: phases.backfill[0].backfill: " + message.format(t="users")
    ]
    text = (
        "version: 1\nphases:\n"
        "  dual_write:\n    - dual_write: {table: public.users, set: {a: b}}\n"
        "  backfill:\n"
        "    - backfill: {table: users}\n"
        "    - backfill: {table: orders}\n"
        "    - backfill: {table: orders, from: {table: x, on: x.id = orders.id}}\n"
    )
    assert issues_of(text) == [
        "p.yaml:7:7: phases.backfill[1].backfill: " + message.format(t="orders")
    ]


def test_created_names_are_unique() -> None:
    text = plan_text(
        "additive",
        "- create_index: {table: t, name: i1, columns: [a]}",
        "- add_unique: {table: t, name: i1, columns: [a]}",
        "- add_check: {table: t, name: k, check: a > 0}",
        "- add_check: {table: u, name: k, check: a > 0}",
        "- add_check: {table: public.t, name: k, check: a > 1}",
    )
    assert issues_of(text) == [
        "p.yaml:5:36: phases.additive[1].add_unique.name: the name 'i1' is already used by "
        "phases.additive[0] (create_index); each index and constraint needs its own name",
        "p.yaml:8:42: phases.additive[4].add_check.name: the name 'k' is already used by "
        "phases.additive[2] (add_check); each index and constraint needs its own name",
    ]
    recreated = (
        "version: 1\nphases:\n  additive:\n    - create_index: {table: t, name: i, columns: [a]}\n"
        "  cleanup:\n    - drop_index: {name: i}\n"
        "    - create_index: {table: t, name: i, columns: [b]}\n"
    )
    assert len(parse_plan(recreated).steps()) == 3


def test_gates_are_unique() -> None:
    assert issues_of("version: 1\ngates: [cleanup, backfill, cleanup]\nphases: {}\n") == [
        "p.yaml:2:28: gates[2]: phase 'cleanup' is listed twice in gates"
    ]


# --- files and YAML -------------------------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert str(caught.value) == f"{path}: cannot read the plan: No such file or directory"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert str(caught.value) == f"{path}:2: the plan is not UTF-8 text (byte 0xe9)"


def test_sql_files_must_exist(tmp_path: Path) -> None:
    (tmp_path / "up.sql").write_text("select 1;\n")
    path = tmp_path / "p.yaml"
    path.write_text(plan_text("additive", "- sql: {up_file: up.sql, down_file: down.sql}"))
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert str(caught.value) == (
        f"{path}:4:41: phases.additive[0].sql.down_file: file not found: {tmp_path / 'down.sql'}"
    )
    (tmp_path / "down.sql").write_text("select 2;\n")
    loaded = load_plan(path)
    assert loaded.resolve("up.sql").read_text() == "select 1;\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "",
            "p.yaml: the plan is empty; expected a mapping with version and phases, changes or "
            "both",
        ),
        (
            "- a\n",
            "p.yaml:1:1: the plan is a list, not a mapping; expected a mapping with version and "
            "phases, changes or both",
        ),
        (
            "version: 1\nphases: {cleanup: [\n",
            "p.yaml:3:1: invalid YAML: expected the node content, but found '<stream end>' "
            "(while parsing a flow node)",
        ),
        (
            "version: 1\nphases:\n\tcleanup: []\n",
            "p.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token "
            "(while scanning for the next token)",
        ),
        (
            "version: 1\x07\n",
            "p.yaml:1:11: invalid YAML: character U+0007 is not allowed in YAML text",
        ),
        (
            "version: 1\nphases: &p {cleanup: [*p]}\n",
            "p.yaml:2:9: phases.cleanup[0]: an alias refers to a value containing it",
        ),
        (
            "version: 1\nname: !!binary aGk=\nphases: {}\n",
            "p.yaml:2:7: name: unsupported YAML tag !!binary; write a plain value",
        ),
    ],
)
def test_documents_that_are_not_plans(text: str, expected: str) -> None:
    assert issues_of(text)[0] == expected


def test_huge_numbers_are_reported() -> None:
    assert issues_of("version: " + "9" * 5000 + "\nphases: {}\n")[0] == (
        "p.yaml:1:10: version: '9999999999999999999999999999999999999...' is not a valid !!int"
    )


def test_alias_bombs_are_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(PlanError, match="expands to more than 100000 values"):
        parse_plan("\n".join(lines) + "\n")


def test_non_string_keys() -> None:
    text = plan_text("dual_write", "- dual_write: {table: t, set: {1: x}}", header="~: 1")
    assert issues_of(text) == [
        "p.yaml:2:1: None: expected a string as key, got null",
        "p.yaml:5:36: phases.dual_write[0].dual_write.set.1: invalid key 1: expected a string, "
        "got the integer 1",
    ]


# --- JSON Schema ----------------------------------------------------------------------------


def test_json_schema() -> None:
    schema = plan_json_schema()
    text = json.dumps(schema)
    assert json.loads(text) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "zdm plan"
    assert schema["required"] == ["version"]
    assert schema["additionalProperties"] is False
    definitions = schema["$defs"]
    kinds_in_schema = set()
    for ref in definitions["Step"]["oneOf"]:
        step = definitions[ref["$ref"].rpartition("/")[2]]
        (kind,) = step["properties"]
        assert step["required"] == [kind] and step["additionalProperties"] is False
        kinds_in_schema.add(kind)
    assert kinds_in_schema == set(STEP_KINDS)
    for phase in PHASES:
        assert definitions["Phases"]["properties"][phase]["items"] == {"$ref": "#/$defs/Step"}
    assert definitions["Settings"]["properties"]["lock_timeout"]["default"] == "50ms"
    assert schema["properties"]["settings"]["default"]["retry_max_wait"] == "30s"
    assert "from" in definitions["Backfill"]["properties"]
    assert "schema" in schema["properties"]


# --- robustness -----------------------------------------------------------------------------

_ODD_VALUES = st.sampled_from(
    [None, 0, 1, -1, 1.5, True, "", "x", "5s", "a.b.c", [], [1], {}, {"a": 1}, ["auto"]]
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _mutate(data: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    data = copy.deepcopy(data)
    path = draw(st.sampled_from(_paths(data)[1:]))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    operation = draw(st.sampled_from(["delete", "add_key", "replace", "wrap"]))
    if operation == "delete":
        del parent[last]
    elif operation == "add_key" and isinstance(parent[last], dict):
        parent[last][draw(st.sampled_from(["foo", "table", "on", "", "cleanup"]))] = draw(
            _ODD_VALUES
        )
    elif operation == "wrap":
        parent[last] = [parent[last]]
    else:
        parent[last] = draw(_ODD_VALUES)
    return data


def _check(text: str) -> None:
    try:
        loaded = parse_plan(text, "p.yaml")
    except PlanError as error:
        assert error.issues
        for issue in error.issues:
            assert issue.message and str(issue).startswith("p.yaml")
    else:
        assert isinstance(loaded.plan, Plan)


_EXAMPLE_DATA = yaml.safe_load(EXAMPLE)
_FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.data())
def test_mutated_plans_give_a_plan_or_a_plan_error(data: st.DataObject) -> None:
    mutated = _EXAMPLE_DATA
    for _ in range(data.draw(st.integers(1, 3))):
        if not mutated:
            break
        mutated = _mutate(mutated, data.draw)
    try:
        plan = parse_plan(yaml.safe_dump(mutated, sort_keys=False), "p.yaml").plan
    except PlanError as error:
        assert error.issues
        for issue in error.issues:
            # The document is a YAML mapping, so every issue has its place in it.
            assert issue.message and issue.line is not None and issue.column is not None
    else:
        dumped = plan.model_dump(mode="json", by_alias=True)
        assert parse_plan(yaml.safe_dump(dumped)).plan == plan


# fmt: off
_YAMLISH = st.lists(
    st.sampled_from(
        [
            "version: 1", "phases:", "  cleanup:", "    - ", "drop_column:", "{table: t}",
            "{", "}", "[", "]", ":", ",", "- ", "  ", "\n", "&a ", "*a", "!!int ", "!!str ",
            "? ", "~", "'", '"', "#", "add_check", "{table: t, name: c, check: x}", "1s",
            "settings: {lock_timeout: ", "gates: [", "backfill: {table: t}", "---", "|", ">",
            "\t", "%YAML 1.2", "<<: ", "=", "0x", "-", ".inf", "\\",
        ]
    ),
    max_size=30,
).map("".join)
# fmt: on


@_FAST
@given(_YAMLISH)
def test_yamlish_text_gives_a_plan_or_a_plan_error(text: str) -> None:
    _check(text)


@_FAST
@given(st.text(max_size=200))
def test_random_text_gives_a_plan_or_a_plan_error(text: str) -> None:
    _check(text)
