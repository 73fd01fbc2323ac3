"""add_column, drop_column, rename_column, set_default, drop_default, set_not_null, drop_not_null."""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import sql

from zdm.ddl import Action, LockMode, Query, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.ddl.quote import do_block
from zdm.ddl.sqltext import names_column
from zdm.operations.base import Context, forward, inverse, irreversible, recorded, remembers
from zdm.operations.constraints import readd, validate_statement
from zdm.operations.dual_write import drop_trigger_statements
from zdm.plan import (
    AddColumn,
    DropColumn,
    DropDefault,
    DropNotNull,
    RenameColumn,
    SetDefault,
    SetNotNull,
)

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE


def _alter(table: Table, action: sql.Composable) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} {}").format(table.ident(), action)


def _catalog_alter(
    table: Table, action: sql.Composable, label: str, skip_if: Query | None = None
) -> list[Action]:
    """One `ALTER TABLE … <action>` that changes the catalog only, a transaction of its own."""
    stmt = Statement(_alter(table, action), AE, table, note="catalog only")
    return [Txn((stmt,), label, skip_if=skip_if)]


@forward(AddColumn)
def add_column(step: AddColumn, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    col = step.column
    clause: list[sql.Composable] = [
        sql.SQL("ADD COLUMN {} ").format(sql.Identifier(col.name)),
        user_sql(col.type),
    ]
    if col.default is not None:
        clause.append(sql.SQL(" DEFAULT {}").format(user_sql(col.default)))
    if not col.nullable:
        clause.append(sql.SQL(" NOT NULL"))
    stmt = Statement(
        _alter(table, sql.Composed(clause)),
        AE,
        table,
        note="catalog only" if col.default is None else "catalog only (non-volatile default)",
    )
    done = cat.column_exists(table, col.name)
    add = Txn((stmt,), f"add column {col.name}", skip_if=done)
    if col.default is None:
        return [add]
    return [default_rewrite_check(table, col.name, col.type, col.default, done), add]


def default_rewrite_check(
    table: Table, column: str, type_: str, default: str, skip_if: Query
) -> Txn:
    """Refuses a volatile default before it rewrites the table under ACCESS EXCLUSIVE.

    PostgreSQL stores a non-volatile default in the catalog (`atthasmissing`); a volatile one
    rewrites every row. The same ADD COLUMN on a one-row temporary table tells which it is.
    """
    probe = sql.Identifier("pg_temp", "zdm_default_probe")
    message = (
        f"the default of column {sql.Identifier(column).as_string(None)} of"
        f" {table.ident().as_string(None)} ({default}) is volatile: adding the column with it"
        f" would rewrite the whole table under ACCESS EXCLUSIVE. Add the column without a"
        f" default, then set_default, backfill and set_not_null"
    )
    body = (
        "\nBEGIN\n  IF NOT (SELECT atthasmissing FROM pg_attribute WHERE attrelid ="
        " 'pg_temp.zdm_default_probe'::regclass AND attname = 'probe')"
        " AND EXISTS (SELECT 1 FROM pg_temp.zdm_default_probe WHERE probe IS NOT NULL) THEN\n"
        f"    RAISE EXCEPTION USING MESSAGE = {sql.Literal(message).as_string(None)};\n"
        "  END IF;\nEND\n"
    )
    statements = (
        Statement(
            sql.SQL("CREATE TEMPORARY TABLE {} (zdm_row int) ON COMMIT DROP").format(probe),
            LockMode.NONE,
            note="a temporary table; locks nothing",
        ),
        Statement(sql.SQL("INSERT INTO {} VALUES (1)").format(probe), LockMode.NONE),
        Statement(
            sql.SQL("ALTER TABLE {} ADD COLUMN probe {} DEFAULT {}").format(
                probe, user_sql(type_), user_sql(default)
            ),
            LockMode.NONE,
        ),
        Statement(do_block(body), LockMode.NONE),
    )
    return Txn(
        statements, f"check the default of {column} does not rewrite the table", skip_if=skip_if
    )


@inverse(AddColumn)
def undo_add_column(step: AddColumn, ctx: Context) -> list[Action]:
    return drop_column(DropColumn(table=step.table, column=step.column.name), ctx)


@forward(DropColumn)
def drop_column(step: DropColumn, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    statements: list[Statement] = []
    # A dual-write trigger that reads the column would fail every write once it is gone:
    # drop it in the same transaction.
    for dw in ctx.dual_writes(table):
        exprs = [*dw.set.values(), *dw.reverse.values()]
        if (
            step.column in dw.set
            or step.column in dw.reverse
            or any(names_column(e, step.column) for e in exprs)
        ):
            statements.extend(drop_trigger_statements(table, dw.trigger_name))
    statements.append(
        Statement(
            _alter(table, sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(step.column))),
            AE,
            table,
            note="catalog only; drops its data",
        )
    )
    return [
        Txn(
            tuple(statements),
            f"drop column {step.column}",
            skip_if=cat.column_missing(table, step.column),
        )
    ]


irreversible(DropColumn, lambda step: f"drop_column {step.table}.{step.column} destroyed its data")


@forward(RenameColumn)
def rename_column(step: RenameColumn, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    return _catalog_alter(
        table,
        sql.SQL("RENAME COLUMN {} TO {}").format(
            sql.Identifier(step.column), sql.Identifier(step.to)
        ),
        f"rename column {step.column} to {step.to}",
        cat.column_renamed(table, step.column, step.to),
    )


@inverse(RenameColumn)
def undo_rename_column(step: RenameColumn, ctx: Context) -> list[Action]:
    return rename_column(RenameColumn(table=step.table, column=step.to, to=step.column), ctx)


@forward(SetDefault)
def set_default(step: SetDefault, ctx: Context) -> list[Action]:
    return _catalog_alter(
        ctx.table(step.table),
        sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
            sql.Identifier(step.column), user_sql(step.default)
        ),
        f"set default of {step.column}",
    )


@remembers(SetDefault)
@remembers(DropDefault)
def remember_default(step: SetDefault | DropDefault, ctx: Context) -> Query:
    return cat.column_default(ctx.table(step.table), step.column)


@inverse(SetDefault)
@inverse(DropDefault)
def restore_default(step: SetDefault | DropDefault, ctx: Context) -> list[Action]:
    """The default the column had before the step, as the run recorded it: set it again, or drop
    the step's own when there was none."""
    what = f"{step.kind} {step.table}.{step.column}"
    old = recorded(ctx, what, "the default it replaced").get("default")
    if old is None:
        return drop_default(DropDefault(table=step.table, column=step.column), ctx)
    # SQL text that pg_get_expr gave and the run recorded in zdm's state: trusted as the plan is.
    return set_default(SetDefault(table=step.table, column=step.column, default=old), ctx)


@forward(DropDefault)
def drop_default(step: DropDefault, ctx: Context) -> list[Action]:
    return _catalog_alter(
        ctx.table(step.table),
        sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(step.column)),
        f"drop default of {step.column}",
    )


