"""dual_write, drop_dual_write: a BEFORE INSERT OR UPDATE trigger keeping old and new shapes in step.

The trigger and its function are created together in one short transaction and dropped together,
so no write ever meets half of them; before that transaction commits, zdm exercises the trigger
on one real row (both writers) inside a block it rolls back, so a mapping that names a missing
column or function never reaches the application.

Which mapping applies depends on who writes, never on the written values:

- the new application version (a transaction with `zdm.writer` = `new`: set by the views of
  `expose`, or by the application itself) gets `reverse`: the old columns are derived from the
  new ones, the new columns are as it wrote them (or their defaults);
- every other write is the old version's and gets `set`: the new columns are computed from the
  old ones, whatever defaults or values they were given. One exception, for a new version that
  writes the base table without saying so: an UPDATE that changes a column of `set` itself
  cannot come from the old version (it does not know that column) and is taken as the new one's;
- zdm's own backfill (`zdm.writer` = `backfill`) passes the trigger over: it writes exactly
  what it means to. So does a batch whose `zdm.skip_triggers` names the trigger's mapping.

A mapping that raises for a row (a bad cast, a value too long, a division by zero) does not fail
the application's write by default (`on_error: record`): the column keeps what the write gave it
and the error is recorded in the state schema's `mapping_errors`. `on_error: fail` raises.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Table, Txn, drop_if_exists, user_sql
from zdm.ddl import catalog as cat
from zdm.ddl.quote import do_block
from zdm.ddl.sqltext import folded_names, identifiers
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.plan import DropDualWrite, DualWrite, RenameColumn, RenameTable

WRITER_SETTING = "zdm.writer"
"""The setting that names who writes: `new` (the new application version), `backfill` (zdm)."""
PROBE_SETTING = "zdm.probe"
PROBE_DONE = "ZDM01"
"""The SQLSTATE by which zdm's exercise of a new trigger rolls itself back."""


