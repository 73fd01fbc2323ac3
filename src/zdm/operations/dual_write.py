"""dual_write, drop_dual_write: a BEFORE INSERT OR UPDATE trigger keeping old and new shapes in step.

The trigger and its function are created together in one short transaction and dropped together,
so no write ever meets half of them.

A backfill batch that writes exactly what the trigger would (see `redundant_for`) need not call
it on every row: the trigger's WHEN clause passes over a transaction whose `zdm.skip_triggers`
setting names the trigger's mapping (a hash of its body, so a trigger of the same name with
another mapping is never passed over). Every other write fires it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from psycopg import sql

from zdm.ddl import Action, LockMode, Statement, Table, Txn, user_sql
from zdm.ddl import catalog as cat
from zdm.ddl.quote import dollar_quoted
from zdm.ddl.sqltext import identifiers
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


SKIP_SETTING = "zdm.skip_triggers"


def mapping_token(set_: Mapping[str, str], reverse: Mapping[str, str]) -> str:
    """The name of a trigger's mapping in `zdm.skip_triggers`: a hash of its function's body."""
    return _body_token(trigger_body(dict(set_), dict(reverse)))


def _body_token(body: str) -> str:
    return "zdm_dw_" + hashlib.sha256(body.encode()).hexdigest()[:16]


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
    body = trigger_body(dict(step.set), dict(step.reverse))
    create_function = Statement(
        sql.SQL("CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS {}").format(
            function.ident(), dollar_quoted(body)
        ),
        LockMode.NONE,
        None,
        note="a new function; locks nothing",
    )
    create_trigger = Statement(
        sql.SQL(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {} FOR EACH ROW"
            " WHEN (strpos(coalesce(current_setting({}, true), ''), {}) = 0)"
            " EXECUTE FUNCTION {}()"
        ).format(
            sql.Identifier(name),
            table.ident(),
            sql.Literal(SKIP_SETTING),
            sql.Literal(_body_token(body)),
            function.ident(),
        ),
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
