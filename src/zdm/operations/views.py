"""expose, unexpose: versioned views for dual-read.

`expose` makes a schema (say `app_v2`) of simple views, one per changed table, that show the
table in its new shape: new names, new columns, old columns hidden. A new application version
switches by `SET search_path = app_v2, public` and reads and writes through the views; the old
version keeps using the base tables. Each view selects plain columns of one table, so PostgreSQL
makes it auto-updatable: INSERT, UPDATE and DELETE through it become the same statements on the
table, whose defaults, constraints and triggers apply as for any other write.

The dual-write trigger (`operations/dual_write.py`) tells the two shapes apart by the written
row's values alone (a mapped column left NULL on INSERT, changed or not on UPDATE), never by
`search_path`, so a write through a view and a write to the table are kept in step alike.

The version schema belongs to zdm: `expose` creates it and marks it with a comment, refuses a
schema that exists without that mark, and `unexpose` drops only a marked schema.
"""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Table, Txn
from zdm.ddl import catalog as cat
from zdm.ddl.quote import dollar_quoted
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.plan import Expose, ExposeTable, Unexpose

#: The comment that marks a schema as a zdm version schema, which zdm may drop.
VERSION_SCHEMA_MARK = "zdm version schema: views made by an expose step"


def _do(body: sql.Composable) -> sql.Composed:
    """An anonymous PL/pgSQL block; `body` is composed SQL (names and values quoted)."""
    return sql.SQL("DO {}").format(dollar_quoted("\n" + body.as_string(None) + "\n"))


def _namespace(schema: str) -> sql.Composed:
    """to_regnamespace() of a schema: NULL when it does not exist, so nothing raises."""
    return sql.SQL("to_regnamespace({})").format(
        sql.Literal(sql.Identifier(schema).as_string(None))
    )


def _marked(schema: str) -> sql.Composed:
    return sql.SQL("obj_description({}, 'pg_namespace') = {}").format(
        _namespace(schema), sql.Literal(VERSION_SCHEMA_MARK)
    )


def schema_missing(schema: str) -> sql.Composed:
    """Catalog probe: true when the schema does not exist."""
    return sql.SQL("SELECT {} IS NULL").format(_namespace(schema))


def _create_schema(schema: str) -> Statement:
    body = sql.SQL(
        "BEGIN\n"
        "  IF {ns} IS NULL THEN\n"
        "    CREATE SCHEMA {s};\n"
        "    COMMENT ON SCHEMA {s} IS {mark};\n"
        "  ELSIF NOT coalesce({marked}, false) THEN\n"
        "    RAISE EXCEPTION 'schema % exists and was not made by zdm expose; "
        "give the views a schema of their own', {name};\n"
        "  END IF;\n"
        "END;"
    ).format(
        ns=_namespace(schema),
        s=sql.Identifier(schema),
        mark=sql.Literal(VERSION_SCHEMA_MARK),
        marked=_marked(schema),
        name=sql.Literal(schema),
    )
    return Statement(
        _do(body),
        LockMode.NONE,
        None,
        note=f"creates version schema {schema} unless zdm made it already; locks nothing",
    )


def _names(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Literal, names))


def _create_view(schema: str, spec: ExposeTable, ctx: Context) -> Statement:
    table = ctx.table(spec.table)
    view = Table(schema, spec.view_name)
    renamed = "".join(f"; {old} shown as {new}" for old, new in spec.rename.items())
    if spec.columns is not None:
        items = [
            sql.SQL("{} AS {}").format(sql.Identifier(c), sql.Identifier(spec.rename[c]))
            if c in spec.rename
            else sql.Identifier(c)
            for c in spec.columns
        ]
        query: sql.Composed = sql.SQL("CREATE VIEW {} AS SELECT {} FROM {}").format(
            view.ident(), sql.SQL(", ").join(items), table.ident()
        )
        what = f"columns {', '.join(spec.columns)}"
    else:
        query = _do(_view_block(table, view, spec))
        hidden = f" minus {', '.join(spec.hide)}" if spec.hide else ""
        what = f"the columns {table} has when it runs{hidden}"
    return Statement(
        query,
        LockMode.ACCESS_SHARE,
        table,
        note=f"view {view} of {table}: {what}{renamed}; auto-updatable; catalog only",
    )