def _q(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _eval(expr: str) -> str:
    """The plan's expression over the row being written, through a subquery over `NEW.*` (the
    slow form: a query per call), for an expression that reads the whole row or names one of
    PL/pgSQL's own variables."""
    return f"(SELECT ({expr}) FROM (SELECT NEW.*) AS zdm_row)"


def _lit(value: str) -> str:
    return sql.Literal(value).as_string(None)


#: Names an expression cannot read as a PL/pgSQL variable of the same name.
_SPECIAL = frozenset(
    {"new", "old", "found", "sqlstate", "sqlerrm", "zdm_row", "zdm_new"}
    | {f"tg_{n}" for n in ("op", "name", "when", "level", "relid", "relname", "nargs", "argv")}
    | {"tg_table_name", "tg_table_schema"}
)
DECLARE_MARK = "--zdm:declare"
LOAD_MARK = "--zdm:load"


def _special(table: str) -> frozenset[str]:
    return _SPECIAL | {table.lower()}


def read_names(exprs: Iterable[str], table: str = "") -> list[str]:
    """The names the expressions may read as columns, each declared as a PL/pgSQL variable of
    the trigger (those the table has: zdm asks the catalog when it creates the function)."""
    special = _special(table)
    return sorted({n for e in exprs for n in folded_names(e) if n.lower() not in special})


def trigger_body(
    set_: dict[str, str],
    reverse: dict[str, str],
    *,
    on_error: str = "record",
    plan: str = "",
    state_schema: str = "zdm",
    table: str = "",
    fast: bool = True,
) -> str:
    """PL/pgSQL of the trigger function (see the module's docstring for the rule).

    The columns the expressions read are PL/pgSQL variables (declared and loaded from NEW where
    the marks `--zdm:declare` and `--zdm:load` stand, from the catalog, when the function is
    created), so an expression is evaluated by PL/pgSQL's fast path for simple expressions, not
    as a query; one that reads the whole row or a PL/pgSQL name goes through a subquery.
    With `on_error: record` the loads and assignments run in one block whose handler (taken only
    when one raises) redoes each on its own, keeps the write's value of a column whose
    expression raised, and records the row's key and the error: the common path costs one
    subtransaction. `use_column`: a column named like a PL/pgSQL variable is the column.
    `fast=False` puts every expression through the subquery (bench/dual_write.py compares).
    """
    special = _special(table)
    declared = set(read_names([*set_.values(), *reverse.values()], table))
    lines = [
        "#variable_conflict use_column",
        "DECLARE",
        f"  zdm_new boolean := coalesce(current_setting({_lit(WRITER_SETTING)}, true), '') = 'new';",
        f"  {DECLARE_MARK}",
        "BEGIN",
    ]
    if set_:
        changed = " OR ".join(f"NEW.{_q(c)} IS DISTINCT FROM OLD.{_q(c)}" for c in set_)
        lines.append(f"  IF NOT zdm_new AND TG_OP = 'UPDATE' THEN zdm_new := {changed}; END IF;")

    def value(expr: str) -> str:
        simple = fast and not any(n.lower() in special for n in folded_names(expr))
        return f"({expr})" if simple else _eval(expr)

    def assign(mapping: dict[str, str], indent: str) -> list[str]:
        out = []
        for c, e in mapping.items():
            refresh = f" {_q(c)} := NEW.{_q(c)};" if c in declared else ""
            out.append(f"{indent}NEW.{_q(c)} := {value(e)};{refresh}")
        return out

    def record(column: str | None, indent: str) -> list[str]:
        col = "NULL" if column is None else _lit(column)
        return [
            f"{indent}IF current_setting({_lit(PROBE_SETTING)}, true) = 'on'"
            " AND left(SQLSTATE, 2) NOT IN ('22', '23') THEN RAISE; END IF;",
            f"{indent}BEGIN",
            f"{indent}  PERFORM {_q(state_schema)}.record_mapping_error({_lit(plan)},"
            f" TG_RELID, to_jsonb(NEW), {col}, SQLSTATE, SQLERRM, 'trigger');",
            f"{indent}EXCEPTION WHEN OTHERS THEN",
            f"{indent}  RAISE WARNING 'zdm: a mapping of % failed (%) and could not be recorded: %',"
            " TG_TABLE_NAME, SQLSTATE, SQLERRM;",
            f"{indent}END;",
        ]

    def branch(mapping: dict[str, str], indent: str) -> list[str]:
        if on_error == "fail":
            return [f"{indent}{LOAD_MARK}", *assign(mapping, indent)]
        out = [
            f"{indent}BEGIN",
            f"{indent}  {LOAD_MARK}",
            *assign(mapping, indent + "  "),
            f"{indent}EXCEPTION WHEN OTHERS THEN",
            f"{indent}  BEGIN",
            f"{indent}    {LOAD_MARK}",
            f"{indent}  EXCEPTION WHEN OTHERS THEN",
            *record(None, indent + "    "),
            f"{indent}    RETURN NEW;",
            f"{indent}  END;",
        ]
        for c, e in mapping.items():
            refresh = f" {_q(c)} := NEW.{_q(c)};" if c in declared else ""
            out += [
                f"{indent}  BEGIN",
                f"{indent}    NEW.{_q(c)} := {value(e)};{refresh}",
                f"{indent}  EXCEPTION WHEN OTHERS THEN",
                *record(c, indent + "    "),
                f"{indent}  END;",
            ]
        return [*out, f"{indent}END;"]

    if reverse:
        lines.append("  IF zdm_new THEN")
        lines += branch(reverse, "    ")
        lines.append("    RETURN NEW;")
        lines.append("  END IF;")
    else:
        lines.append("  IF zdm_new THEN RETURN NEW; END IF;")
    lines += branch(set_, "  ")
    lines += ["  RETURN NEW;", "END;"]
    return "\n" + "\n".join(lines) + "\n"


def create_function_sql(function: Table, table: Table, body: str, names: list[str]) -> sql.Composed:
    """Creates the trigger function from `body`, its marks replaced by the declarations and
    loads of the columns among `names` that the table has (the catalog says which, and their
    types)."""
    block = sql.SQL(
        "DECLARE\n"
        "  zdm_declare text;\n"
        "  zdm_load text;\n"
        "BEGIN\n"
        "  SELECT coalesce(string_agg(format('  %I %s;', a.attname,"
        " format_type(a.atttypid, a.atttypmod)), E'\\n' ORDER BY a.attnum), ''),\n"
        "         coalesce(string_agg(format('%I := NEW.%I;', a.attname, a.attname), ' '"
        " ORDER BY a.attnum), '')\n"
        "    INTO zdm_declare, zdm_load\n"
        "    FROM pg_attribute a\n"
        "   WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped\n"
        "     AND a.attname = ANY ({names}::text[]);\n"
        "  EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',"
        " {function}, replace(replace({body}, {declare_mark}, zdm_declare), {load_mark}, zdm_load));\n"
        "END;"
    ).format(
        rel=table.regclass(),
        names=sql.Literal(names),
        function=sql.Literal(function.ident().as_string(None)),
        body=sql.Literal(body),
        declare_mark=sql.Literal(DECLARE_MARK),
        load_mark=sql.Literal(LOAD_MARK),
    )
    return do_block("\n" + block.as_string(None) + "\n")


SKIP_SETTING = "zdm.skip_triggers"


def mapping_token(set_: Mapping[str, str], reverse: Mapping[str, str]) -> str:
    """The name of a trigger's mapping in `zdm.skip_triggers`: a hash of its expressions."""
    text = json.dumps([dict(set_), dict(reverse)], sort_keys=True)
    return "zdm_dw_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def redundant_for(dw: DualWrite, written: Mapping[str, str], table: Table) -> bool:
    """Whether the trigger of `dw` changes nothing on a row an UPDATE sets to `written`
    (column: expression over the row as it was), so that UPDATE need not fire it.

    It writes every column the trigger maps, with the same expression, so the trigger finds each
    one either changed by the writer or already equal to its expression; and no expression of
    the trigger reads a column the UPDATE writes (nor the whole row), so evaluating it over the
    new row gives what the UPDATE computed over the old one. Names are compared case-blind and
    any word of an expression counts as a name: a doubt keeps the trigger firing.
    """
    if any(written.get(c) != e for c, e in dw.set.items()):
        return False
    touched = row_names(written, table)
    return all(not (identifiers(e) & touched) for e in dw.set.values())


def row_names(columns: Iterable[str], table: Table) -> set[str]:
    """The names (lower-cased, as `identifiers` gives them) by which an expression over a row of
    `table` may read these columns: their own, and the whole row's (the table's name, and the
    trigger's `zdm_row`)."""
    return {c.lower() for c in columns} | {table.name.lower(), "zdm_row"}


def skip_setting(tokens: Iterable[str]) -> sql.Composed:
    """The SET LOCAL that makes the triggers of these mappings pass over this transaction."""
    return sql.SQL("SET LOCAL {} = {}").format(
        sql.Identifier(*SKIP_SETTING.split(".")), sql.Literal(" ".join(tokens))
    )


def writer_setting(writer: str) -> sql.Composed:
    """The SET LOCAL by which a transaction says who writes (`backfill`: zdm's own batches)."""
    return sql.SQL("SET LOCAL {} = {}").format(
        sql.Identifier(*WRITER_SETTING.split(".")), sql.Literal(writer)
    )


def drop_trigger_statements(table: Table, name: str) -> list[Statement]:
    function = table.sibling(name)
    return [
        Statement(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table.ident()),
            LockMode.ACCESS_EXCLUSIVE,
            table,
            note="catalog only",
        ),
        drop_if_exists("FUNCTION", function, LockMode.NONE, None, "catalog only"),
    ]


