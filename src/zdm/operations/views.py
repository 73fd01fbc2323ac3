"""expose, unexpose: versioned views for dual-read.

`expose` makes a schema (say `app_v2`) of simple views, one per changed table, that show the
table in its new shape: new names, new columns, old columns hidden. A new application version
switches by `SET search_path = app_v2, public` and reads and writes through the views; the old
version keeps using the base tables. Each view selects plain columns of one table, so PostgreSQL
makes it auto-updatable: INSERT, UPDATE and DELETE through it become the same statements on the
table, whose defaults, constraints and triggers apply as for any other write.

The views also say who writes, for the dual-write trigger (`operations/dual_write.py`): each view
selects from a plain writer view (`zdm_w_<view>`, the same columns) under a condition that sets
`zdm.writer = 'new'` for the rest of the transaction (a one-time filter, evaluated before any
row is read or written); an INSTEAD OF INSERT trigger sets it and inserts into the writer view,
since an INSERT reads no row. The view's columns carry the table's defaults, so a column the new
version leaves out gets its default as on the table. ON CONFLICT cannot go through the view
(PostgreSQL allows it only on auto-updatable views without INSTEAD OF triggers).

The version schema belongs to zdm: `expose` creates it and marks it with a comment, refuses a
schema that exists without that mark, and `unexpose` drops only a marked schema.
"""

from __future__ import annotations

import json

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Table, Txn, drop_if_exists
from zdm.ddl import catalog as cat
from zdm.ddl.quote import do_block, dollar_quoted
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.plan import Expose, ExposeTable, RenameColumn, RenameTable, StepSpec, Unexpose

AE = LockMode.ACCESS_EXCLUSIVE

#: The comment that marks a schema as a zdm version schema, which zdm may drop.
VERSION_SCHEMA_MARK = "zdm version schema: views made by an expose step"


def _do(body: sql.Composable) -> sql.Composed:
    """An anonymous PL/pgSQL block; `body` is composed SQL (names and values quoted)."""
    return do_block("\n" + body.as_string(None) + "\n")


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


def _names_of(schema: str) -> dict[str, sql.Composable]:
    """The version schema as the DO blocks name it: `s` (identifier), `name` (literal), and
    `marked` (whether expose made it)."""
    return {"s": sql.Identifier(schema), "name": sql.Literal(schema), "marked": _marked(schema)}


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
    ).format(ns=_namespace(schema), mark=sql.Literal(VERSION_SCHEMA_MARK), **_names_of(schema))
    return Statement(
        _do(body),
        LockMode.NONE,
        None,
        note=f"creates version schema {schema} unless zdm made it already; locks nothing",
    )


def writer_view(schema: str, spec: ExposeTable) -> Table:
    """The plain view the exposed one selects from, and its INSERT trigger writes to."""
    return Table(schema, f"zdm_w_{spec.view_name}")


def _insert_function(schema: str, spec: ExposeTable) -> Table:
    return Table(schema, f"zdm_insert_{spec.view_name}")


def _marker(schema: str) -> Table:
    return Table(schema, "zdm_writer_new")


def _create_marker(schema: str) -> Statement:
    body = (
        "\nBEGIN\n  PERFORM pg_catalog.set_config('zdm.writer', 'new', true);\n"
        "  RETURN true;\nEND;\n"
    )
    return Statement(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS boolean LANGUAGE plpgsql STABLE AS {}"
        ).format(_marker(schema).ident(), dollar_quoted(body)),
        LockMode.NONE,
        None,
        note="marks a transaction that uses the version schema's views as the new version's",
    )


def _names(names: list[str]) -> sql.Composed:
    return sql.SQL(", ").join(map(sql.Literal, names))


def _create_view(schema: str, spec: ExposeTable, ctx: Context) -> Statement:
    table = ctx.table(spec.table)
    view = writer_view(schema, spec)
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
        note=f"writer view {view} of {table}: {what}{renamed}; auto-updatable; catalog only",
    )