def not_null_check_name(table: Table, column: str) -> str:
    return object_name(table.name, column, "zdm_not_null")


def not_null_constraint_name(table: Table, column: str) -> str:
    """PostgreSQL's own name for a column's not-null constraint (18+), when it fits."""
    return object_name(table.name, column, "not_null")


def object_name(table: str, column: str, suffix: str) -> str:
    """`table_column_suffix` within 63 bytes, shortening the longer name first, as PostgreSQL does.

    When shortened, a hash of the full names keeps two long columns with one prefix apart.
    """
    full = f"{table}_{column}_{suffix}"
    if len(full.encode()) <= 63:
        return full
    suffix = f"{hashlib.sha256(full.encode()).hexdigest()[:6]}_{suffix}"
    budget = 63 - len(suffix.encode()) - 2
    t, c = table, column
    while len(t.encode()) + len(c.encode()) > budget:
        if len(t.encode()) >= len(c.encode()):
            t = t[:-1]
        else:
            c = c[:-1]
    return f"{t}_{c}_{suffix}"


@forward(SetNotNull)
def set_not_null(step: SetNotNull, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    col = sql.Identifier(step.column)
    if ctx.server_version >= 180000:
        default = not_null_constraint_name(table, step.column)
        name = sql.Identifier(default)
        return [
            Txn(
                (
                    Statement(
                        _alter(
                            table,
                            sql.SQL("ADD CONSTRAINT {} NOT NULL {} NOT VALID").format(name, col),
                        ),
                        AE,
                        table,
                        note="no scan (NOT VALID); new writes are checked",
                    ),
                ),
                f"add not-null constraint on {step.column} (not valid)",
                skip_if=cat.column_not_null(table, step.column),
            ),
            Txn(
                (validate_statement(table, default),),
                f"validate not-null constraint on {step.column}",
                # Runs while the constraint of this name is NOT VALID, or is still to be added.
                skip_if=cat.all_of(
                    cat.column_not_null(table, step.column),
                    cat.constraint_not_pending(table, default),
                ),
            ),
            _validate_not_null_of_another_name(table, step.column, default),
        ]
    check_name = not_null_check_name(table, step.column)
    check = sql.Identifier(check_name)
    already = cat.column_not_null(table, step.column)
    return [
        Txn(
            (
                Statement(
                    _alter(
                        table,
                        sql.SQL("ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID").format(
                            check, col
                        ),
                    ),
                    AE,
                    table,
                    note="no scan (NOT VALID); new writes are checked",
                ),
            ),
            f"add check {step.column} IS NOT NULL (not valid)",
            skip_if=sql.SQL("SELECT ({}) OR ({})").format(
                already, cat.constraint_exists(table, check_name)
            ),
        ),
        Txn(
            (validate_statement(table, check_name),),
            f"validate check {step.column} IS NOT NULL",
            skip_if=sql.SQL("SELECT ({}) OR ({})").format(
                already, cat.constraint_validated(table, check_name)
            ),
        ),
        Txn(
            (
                Statement(
                    _alter(table, sql.SQL("ALTER COLUMN {} SET NOT NULL").format(col)),
                    AE,
                    table,
                    note="no scan: the validated check proves it",
                ),
                Statement(
                    _alter(table, sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(check)),
                    AE,
                    table,
                    note="catalog only",
                ),
            ),
            f"set {step.column} NOT NULL and drop the check",
            skip_if=cat.all_of(already, cat.constraint_missing(table, check_name)),
        ),
    ]


def _validate_not_null_of_another_name(table: Table, column: str, default: str) -> Txn:
    """VALIDATE of the column's NOT VALID not-null constraint when it has a name other than
    `default` (PostgreSQL 18 keeps one not-null constraint a column, so the step's is never
    added); skipped unless there is one."""
    body = sql.SQL(
        "\nDECLARE\n  con name;\nBEGIN\n"
        "  SELECT c.conname INTO con FROM pg_constraint c JOIN pg_attribute a"
        " ON a.attrelid = c.conrelid AND c.conkey = ARRAY[a.attnum]"
        " WHERE c.conrelid = {target}::regclass AND c.contype = 'n' AND a.attname = {column}"
        " AND NOT c.convalidated;\n"
        "  IF con IS NOT NULL THEN\n"
        "    EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', {target}, con);\n"
        "  END IF;\nEND\n"
    ).format(target=sql.Literal(table.ident().as_string(None)), column=sql.Literal(column))
    stmt = Statement(
        do_block(body),
        SUE,
        table,
        scans=True,
        note="only when the column already had a NOT VALID not-null constraint of another name;"
        " reads and writes continue",
    )
    return Txn(
        (stmt,),
        f"validate the existing not-null constraint on {column}",
        skip_if=cat.no_other_pending_not_null(table, column, default),
    )


@remembers(SetNotNull)
@remembers(DropNotNull)
def remember_not_null(step: SetNotNull | DropNotNull, ctx: Context) -> Query | None:
    """PostgreSQL 18: the column's not-null constraint, whose name and validity the plan does
    not say. Before 18 a NOT NULL has neither, and the plan says all."""
    if ctx.server_version < 180000:
        return None
    return cat.not_null_record(ctx.table(step.table), step.column)


@inverse(SetNotNull)
def undo_set_not_null(step: SetNotNull, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    before = _not_null_before(ctx)
    if before is not None:
        if before["validated"]:
            return []  # the column was NOT NULL already: the step changed nothing
        # It had a NOT VALID not-null constraint, which the step validated: made NOT VALID again
        # (catalog only, one statement); the recorded definition ends with NOT VALID.
        stmt = Statement(
            _alter(
                table,
                sql.SQL("DROP CONSTRAINT {}, ADD CONSTRAINT {} {}").format(
                    sql.Identifier(before["name"]),
                    sql.Identifier(before["name"]),
                    user_sql(before["definition"]),
                ),
            ),
            AE,
            table,
            note="catalog only: re-added NOT VALID from its recorded definition",
        )
        return [
            Txn(
                (stmt,),
                f"mark not-null constraint {before['name']} not valid again",
                skip_if=sql.SQL("SELECT NOT ({})").format(
                    cat.constraint_validated(table, before["name"])
                ),
            )
        ]
    actions = drop_not_null(DropNotNull(table=step.table, column=step.column), ctx)
    if ctx.server_version < 180000:
        # A half-finished forward run may have left its helper check behind.
        name = not_null_check_name(table, step.column)
        actions += _catalog_alter(
            table,
            sql.SQL("DROP CONSTRAINT IF EXISTS {}").format(sql.Identifier(name)),
            f"drop check {step.column} IS NOT NULL",
            cat.constraint_missing(table, name),
        )
    return actions


@forward(DropNotNull)
def drop_not_null(step: DropNotNull, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    return _catalog_alter(
        table,
        sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(step.column)),
        f"drop NOT NULL of {step.column}",
        cat.column_nullable(table, step.column),
    )


@inverse(DropNotNull)
def undo_drop_not_null(step: DropNotNull, ctx: Context) -> list[Action]:
    before = _not_null_before(ctx)
    if before is None:
        if ctx.remembered is not None:
            return []  # PostgreSQL 18 recorded no not-null constraint: the step dropped nothing
        return set_not_null(SetNotNull(table=step.table, column=step.column), ctx)
    # PostgreSQL 18: the constraint the step dropped, under its own name, NOT VALID as it may
    # have been.
    return list(
        readd(ctx.table(step.table), before["name"], before["definition"], before["validated"])
    )


def _not_null_before(ctx: Context) -> dict[str, Any] | None:
    """The not-null constraint the column had before the step (PostgreSQL 18), as the run
    recorded it; None when it had none, or when there is no record (a step run before 18 or by
    an older zdm), where the plan's own shape is what the step changed."""
    if ctx.remembered is None:
        return None
    record: dict[str, Any] | None = ctx.remembered.get("not_null")
    return record
