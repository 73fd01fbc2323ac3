"""add_check, add_foreign_key, add_unique, validate_constraint, drop_constraint.

Constraints are added NOT VALID (a short ACCESS EXCLUSIVE, no scan) and validated in a separate
transaction under SHARE UPDATE EXCLUSIVE, which lets reads and writes continue during the scan.
"""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.ddl.quote import dollar_quoted
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.operations.indexes import build_index
from zdm.plan import (
    AddCheck,
    AddForeignKey,
    AddUnique,
    DropConstraint,
    ValidateConstraint,
)

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE


def _add(table: Table, name: str, body: sql.Composable, lock: LockMode, note: str) -> Txn:
    stmt = Statement(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
            table.ident(), sql.Identifier(name), body
        ),
        lock,
        table,
        note=note,
    )
    return Txn(
        (stmt,), f"add constraint {name} (not valid)", skip_if=cat.constraint_exists(table, name)
    )


def validate(table: Table, name: str) -> Txn:
    stmt = Statement(
        sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            table.ident(), sql.Identifier(name)
        ),
        SUE,
        table,
        scans=True,
        note="scans the table; reads and writes continue",
    )
    return Txn(
        (stmt,), f"validate constraint {name}", skip_if=cat.constraint_validated(table, name)
    )


def drop(table: Table, name: str) -> Txn:
    stmt = Statement(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            table.ident(), sql.Identifier(name)
        ),
        AE,
        table,
        note="catalog only",
    )
    return Txn((stmt,), f"drop constraint {name}", skip_if=cat.constraint_missing(table, name))


@forward(AddCheck)
def add_check(step: AddCheck, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    actions: list[Action] = [
        _add(
            table,
            step.name,
            sql.SQL("CHECK ({})").format(user_sql(step.check)),
            AE,
            "no scan (NOT VALID); new writes are checked",
        )
    ]
    if step.validate:
        actions.append(validate(table, step.name))
    return actions


@forward(AddForeignKey)
def add_foreign_key(step: AddForeignKey, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    target = ctx.table(step.references.table)
    body = sql.SQL("FOREIGN KEY ({}) REFERENCES {} ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, step.columns)),
        target.ident(),
        sql.SQL(", ").join(map(sql.Identifier, step.references.columns)),
    )
    if step.on_delete:
        body = body + sql.SQL(" ON DELETE ") + user_sql(step.on_delete.upper())
    actions: list[Action] = [
        _add(
            table,
            step.name,
            body,
            LockMode.SHARE_ROW_EXCLUSIVE,
            f"no scan (NOT VALID); also locks {target} (SHARE ROW EXCLUSIVE)",
        )
    ]
    if step.validate:
        actions.append(validate(table, step.name))
    return actions


@forward(AddUnique)
def add_unique(step: AddUnique, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    index = table.sibling(step.name)
    attach = Statement(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE USING INDEX {}").format(
            table.ident(), sql.Identifier(step.name), sql.Identifier(step.name)
        ),
        AE,
        table,
        note="catalog only: the index is already built",
    )
    done = cat.constraint_exists(table, step.name)
    return [
        *build_index(
            table,
            index,
            sql.SQL(", ").join(map(sql.Identifier, step.columns)),
            unique=True,
            skip_if=sql.SQL("SELECT ({}) OR ({})").format(cat.index_valid(index), done),
        ),
        Txn((attach,), f"attach unique constraint {step.name}", skip_if=done),
    ]


def _undo_add(step: AddCheck | AddForeignKey | AddUnique, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    actions: list[Action] = [drop(table, step.name)]
    if isinstance(step, AddUnique):
        # Before the constraint is attached, the index stands alone.
        index = table.sibling(step.name)
        stmt = Statement(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index.ident()),
            SUE,
            table,
            note="reads and writes continue",
        )
        actions.append(
            Txn(
                (stmt,),
                f"drop index {step.name}",
                transactional=False,
                skip_if=cat.index_missing(index),
            )
        )
    return actions


inverse(AddCheck)(_undo_add)
inverse(AddForeignKey)(_undo_add)
inverse(AddUnique)(_undo_add)


@forward(ValidateConstraint)
def validate_constraint(step: ValidateConstraint, ctx: Context) -> list[Action]:
    return [validate(ctx.table(step.table), step.name)]


@inverse(ValidateConstraint)
def undo_validate_constraint(step: ValidateConstraint, ctx: Context) -> list[Action]:
    """Makes the constraint NOT VALID again: dropped and re-added from its own definition, in one
    statement (a catalog change under a short ACCESS EXCLUSIVE, no scan)."""
    table = ctx.table(step.table)
    target = sql.Literal(table.ident().as_string(None))
    name = sql.Literal(step.name)
    body = sql.SQL(
        "\nDECLARE\n  def text;\nBEGIN\n"
        "  SELECT pg_get_constraintdef(oid) INTO def FROM pg_constraint"
        " WHERE conrelid = {target}::regclass AND conname = {name} AND convalidated;\n"
        "  IF def IS NOT NULL THEN\n"
        "    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s NOT VALID',"
        " {target}, {name}, {name}, def);\n"
        "  END IF;\nEND\n"
    ).format(target=target, name=name)
    stmt = Statement(
        sql.SQL("DO {}").format(dollar_quoted(body.as_string(None))),
        AE,
        table,
        note="catalog only: re-added NOT VALID from its own definition",
    )
    return [
        Txn(
            (stmt,),
            f"mark constraint {step.name} not valid again",
            skip_if=sql.SQL("SELECT NOT ({})").format(cat.constraint_validated(table, step.name)),
        )
    ]


@forward(DropConstraint)
def drop_constraint(step: DropConstraint, ctx: Context) -> list[Action]:
    return [drop(ctx.table(step.table), step.name)]


@inverse(DropConstraint)
def undo_drop_constraint(step: DropConstraint, ctx: Context) -> list[Action]:
    raise Irreversible(f"drop_constraint {step.name}: the plan does not say how it was defined")