def _plan_name(ctx: Context) -> str:
    if ctx.plan_name:
        return ctx.plan_name
    return (ctx.plan.name or "") if ctx.plan is not None else ""


def exercise(table: Table, column: str) -> Statement:
    """An UPDATE of one real row (one no other transaction holds) as each writer, rolled back:
    a mapping that cannot even run (a missing column or function) fails here, before the
    trigger is committed, instead of in the application's writes. A row whose data the mapping
    cannot convert does not fail it (that is recorded, and rolled back with the rest)."""
    col = sql.Identifier(column)
    update = sql.SQL(
        "UPDATE {t} SET {c} = {c} WHERE (tableoid, ctid) = "
        "(SELECT tableoid, ctid FROM {t} LIMIT 1 FOR UPDATE SKIP LOCKED);"
    ).format(t=table.ident(), c=col)
    # An error of the row itself (its data, a constraint it breaks) is not the mapping's fault.
    row_error = "data_exception OR integrity_constraint_violation"
    body = sql.SQL(
        "BEGIN\n"
        "  PERFORM set_config({probe}, 'on', true);\n"
        "  BEGIN {update} EXCEPTION WHEN {row_error} THEN NULL; END;\n"
        "  PERFORM set_config({writer}, 'new', true);\n"
        "  BEGIN {update} EXCEPTION WHEN {row_error} THEN NULL; END;\n"
        "  RAISE SQLSTATE {done};\n"
        "EXCEPTION WHEN SQLSTATE {done} THEN NULL;\n"
        "END;"
    ).format(
        probe=sql.Literal(PROBE_SETTING),
        writer=sql.Literal(WRITER_SETTING),
        update=update,
        row_error=sql.SQL(row_error),
        done=sql.Literal(PROBE_DONE),
    )
    return Statement(
        do_block("\n" + body.as_string(None) + "\n"),
        LockMode.ROW_EXCLUSIVE,
        table,
        note="exercises the trigger on one row as each writer, then rolls that back",
    )


