"""Exact SQL of dual_write and drop_dual_write (no database).

The trigger and its function are created in one transaction and dropped in one transaction, so
no write meets half of them; what the function does is proven against PostgreSQL in
test_lifecycle.py.
"""

from __future__ import annotations

import re

import pytest
from ops_support import U, all_sql, ctx, plan_of, probes, shape, statement_locks

from zdm.ddl import LockMode
from zdm.operations import Irreversible, plan_inverse, plan_step
from zdm.operations.dual_write import mapping_token, trigger_body
from zdm.plan import DropDualWrite, DualWrite

AE = LockMode.ACCESS_EXCLUSIVE
SRE = LockMode.SHARE_ROW_EXCLUSIVE
NONE = LockMode.NONE
T = '"public"."users"'

BODY_FAIL = """
#variable_conflict use_column
DECLARE
  zdm_new boolean := coalesce(current_setting('zdm.writer', true), '') = 'new';
  --zdm:declare
BEGIN
  IF NOT zdm_new AND TG_OP = 'UPDATE' THEN zdm_new := NEW."full_name" IS DISTINCT FROM OLD."full_name"; END IF;
  IF zdm_new THEN
    --zdm:load
    NEW."name" := (full_name); "name" := NEW."name";
    RETURN NEW;
  END IF;
  --zdm:load
  NEW."full_name" := (name); "full_name" := NEW."full_name";
  RETURN NEW;
END;
"""

# The function is made from BODY_FAIL with its marks replaced: the columns the expressions read
# (those the table has) become variables, declared with their types and loaded from NEW.
CREATE_FUNCTION = (
    "DO $zdm$\nDECLARE\n  zdm_declare text;\n  zdm_load text;\nBEGIN\n"
    "  SELECT coalesce(string_agg(format('  %I %s;', a.attname, format_type(a.atttypid,"
    " a.atttypmod)), E'\\n' ORDER BY a.attnum), ''),\n"
    "         coalesce(string_agg(format('%I := NEW.%I;', a.attname, a.attname), ' '"
    " ORDER BY a.attnum), '')\n"
    "    INTO zdm_declare, zdm_load\n"
    "    FROM pg_attribute a\n"
    '   WHERE a.attrelid = \'"public"."users"\'::regclass AND a.attnum > 0'
    " AND NOT a.attisdropped\n"
    "     AND a.attname = ANY ('{full_name,name}'::text[]);\n"
    "  EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',"
    ' \'"public"."zdm_dw_users"\', replace(replace('
    + "'"
    + BODY_FAIL.replace("'", "''")
    + "'"
    + ", '--zdm:declare', zdm_declare), '--zdm:load', zdm_load));\nEND;\n$zdm$"
)

EXERCISE = (
    "DO $zdm$\nBEGIN\n  PERFORM set_config('zdm.probe', 'on', true);\n"
    '  BEGIN UPDATE "public"."users" SET "full_name" = "full_name" WHERE (tableoid, ctid) = '
    '(SELECT tableoid, ctid FROM "public"."users" LIMIT 1 FOR UPDATE SKIP LOCKED);'
    " EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN NULL; END;\n"
    "  PERFORM set_config('zdm.writer', 'new', true);\n"
    '  BEGIN UPDATE "public"."users" SET "full_name" = "full_name" WHERE (tableoid, ctid) = '
    '(SELECT tableoid, ctid FROM "public"."users" LIMIT 1 FOR UPDATE SKIP LOCKED);'
    " EXCEPTION WHEN data_exception OR integrity_constraint_violation THEN NULL; END;\n"
    "  RAISE SQLSTATE 'ZDM01';\nEXCEPTION WHEN SQLSTATE 'ZDM01' THEN NULL;\nEND;\n$zdm$"
)

TRIGGER_EXISTS = (
    'SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(\'"public"."users"\')'
    " AND tgname = 'zdm_dw_users')"
)