def _view_block(table: Table, view: Table, spec: ExposeTable) -> sql.Composed:
    """PL/pgSQL that creates the view over the table's columns as the catalog has them then."""
    rel = sql.SQL("{}::regclass").format(sql.Literal(table.ident().as_string(None)))
    columns = sql.SQL(
        "FROM pg_attribute a WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped"
    ).format(rel=rel)
    parts: list[sql.Composable] = [
        sql.SQL("DECLARE\n  zdm_missing text;\n  zdm_select text;\nBEGIN\n")
    ]
    named = [*spec.hide, *spec.rename]
    if named:
        # A misspelt hidden or renamed column would otherwise show the old shape silently.
        parts.append(
            sql.SQL(
                "  SELECT string_agg(n, ', ') INTO zdm_missing FROM unnest(ARRAY[{names}]::text[]) AS n\n"
                "   WHERE NOT EXISTS (SELECT 1 {columns} AND a.attname = n);\n"
                "  IF zdm_missing IS NOT NULL THEN\n"
                "    RAISE EXCEPTION 'expose: table % has no column %', {table}, zdm_missing;\n"
                "  END IF;\n"
            ).format(names=_names(named), columns=columns, table=sql.Literal(str(table)))
        )
    item: sql.Composable = sql.SQL("quote_ident(a.attname)")
    if spec.rename:
        whens = [
            sql.SQL(" WHEN {} THEN format('%I AS %I', a.attname, {})").format(
                sql.Literal(old), sql.Literal(new)
            )
            for old, new in spec.rename.items()
        ]
        item = sql.SQL("CASE a.attname{} ELSE quote_ident(a.attname) END").format(
            sql.Composed(whens)
        )
    hide = (
        sql.SQL(" AND a.attname NOT IN ({})").format(_names(spec.hide))
        if spec.hide
        else sql.SQL("")
    )
    parts.append(
        sql.SQL(
            "  SELECT string_agg({item}, ', ' ORDER BY a.attnum) INTO zdm_select\n"
            "    {columns}{hide};\n"
            "  EXECUTE format('CREATE VIEW %s AS SELECT %s FROM %s', {view}, zdm_select, {table});\n"
            "END;"
        ).format(
            item=item,
            columns=columns,
            hide=hide,
            view=sql.Literal(view.ident().as_string(None)),
            table=sql.Literal(table.ident().as_string(None)),
        )
    )
    return sql.Composed(parts)


@forward(Expose)
def expose(step: Expose, ctx: Context) -> list[Action]:
    schema = step.schema_
    views = [Table(schema, t.view_name) for t in step.tables]
    statements = [_create_schema(schema), *(_create_view(schema, t, ctx) for t in step.tables)]
    return [
        Txn(
            tuple(statements),
            f"expose {', '.join(map(str, views))}",
            skip_if=cat.all_of(*(cat.table_exists(v) for v in views)),
        )
    ]


@inverse(Expose)
def undo_expose(step: Expose, ctx: Context) -> list[Action]:
    schema = step.schema_
    drops = [
        Statement(
            sql.SQL("DROP VIEW IF EXISTS {}").format(Table(schema, t.view_name).ident()),
            LockMode.ACCESS_EXCLUSIVE,
            Table(schema, t.view_name),
            note="catalog only; the table and its data stay",
        )
        for t in step.tables
    ]
    # Another expose step may share the schema: it is dropped only once it is empty.
    body = sql.SQL(
        "BEGIN\n"
        "  IF {marked} THEN\n"
        "    BEGIN\n"
        "      DROP SCHEMA {s};\n"
        "    EXCEPTION WHEN dependent_objects_still_exist THEN\n"
        "      RAISE NOTICE 'version schema % still holds other views: kept', {name};\n"
        "    END;\n"
        "  END IF;\n"
        "END;"
    ).format(marked=_marked(schema), s=sql.Identifier(schema), name=sql.Literal(schema))
    drop_schema = Statement(
        _do(body), LockMode.NONE, None, note=f"drops version schema {schema} once it is empty"
    )
    return [
        Txn(
            (*drops, drop_schema),
            f"drop the views of {schema}",
            skip_if=schema_missing(schema),
        )
    ]


@forward(Unexpose)
def unexpose(step: Unexpose, ctx: Context) -> list[Action]:
    schema = step.schema_
    ns = _namespace(schema)
    body = sql.SQL(
        "BEGIN\n"
        "  IF {ns} IS NULL THEN\n"
        "    RETURN;\n"
        "  END IF;\n"
        "  IF NOT coalesce({marked}, false) THEN\n"
        "    RAISE EXCEPTION 'schema % was not made by zdm expose; unexpose drops only version "
        "schemas', {name};\n"
        "  END IF;\n"
        "  IF EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = {ns} AND relkind <> 'v')\n"
        "     OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = {ns}) THEN\n"
        "    RAISE EXCEPTION 'version schema % holds more than views; drop them yourself first', "
        "{name};\n"
        "  END IF;\n"
        "  DROP SCHEMA {s} CASCADE;\n"
        "END;"
    ).format(ns=ns, marked=_marked(schema), name=sql.Literal(schema), s=sql.Identifier(schema))
    stmt = Statement(
        _do(body),
        LockMode.ACCESS_EXCLUSIVE,
        None,
        note="drops the version schema and its views; no table or data is touched",
    )
    return [Txn((stmt,), f"unexpose {schema}", skip_if=schema_missing(schema))]


@inverse(Unexpose)
def undo_unexpose(step: Unexpose, ctx: Context) -> list[Action]:
    steps = (
        []
        if ctx.plan is None
        else [
            spec
            for _, _, spec in ctx.plan.iter_steps()
            if isinstance(spec, Expose) and spec.schema_ == step.schema_
        ]
    )
    if not steps:
        raise Irreversible(
            f"unexpose {step.schema_}: no expose step of this plan says what its views were"
        )
    return [action for spec in steps for action in expose(spec, ctx)]