@forward(DualWrite)
def dual_write(step: DualWrite, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    name = step.trigger_name
    function = table.sibling(name)
    body = trigger_body(
        dict(step.set),
        dict(step.reverse),
        on_error=step.on_error,
        plan=_plan_name(ctx),
        state_schema=ctx.state_schema,
        table=table.name,
    )
    names = read_names([*step.set.values(), *step.reverse.values()], table.name)
    create_function = Statement(
        create_function_sql(function, table, body, names),
        LockMode.NONE,
        None,
        note="a new function (its variables: the table's columns the mapping reads); locks nothing",
    )
    create_trigger = Statement(
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW"
            " WHEN (strpos(coalesce(current_setting({}, true), ''), {}) = 0"
            " AND current_setting({}, true) IS DISTINCT FROM 'backfill')"
            " EXECUTE FUNCTION {}()"
        ).format(
            sql.Identifier(name),
            table.ident(),
            sql.Literal(SKIP_SETTING),
            sql.Literal(mapping_token(step.set, step.reverse)),
            sql.Literal(WRITER_SETTING),
            function.ident(),
        ),
        LockMode.SHARE_ROW_EXCLUSIVE,
        table,
        note="catalog only; a write gets `reverse` when its transaction has zdm.writer = 'new'"
        " (the expose views set it) or it is an UPDATE that changes a mapped column itself,"
        " any other write gets `set`",
    )
    return [
        Txn(
            (
                create_function,
                create_trigger,
                exercise(table, next(iter(step.set or step.reverse))),
            ),
            f"create dual-write trigger {name}",
            skip_if=cat.trigger_exists(table, name),
        )
    ]


@inverse(DualWrite)
def undo_dual_write(step: DualWrite, ctx: Context) -> list[Action]:
    return drop_dual_write(DropDualWrite(table=step.table, name=step.name), ctx)


@forward(DropDualWrite)
def drop_dual_write(step: DropDualWrite, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    name = step.trigger_name
    done = cat.all_of(cat.trigger_missing(table, name), cat.function_missing(table.sibling(name)))
    return [
        Txn(
            tuple(drop_trigger_statements(table, name)),
            f"drop dual-write trigger {name}",
            skip_if=done,
        )
    ]


@inverse(DropDualWrite)
def undo_drop_dual_write(step: DropDualWrite, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    for dw in ctx.dual_writes(table):
        if dw.trigger_name == step.trigger_name:
            renamed = renames_between(ctx, dw, step, table)
            if renamed:
                # Its expressions name the columns as they were: re-created now, every write
                # of the application would fail on the renamed ones.
                raise Irreversible(
                    f"drop_dual_write {step.trigger_name}: {renamed} ran before it, and its "
                    "trigger reads the names they replaced; drop the trigger before renaming"
                )
            return dual_write(dw, ctx)
    # Undoing nothing would leave the new columns silently unmaintained for old writers.
    raise Irreversible(
        f"drop_dual_write {step.trigger_name}: the plan has no dual_write step that defines it"
    )


def renames_between(ctx: Context, first: object, last: object, table: Table) -> str:
    """The renames of `table` or its columns the plan runs after step `first` and before step
    `last` (by identity), named for a message; '' when there are none."""
    if ctx.plan is None:
        return ""
    specs = [spec for _, _, spec in ctx.plan.iter_steps()]
    try:
        start = next(i for i, s in enumerate(specs) if s is first)
        end = next(i for i, s in enumerate(specs) if s is last)
    except StopIteration:
        return ""
    read = set(getattr(first, "set", {})) | set(getattr(first, "reverse", {}))
    words = set().union(*(identifiers(e) for e in _expressions(first)))
    found = []
    for s in specs[start + 1 : end]:
        if isinstance(s, RenameTable) and ctx.table(s.table) == table:
            found.append(f"rename_table {s.table}")
        elif (
            isinstance(s, RenameColumn)
            and ctx.table(s.table) == table
            and (s.column in read or s.column.lower() in words)
        ):
            found.append(f"rename_column {s.table}.{s.column}")
    return ", ".join(found)


def _expressions(spec: object) -> list[str]:
    return [*getattr(spec, "set", {}).values(), *getattr(spec, "reverse", {}).values()]


def expression(expr: str) -> sql.Composed:
    """A mapped expression, parenthesised, as it appears in a backfill."""
    return sql.SQL("({})").format(user_sql(expr))