def test_dual_write_function_trigger_and_exercise_in_one_transaction() -> None:
    step = DualWrite(
        table="users", set={"full_name": "name"}, reverse={"name": "full_name"}, on_error="fail"
    )
    actions = plan_step(step, ctx())
    assert shape(actions) == [
        U(
            (
                CREATE_FUNCTION,
                'CREATE TRIGGER "zdm_dw_users" BEFORE INSERT OR UPDATE ON "public"."users" '
                "FOR EACH ROW WHEN (strpos(coalesce(current_setting('zdm.skip_triggers', true),"
                f" ''), '{mapping_token(step.set, step.reverse)}') = 0"
                " AND current_setting('zdm.writer', true) IS DISTINCT FROM 'backfill') "
                'EXECUTE FUNCTION "public"."zdm_dw_users"()',
                EXERCISE,
            ),
            SRE,
        )
    ]
    # The token names this mapping: the same body gives the same token, another body another.
    token = mapping_token(step.set, step.reverse)
    assert re.fullmatch(r"zdm_dw_[0-9a-f]{16}", token)
    assert mapping_token({"full_name": "name"}, {"name": "full_name"}) == token
    assert mapping_token({"full_name": "name"}, {}) != token
    assert statement_locks(actions) == [[NONE, SRE, LockMode.ROW_EXCLUSIVE]]
    assert probes(actions) == [TRIGGER_EXISTS]


def test_trigger_body_records_instead_of_failing() -> None:
    body = trigger_body({"phone": "contact->>'phone'", "n": "1"}, {}, plan="p", state_schema="st")
    lines = body.splitlines()
    # The common path: one block of loads and assignments (one subtransaction); its handler
    # redoes each assignment alone, so a column that raises keeps the write's value and the
    # others map.
    assert lines[7:13] == [
        "  IF zdm_new THEN RETURN NEW; END IF;",
        "  BEGIN",
        "    --zdm:load",
        "    NEW.\"phone\" := (contact->>'phone');",
        '    NEW."n" := (1);',
        "  EXCEPTION WHEN OTHERS THEN",
    ]
    # A row whose columns cannot even be loaded is recorded (no column) and written as given.
    assert body.count("PERFORM \"st\".record_mapping_error('p', TG_RELID, to_jsonb(NEW),") == 3
    assert "'n', SQLSTATE, SQLERRM, 'trigger');" in body
    # zdm's exercise of a new trigger raises what is the plan's fault, not the row's.
    assert (
        "IF current_setting('zdm.probe', true) = 'on' AND left(SQLSTATE, 2) NOT IN ('22', '23')"
        " THEN RAISE; END IF;" in body
    )


def test_trigger_body_without_reverse_fail_mode() -> None:
    assert trigger_body({"phone": "contact->>'phone'", "n": "1"}, {}, on_error="fail") == (
        "\n#variable_conflict use_column\n"
        "DECLARE\n"
        "  zdm_new boolean := coalesce(current_setting('zdm.writer', true), '') = 'new';\n"
        "  --zdm:declare\n"
        "BEGIN\n"
        "  IF NOT zdm_new AND TG_OP = 'UPDATE' THEN zdm_new := NEW.\"phone\" IS DISTINCT FROM"
        ' OLD."phone" OR NEW."n" IS DISTINCT FROM OLD."n"; END IF;\n'
        "  IF zdm_new THEN RETURN NEW; END IF;\n"
        "  --zdm:load\n"
        "  NEW.\"phone\" := (contact->>'phone');\n"
        '  NEW."n" := (1);\n'
        "  RETURN NEW;\n"
        "END;\n"
    )


def test_whole_row_and_plpgsql_names_go_through_the_subquery() -> None:
    body = trigger_body(
        {"a": "row_to_json(zdm_row)::text", "b": "new || found", "c": "users.x", "d": "x + 1"},
        {},
        on_error="fail",
        table="users",
    )
    assert (
        'NEW."a" := (SELECT (row_to_json(zdm_row)::text) FROM (SELECT NEW.*) AS zdm_row);' in body
    )
    assert 'NEW."b" := (SELECT (new || found) FROM (SELECT NEW.*) AS zdm_row);' in body
    assert 'NEW."c" := (SELECT (users.x) FROM (SELECT NEW.*) AS zdm_row);' in body
    assert 'NEW."d" := (x + 1);' in body