def _create_exposed(schema: str, spec: ExposeTable, ctx: Context) -> Statement:
    """The view the new version uses: the writer view under the marker, with the table's
    defaults, and an INSTEAD OF INSERT trigger that marks the write."""
    table = ctx.table(spec.table)
    view = Table(schema, spec.view_name)
    writer = writer_view(schema, spec)
    function = _insert_function(schema, spec)
    base_of = {shown: base for base, shown in spec.rename.items()}
    body = sql.SQL(
        "DECLARE\n"
        "  zdm_col record;\n"
        "  zdm_default text;\n"
        "  zdm_cols text := '';\n"
        "  zdm_values text := '';\n"
        "BEGIN\n"
        "  EXECUTE format('CREATE VIEW %s AS SELECT * FROM %s WHERE %s()', {view}, {writer}, {marker});\n"
        "  FOR zdm_col IN\n"
        "    SELECT a.attname AS shown, b.attname AS base, b.attidentity, b.attgenerated,\n"
        "           pg_get_expr(d.adbin, d.adrelid) AS expr\n"
        "      FROM pg_attribute a\n"
        "      JOIN pg_attribute b ON b.attrelid = {table}::regclass\n"
        "       AND b.attname = coalesce({base_of}::jsonb ->> a.attname::text, a.attname)\n"
        "      LEFT JOIN pg_attrdef d ON d.adrelid = b.attrelid AND d.adnum = b.attnum\n"
        "     WHERE a.attrelid = {writer}::regclass AND a.attnum > 0 ORDER BY a.attnum\n"
        "  LOOP\n"
        "    CONTINUE WHEN zdm_col.attgenerated <> '';\n"
        "    zdm_default := CASE WHEN zdm_col.attidentity <> '' THEN\n"
        "      format('nextval(%L::regclass)', pg_get_serial_sequence({table}, zdm_col.base))\n"
        "      ELSE zdm_col.expr END;\n"
        "    IF zdm_default IS NOT NULL THEN\n"
        "      EXECUTE format('ALTER VIEW %s ALTER COLUMN %I SET DEFAULT %s', {view}, zdm_col.shown,\n"
        "                     zdm_default);\n"
        "    END IF;\n"
        "    zdm_cols := zdm_cols || CASE WHEN zdm_cols = '' THEN '' ELSE ', ' END || quote_ident(zdm_col.shown);\n"
        "    zdm_values := zdm_values || CASE WHEN zdm_values = '' THEN '' ELSE ', ' END\n"
        "      || 'NEW.' || quote_ident(zdm_col.shown);\n"
        "  END LOOP;\n"
        "  EXECUTE format('CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L', {function},\n"
        "    format(E'BEGIN\\n  PERFORM pg_catalog.set_config(''zdm.writer'', ''new'', true);\\n'\n"
        "           '  INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE VALUES (%s) RETURNING * INTO NEW;\\n'\n"
        "           '  RETURN NEW;\\nEND;', {writer}, zdm_cols, zdm_values));\n"
        "  EXECUTE format('CREATE TRIGGER zdm_insert INSTEAD OF INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s()',\n"
        "                 {view}, {function});\n"
        "END;"
    ).format(
        view=sql.Literal(view.ident().as_string(None)),
        writer=sql.Literal(writer.ident().as_string(None)),
        marker=sql.Literal(_marker(schema).ident().as_string(None)),
        table=sql.Literal(table.ident().as_string(None)),
        function=sql.Literal(function.ident().as_string(None)),
        base_of=sql.Literal(json.dumps(base_of)),
    )
    return Statement(
        _do(body),
        LockMode.ACCESS_SHARE,
        table,
        note=f"view {view} of {writer}: marks the new version's writes; the table's defaults;"
        " an INSTEAD OF INSERT trigger; catalog only",
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
    statements = [_create_schema(schema), _create_marker(schema)]
    for spec in step.tables:
        statements += [_create_view(schema, spec, ctx), _create_exposed(schema, spec, ctx)]
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
    drops = []
    for t in step.tables:
        view, writer = Table(schema, t.view_name), writer_view(schema, t)
        drops += [
            drop_if_exists("VIEW", view, AE, view, "catalog only; the table and its data stay"),
            drop_if_exists(
                "FUNCTION",
                _insert_function(schema, t),
                LockMode.NONE,
                None,
                "its INSERT trigger's function",
            ),
            drop_if_exists("VIEW", writer, AE, writer, "catalog only"),
        ]
    # Another expose step may share the schema: it is dropped only once it is empty.
    body = sql.SQL(
        "BEGIN\n"
        "  IF {marked} THEN\n"
        "    BEGIN\n"
        "      DROP FUNCTION IF EXISTS {marker}();\n"
        "      DROP SCHEMA {s};\n"
        "    EXCEPTION WHEN dependent_objects_still_exist THEN\n"
        "      RAISE NOTICE 'version schema % still holds other views: kept', {name};\n"
        "    END;\n"
        "  END IF;\n"
        "END;"
    ).format(marker=_marker(schema).ident(), **_names_of(schema))
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
        "     OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = {ns} AND proname NOT LIKE 'zdm\\_%') THEN\n"
        "    RAISE EXCEPTION 'version schema % holds more than views; drop them yourself first', "
        "{name};\n"
        "  END IF;\n"
        "  DROP SCHEMA {s} CASCADE;\n"
        "END;"
    ).format(ns=ns, **_names_of(schema))
    stmt = Statement(
        _do(body),
        LockMode.ACCESS_EXCLUSIVE,
        None,
        note="drops the version schema and its views; no table or data is touched",
    )
    return [Txn((stmt,), f"unexpose {schema}", skip_if=schema_missing(schema))]


