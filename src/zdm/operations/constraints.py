"""add_check, add_foreign_key, add_unique, validate_constraint, drop_constraint.

Constraints are added NOT VALID (a short ACCESS EXCLUSIVE, no scan) and validated in a separate
transaction under SHARE UPDATE EXCLUSIVE, which lets reads and writes continue during the scan.
drop_constraint remembers the constraint's definition before its first attempt; its inverse adds
it again the same way (a PRIMARY KEY or UNIQUE constraint over an index built concurrently).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from zdm.ddl import Action, Check, LockMode, Query, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.ddl.quote import do_block
from zdm.operations.base import Context, Irreversible, forward, inverse, recorded, remembers
from zdm.operations.indexes import build_index, drop_index_concurrently, rebuild_index
from zdm.plan import (
    AddCheck,
    AddForeignKey,
    AddUnique,
    DropConstraint,
    ValidateConstraint,
)

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE


def _add(
    table: Table,
    name: str,
    body: sql.Composable,
    lock: LockMode,
    note: str,
    references: Table | None = None,
) -> Txn:
    """ADD CONSTRAINT … NOT VALID; a foreign key locks the table it `references` too."""
    stmt = Statement(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
            table.ident(), sql.Identifier(name), body
        ),
        lock,
        table,
        note=note,
        also=(references,) if references is not None else (),
    )
    return Txn(
        (stmt,), f"add constraint {name} (not valid)", skip_if=cat.constraint_exists(table, name)
    )


def validate_statement(table: Table, name: str) -> Statement:
    """VALIDATE CONSTRAINT: scans the table under SHARE UPDATE EXCLUSIVE."""
    return Statement(
        sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
            table.ident(), sql.Identifier(name)
        ),
        SUE,
        table,
        scans=True,
        note="scans the table; reads and writes continue",
        validates=name,
    )


def validate(table: Table, name: str) -> Txn:
    return Txn(
        (validate_statement(table, name),),
        f"validate constraint {name}",
        skip_if=cat.constraint_validated(table, name),
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


def reference_options(
    match_type: str | None,
    on_delete: str | None,
    on_update: str | None,
    deferrable: bool = False,
    initially_deferred: bool = False,
    on_delete_set_columns: list[str] | None = None,
) -> sql.Composed:
    """What follows a foreign key's REFERENCES clause: MATCH, ON DELETE, ON UPDATE,
    DEFERRABLE (the plan's values are checked literals, so their upper case is SQL)."""
    parts: list[sql.Composable] = []
    if match_type:
        parts.append(sql.SQL(" MATCH ") + user_sql(match_type.upper()))
    if on_delete:
        parts.append(sql.SQL(" ON DELETE ") + user_sql(on_delete.upper()))
        if on_delete_set_columns:
            parts.append(
                sql.SQL(" ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, on_delete_set_columns))
                )
            )
    if on_update:
        parts.append(sql.SQL(" ON UPDATE ") + user_sql(on_update.upper()))
    parts.append(deferral(deferrable, initially_deferred))
    return sql.Composed(parts)


def deferral(deferrable: bool, initially_deferred: bool) -> sql.SQL:
    if initially_deferred:
        return sql.SQL(" DEFERRABLE INITIALLY DEFERRED")
    return sql.SQL(" DEFERRABLE" if deferrable else "")


@forward(AddCheck)
def add_check(step: AddCheck, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    actions: list[Action] = [
        _add(
            table,
            step.name,
            sql.SQL("CHECK ({}){}").format(
                user_sql(step.check), sql.SQL(" NO INHERIT" if step.no_inherit else "")
            ),
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
    body = body + reference_options(
        step.match_type, step.on_delete, step.on_update, step.deferrable, step.initially_deferred
    )
    actions: list[Action] = [
        _add(
            table,
            step.name,
            body,
            LockMode.SHARE_ROW_EXCLUSIVE,
            "no scan (NOT VALID); new writes are checked",
            target,
        )
    ]
    if step.validate:
        actions.append(validate(table, step.name))
    return actions


def index_backed(
    table: Table, name: str, columns: list[str], kind: str, what: str, note: str
) -> list[Action]:
    """A unique index built concurrently, then attached as constraint `name` of `kind`
    (`UNIQUE` or `PRIMARY KEY`) with `ADD CONSTRAINT … USING INDEX`: catalog only."""
    index = table.sibling(name)
    attach = Statement(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}").format(
            table.ident(), sql.Identifier(name), sql.SQL(kind), sql.Identifier(name)
        ),
        AE,
        table,
        note=note,
    )
    done = cat.constraint_exists(table, name)
    return [
        *build_index(
            table,
            index,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            unique=True,
            skip_if=sql.SQL("SELECT ({}) OR ({})").format(cat.index_valid(index), done),
        ),
        Txn((attach,), f"attach {what} {name}", skip_if=done),
    ]


def drop_index_backed(table: Table, name: str) -> list[Action]:
    """The inverse of `index_backed`: the constraint, then its index, which stands alone
    before the constraint is attached."""
    return [
        drop(table, name),
        drop_index_concurrently(table.sibling(name), table, "reads and writes continue"),
    ]


@forward(AddUnique)
def add_unique(step: AddUnique, ctx: Context) -> list[Action]:
    return index_backed(
        ctx.table(step.table),
        step.name,
        step.columns,
        "UNIQUE",
        "unique constraint",
        "catalog only: the index is already built",
    )


def _undo_add(step: AddCheck | AddForeignKey | AddUnique, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    if isinstance(step, AddUnique):
        return drop_index_backed(table, step.name)
    return [drop(table, step.name)]


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
        do_block(body),
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


@remembers(DropConstraint)
def remember_constraint(step: DropConstraint, ctx: Context) -> Query:
    return cat.constraint_record(ctx.table(step.table), step.name)


NOT_VALID = " NOT VALID"


def readd(
    table: Table,
    name: str,
    definition: str,
    validated: bool,
    *,
    references: Table | None = None,
) -> list[Txn]:
    """A recorded CHECK, FOREIGN KEY or NOT NULL constraint added again as add_check and
    add_foreign_key do: NOT VALID, then validated in its own transaction when it was before."""
    # SQL text that pg_get_constraintdef gave and the run recorded in zdm's state: trusted as
    # the plan is. It ends with NOT VALID when the constraint was not validated.
    body = definition.removesuffix(NOT_VALID)
    lock = AE if references is None else LockMode.SHARE_ROW_EXCLUSIVE
    note = "no scan (NOT VALID); new writes are checked"
    actions = [_add(table, name, user_sql(body), lock, note, references)]
    if validated:
        actions.append(validate(table, name))
    return actions


@inverse(DropConstraint)
def restore_constraint(step: DropConstraint, ctx: Context) -> list[Action]:
    """The constraint the step dropped, added again from the run's record of it."""
    what = f"drop_constraint {step.table}.{step.name}"
    record: dict[str, Any] | None = recorded(ctx, what, "how the constraint was defined").get(
        "constraint"
    )
    if record is None:
        return []  # there was no such constraint: the step dropped nothing
    table = ctx.table(step.table)
    kind = record["type"]
    if record["inherited"]:
        # PostgreSQL refuses to drop an inherited constraint: the step cannot have dropped it.
        return [
            Check(
                cat.constraint_exists(table, step.name),
                True,
                f"constraint {step.name} is still there: PostgreSQL does not drop an inherited"
                " constraint",
            )
        ]
    if record["children"]:
        raise Irreversible(
            f"{what}: {table} has partitions or inheritance children, whose copies of the"
            " constraint adding it again would not restore exactly"
        )
    actions: list[Action]
    if kind in ("c", "f", "n"):
        target = record["references"]
        actions = list(
            readd(
                table,
                step.name,
                record["definition"],
                record["validated"],
                references=Table(*target) if target is not None else None,
            )
        )
    elif kind in ("p", "u"):
        actions = _readd_with_index(table, step.name, record, what)
    elif kind == "x":
        raise Irreversible(
            f"{what}: an EXCLUDE constraint is only added with its index built under ACCESS"
            " EXCLUSIVE, which would stall the application"
        )
    else:
        raise Irreversible(f"{what}: a constraint of type {kind!r} is not one zdm adds again")
    if record["comment"] is not None:
        comment = Statement(
            sql.SQL("COMMENT ON CONSTRAINT {} ON {} IS {}").format(
                sql.Identifier(step.name), table.ident(), sql.Literal(record["comment"])
            ),
            LockMode.ACCESS_SHARE,
            table,
            note="catalog only",
        )
        actions.append(Txn((comment,), f"restore the comment of constraint {step.name}"))
    return actions


def _readd_with_index(table: Table, name: str, record: dict[str, Any], what: str) -> list[Action]:
    """PRIMARY KEY or UNIQUE as add_unique does it: the index built concurrently from its
    recorded definition, then attached (catalog only)."""
    index: dict[str, Any] = record["index"]
    if index["method"] != "btree":
        raise Irreversible(
            f"{what}: its index is {index['method']}, and PostgreSQL attaches only a btree index"
            " as a constraint"
        )
    clause = sql.SQL("PRIMARY KEY" if record["type"] == "p" else "UNIQUE")
    attach = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}").format(
        table.ident(), sql.Identifier(name), clause, sql.Identifier(index["name"])
    )
    if record["deferrable"]:
        attach += sql.SQL(" DEFERRABLE")
        if record["deferred"]:
            attach += sql.SQL(" INITIALLY DEFERRED")
    done = cat.constraint_exists(table, name)
    build = rebuild_index(
        index,
        what,
        skip_if=sql.SQL("SELECT ({}) OR ({})").format(
            cat.index_valid(table.sibling(index["name"])), done
        ),
    )
    actions: list[Action] = build[:2]
    if record["type"] == "p":
        # Columns that are not NOT NULL would make the attach scan under ACCESS EXCLUSIVE.
        actions.append(
            Check(
                cat.columns_not_null(table, record["columns"]),
                True,
                f"the columns of primary key {name} are NOT NULL",
            )
        )
    actions.append(
        Txn(
            (Statement(attach, AE, table, note="catalog only: the index is already built"),),
            f"attach {'primary key' if record['type'] == 'p' else 'unique constraint'} {name}",
            skip_if=done,
        )
    )
    # The index's own settings (CLUSTER ON, comment, replica identity) once it is attached.
    actions += build[2:]
    return actions