def test_named_trigger() -> None:
    actions = plan_step(DualWrite(table="app.users", name="sync_phone", set={"a": "b"}), ctx())
    text = all_sql(actions)
    assert "CREATE OR REPLACE FUNCTION %s() RETURNS trigger" in text
    assert '\'"app"."sync_phone"\'' in text
    assert (
        'CREATE TRIGGER "sync_phone" BEFORE INSERT OR UPDATE ON "app"."users" FOR EACH ROW' in text
    )
    assert 'EXECUTE FUNCTION "app"."sync_phone"()' in text


def test_default_trigger_name_fits_an_identifier() -> None:
    table = "t" * 63
    step = DualWrite(table=table, set={"a": "b"})
    assert step.trigger_name == ("zdm_dw_" + table)[:63]
    assert f'"{step.trigger_name}"' in all_sql(plan_step(step, ctx()))


def test_body_dollar_quote_tag_avoids_the_expressions() -> None:
    step = DualWrite(table="users", set={"a": "'$zdm$' || $zdm1$x$zdm1$"})
    create_function = shape(plan_step(step, ctx()))[0].sql[0]
    assert create_function.startswith("DO $zdm2$\n")
    assert create_function.endswith("\n$zdm2$")


DROP = U(
    (
        f'DROP TRIGGER IF EXISTS "zdm_dw_users" ON {T}',
        'DROP FUNCTION IF EXISTS "public"."zdm_dw_users"()',
    ),
    AE,
)
DROPPED = (
    f"SELECT (SELECT NOT ({TRIGGER_EXISTS})) AND "
    '(SELECT to_regprocedure(\'"public"."zdm_dw_users"()\') IS NULL)'
)


def test_undo_dual_write_drops_trigger_and_function_together() -> None:
    actions = plan_inverse(DualWrite(table="users", set={"a": "b"}), ctx())
    assert shape(actions) == [DROP]
    assert statement_locks(actions) == [[AE, NONE]]
    assert probes(actions) == [DROPPED]


def test_drop_dual_write() -> None:
    actions = plan_step(DropDualWrite(table="users"), ctx())
    assert shape(actions) == [DROP]
    assert probes(actions) == [DROPPED]


def test_undo_drop_dual_write_recreates_the_plans_trigger() -> None:
    plan = plan_of(
        """
        dual_write:
          - dual_write: {table: users, set: {full_name: name}, reverse: {name: full_name}}
          - dual_write: {table: users, name: other, set: {x: y}}
        cleanup:
          - drop_dual_write: {table: users}
        """
    )
    actions = plan_inverse(plan.phases.cleanup[0], ctx(plan=plan))
    assert actions == plan_step(plan.phases.dual_write[0], ctx(plan=plan))


def test_undo_drop_dual_write_of_a_trigger_the_plan_does_not_define_is_refused() -> None:
    # Undoing nothing would leave old writers' changes unmapped; rollback must stop instead.
    plan = plan_of("cleanup:\n  - drop_dual_write: {table: users, name: made_elsewhere}\n")
    with pytest.raises(Irreversible, match="made_elsewhere"):
        plan_inverse(plan.phases.cleanup[0], ctx(plan=plan))


def test_identifiers_are_always_quoted() -> None:
    step = DualWrite(
        table="Sch.Us\"er 's",
        name='Tr"ig x',
        set={'Ne"w Col': "1"},
        reverse={'Ol"d Col': "2"},
    )
    actions = plan_step(step, ctx()) + plan_inverse(step, ctx())
    text = all_sql(actions)
    # Names are quoted; a column's name in a message to record is a string literal.
    text = text.replace("'Ne\"w Col'", "").replace("'Ol\"d Col'", "")
    for raw in ('Us"er', 'Tr"ig x', 'Ne"w Col', 'Ol"d Col'):
        assert raw not in text
    assert 'NEW."Ne""w Col" IS DISTINCT FROM OLD."Ne""w Col"' in text
    assert 'NEW."Ol""d Col" :=' in text
    assert 'CREATE TRIGGER "Tr""ig x" BEFORE INSERT OR UPDATE ON "Sch"."Us""er \'s"' in text
    assert 'DROP FUNCTION IF EXISTS "Sch"."Tr""ig x"()' in text