@inverse(Unexpose)
def undo_unexpose(step: Unexpose, ctx: Context) -> list[Action]:
    specs: list[StepSpec] = [] if ctx.plan is None else [s for _, _, s in ctx.plan.iter_steps()]
    at = next((i for i, s in enumerate(specs) if s is step), len(specs))
    found = [
        (i, spec)
        for i, spec in enumerate(specs[:at])
        if isinstance(spec, Expose) and spec.schema_ == step.schema_
    ]
    if not found:
        raise Irreversible(
            f"unexpose {step.schema_}: no expose step of this plan says what its views were"
        )
    # Undone, unexpose meets the tables as the steps between expose and it left them: renamed
    # tables and columns are still renamed (their own inverses come later in the rollback).
    return [
        action
        for i, spec in found
        for action in expose(renamed_expose(spec, specs[i + 1 : at], ctx), ctx)
    ]


def renamed_expose(spec: Expose, later: list[StepSpec], ctx: Context) -> Expose:
    """`spec` as it reads after the renames among `later` steps: the same views, of the tables
    and columns under their new names."""
    tables = []
    for t in spec.tables:
        table = ctx.table(t.table)
        view = t.view_name
        columns, hide, rename = t.columns, list(t.hide), dict(t.rename)
        for s in later:
            if isinstance(s, RenameTable) and ctx.table(s.table) == table:
                table = table.sibling(s.to)
            elif isinstance(s, RenameColumn) and ctx.table(s.table) == table:

                def moved(name: str, old: str = s.column, new: str = s.to) -> str:
                    return new if name == old else name

                columns = None if columns is None else [moved(c) for c in columns]
                hide = [moved(c) for c in hide]
                # The view keeps the name it showed: the renamed column is shown under it.
                shown = rename.pop(s.column, s.column)
                if shown != s.to:
                    rename[s.to] = shown
        tables.append(
            ExposeTable(table=str(table), view=view, columns=columns, hide=hide, rename=rename)
        )
    return Expose(schema=spec.schema_, tables=tables)
