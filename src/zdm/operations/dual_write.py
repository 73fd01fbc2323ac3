"""dual_write, drop_dual_write: a BEFORE INSERT OR UPDATE trigger keeping old and new shapes in step.

The trigger and its function are created together in one short transaction and dropped together,
so no write ever meets half of them.
"""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.ddl.quote import dollar_quoted
from zdm.operations.base import Context, Irreversible, forward, inverse
from zdm.plan import DropDualWrite, DualWrite


def _q(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _eval(expr: str) -> str:
    """The plan's expression over the row being written.

    Expressions name columns bare (`contact->>'phone'`), as in the backfill's UPDATE; a subquery
    over `NEW.*` gives those names their values without rewriting the expression.
    """
    return f"(SELECT ({expr}) FROM (SELECT NEW.*) AS zdm_row)"


def trigger_body(set_: dict[str, str], reverse: dict[str, str]) -> str:
    """PL/pgSQL of the trigger function.

    INSERT: a mapped column the writer left NULL is computed. UPDATE: a mapped column the writer
    did not change is recomputed; when the writer changed a new column itself, to a value the old
    columns do not already map to, the old columns of `reverse` that it did not change are
    derived from it (a backfill writes exactly what they map to: deriving them back through a
    lossy reverse would rewrite old data). Writer changes are decided before any assignment, so
    the trigger's own assignments never count as the writer's.
    `use_column`: a column named like a PL/pgSQL variable (old, new, found) is the column.
    """
    lines = ["#variable_conflict use_column", "DECLARE", "  zdm_new_changed boolean := false;"]
    lines += [f"  zdm_changed_{i} boolean := false;" for i in range(len(set_) + len(reverse))]
    lines += ["BEGIN", "  IF TG_OP = 'INSERT' THEN"]
    for col, expr in reverse.items():
        lines.append(f"    IF NEW.{_q(col)} IS NULL THEN NEW.{_q(col)} := {_eval(expr)}; END IF;")
    for col, expr in set_.items():
        lines.append(f"    IF NEW.{_q(col)} IS NULL THEN NEW.{_q(col)} := {_eval(expr)}; END IF;")
    lines.append("    RETURN NEW;")
    lines.append("  END IF;")
    cols = [*set_, *reverse]
    for i, col in enumerate(cols):
        lines.append(f"  zdm_changed_{i} := NEW.{_q(col)} IS DISTINCT FROM OLD.{_q(col)};")
    if reverse:
        changed_new = " OR ".join(
            f"(zdm_changed_{i} AND NEW.{_q(col)} IS DISTINCT FROM {_eval(expr)})"
            for i, (col, expr) in enumerate(set_.items())
        )
        lines.append(f"  zdm_new_changed := {changed_new};")
        for j, (col, expr) in enumerate(reverse.items(), start=len(set_)):
            lines.append(
                f"  IF zdm_new_changed AND NOT zdm_changed_{j} THEN NEW.{_q(col)} := {_eval(expr)}; END IF;"
            )
    for i, (col, expr) in enumerate(set_.items()):
        lines.append(f"  IF NOT zdm_changed_{i} THEN NEW.{_q(col)} := {_eval(expr)}; END IF;")
    lines += ["  RETURN NEW;", "END;"]
    return "\n" + "\n".join(lines) + "\n"


def drop_trigger_statements(table: Table, name: str) -> list[Statement]:
    function = table.sibling(name)
    return [
        Statement(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), table.ident()),
            LockMode.ACCESS_EXCLUSIVE,
            table,
            note="catalog only",
        ),
        Statement(
            sql.SQL("DROP FUNCTION IF EXISTS {}()").format(function.ident()),
            LockMode.NONE,
            None,
            note="catalog only",
        ),
    ]


@forward(DualWrite)
def dual_write(step: DualWrite, ctx: Context) -> list[Action]:
    table = ctx.table(step.table)
    name = step.trigger_name
    function = table.sibling(name)
    create_function = Statement(
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            function.ident(), dollar_quoted(trigger_body(dict(step.set), dict(step.reverse)))
        ),
        LockMode.NONE,
        None,
        note="a new function; locks nothing",
    )
    create_trigger = Statement(
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(name), table.ident(), function.ident()),
        LockMode.SHARE_ROW_EXCLUSIVE,
        table,
        note="catalog only",
    )
    return [
        Txn(
            (create_function, create_trigger),
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
            return dual_write(dw, ctx)
    # Undoing nothing would leave the new columns silently unmaintained for old writers.
    raise Irreversible(
        f"drop_dual_write {step.trigger_name}: the plan has no dual_write step that defines it"
    )


def expression(expr: str) -> sql.Composed:
    """A mapped expression, parenthesised, as it appears in a backfill."""
    return sql.SQL("({})").format(user_sql(expr))
