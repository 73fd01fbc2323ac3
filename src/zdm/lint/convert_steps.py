"""The recipes of `zdm convert`: which zdm steps make each statement's change safely.

Constraint, index and sequence names follow PostgreSQL's own defaults, so that a converted
plan ends with the same schema as the statement run directly.
"""

from __future__ import annotations

from typing import Any

from pglast import ast, enums
from pglast.stream import RawStream

from zdm.lint.analysis import (
    alter_commands,
    column_refs,
    deparse,
    func_name,
    locks,
    not_valid,
    option_names,
    table_key,
    table_name,
)
from zdm.lint.columns import new_column, volatility
from zdm.lint.convert import (
    RANK_ENFORCE,
    RANK_REMOVE,
    Converted,
    Step,
    identifier,
    truncate,
)
from zdm.lint.source import SqlSource, SqlStatement, parse_source
from zdm.lint.types import SERIAL_TYPES, type_ref
from zdm.plan import MAX_IDENTIFIER_BYTES

CT = enums.ConstrType
OT = enums.ObjectType
_ON_DELETE = {
    "a": "no action",
    "r": "restrict",
    "c": "cascade",
    "n": "set null",
    "d": "set default",
}
_SERIAL_BASE = {"serial": "integer", "bigserial": "bigint", "smallserial": "smallint"}


def object_name(name1: str, name2: str | None, label: str) -> str:
    """PostgreSQL's makeObjectName: ``name1_name2_label``, shortening the longer name part."""
    overhead = len(label.encode()) + 1 + (1 if name2 else 0)
    avail = MAX_IDENTIFIER_BYTES - overhead
    one, two = name1.encode(), (name2 or "").encode()
    n1, n2 = len(one), len(two)
    while n1 + n2 > avail:
        if n1 > n2:
            n1 -= 1
        else:
            n2 -= 1
    parts = [one[:n1].decode(errors="ignore")]
    if name2:
        parts.append(two[:n2].decode(errors="ignore"))
    return "_".join([*parts, label])


def _bare(rel: ast.RangeVar) -> str:
    return rel.relname or ""


def _strings(items: object) -> list[str]:
    if not isinstance(items, tuple):
        return []
    return [s.sval for s in items if isinstance(s, ast.String) and s.sval]


def _set(flag: str | None) -> bool:
    """A one-character flag of the parse tree is set (unset ones are empty or NUL)."""
    return flag not in (None, "", "\x00")


def _alter_one(rel: ast.RangeVar, cmd: ast.AlterTableCmd) -> str:
    return str(RawStream()(ast.AlterTableStmt(relation=rel, cmds=(cmd,), objtype=OT.OBJECT_TABLE)))


class Converter:
    """Walks the statements of a file and collects the steps of the plan."""

    def __init__(self, source: SqlSource) -> None:
        self.source = source
        self.result = Converted()
        self.new_tables: set[str] = set()
        self._origin: list[str] = []
        self._line = 0
        self.pending_types: list[tuple[ast.RangeVar, str, ast.ColumnDef, list[str], int]] = []

    def run(self) -> Converted:
        for stmt in self.source.statements:
            line = self._line = self.source.position(stmt.start)[0]
            first = " ".join(stmt.text.split())
            self._origin = [f"line {line}: {first if len(first) <= 90 else first[:87] + '...'}"]
            self.statement(stmt)
        self._settle_type_changes()
        return self.result

    def _settle_type_changes(self) -> None:
        """An alter_column replaces its column by a copy at cleanup: when another statement of
        the file acts on that column, the steps are written out by hand instead, in order."""
        changes = [step for step in self.result.steps if step.phase == "changes"]
        for step, (rel, column, definition, origin, line) in zip(
            changes, self.pending_types, strict=True
        ):
            table = step.fields["table"]
            others = [
                s
                for s in self.result.steps
                if s.phase != "changes"
                and s.fields.get("table") == table
                and column in {s.fields.get("column"), *(s.fields.get("columns") or [])}
            ]
            if not others:
                continue
            self.result.steps.remove(step)
            self._origin, self._line = origin, line
            self.change_type_by_hand(rel, column, definition)

    # -- emitting ----------------------------------------------------------------------------

    def add(
        self,
        phase: str,
        kind: str,
        fields: dict[str, Any],
        *,
        comments: list[str] | None = None,
        rank: int = RANK_ENFORCE,
        movable: str | None = None,
        literal: str | None = None,
    ) -> None:
        notes = [*(self._origin or [f"line {self._line} (continued)"]), *(comments or [])]
        self._origin = []
        self.result.steps.append(Step(phase, kind, fields, notes, rank, movable, literal))

    def raw(
        self, phase: str, text: str, why: str, *, rank: int = RANK_ENFORCE, **extra: Any
    ) -> None:
        """Keep SQL as an sql step, saying why, naming the tables it locks that the application
        waits on (zdm waits for long transactions holding those before it takes the lock)."""
        tables = sorted(
            {
                lock.table
                for stmt in parse_source(text).statements
                for lock in locks(stmt.node)
                if lock.mode.blocks_app and " " not in lock.table
            }
        )
        self.add(
            phase,
            "sql",
            {"up": text.strip() + ";", **extra, **({"tables": tables} if tables else {})},
            comments=[why],
            rank=rank,
            literal="up",
        )

    def decide(self, text: str) -> str:
        self.result.decisions += 1
        return f"DECIDE: {text}"

    # -- statements --------------------------------------------------------------------------

    def statement(self, stmt: SqlStatement) -> None:
        node = stmt.node
        if isinstance(node, ast.TransactionStmt):
            self._origin = []
            return
        if isinstance(node, ast.VariableSetStmt):
            self._origin = []
            name = node.name or "all settings"
            self.result.notes.append(
                f"dropped `{' '.join(stmt.text.split())}`: zdm sets lock_timeout and "
                "statement_timeout itself for every step"
                if name in ("lock_timeout", "statement_timeout")
                else f"dropped `{' '.join(stmt.text.split())}`: a plan's steps run in their "
                "own sessions; put what the setting changes into the steps that need it"
            )
            return
        if isinstance(node, ast.CreateStmt) and node.relation is not None:
            self.create_table(stmt, node)
        elif isinstance(node, ast.AlterTableStmt) and node.relation is not None:
            if table_key(node.relation) in self.new_tables:
                self.raw("additive", stmt.text, "on a table this file creates: safe as written")
            else:
                for rel, cmd, kind in alter_commands(node):
                    self.alter(rel, cmd, kind)
        elif isinstance(node, ast.IndexStmt) and node.relation is not None:
            self.create_index(stmt, node)
        elif isinstance(node, ast.DropStmt):
            self.drop(stmt, node)
        elif isinstance(node, ast.RenameStmt) and node.relation is not None:
            self.rename(stmt, node)
        elif isinstance(node, ast.ReindexStmt):
            self.reindex(node)
        elif isinstance(node, ast.UpdateStmt) and node.relation is not None:
            self.update(stmt, node)
        elif isinstance(node, ast.DeleteStmt) and node.relation is not None:
            self.raw(
                "backfill",
                stmt.text,
                self.decide(
                    "kept as raw SQL: a DELETE of many rows should run in batches by key "
                    "range, one short transaction each; zdm has no step for it"
                ),
            )
        else:
            self.raw(
                "additive", stmt.text, "kept as raw SQL: zdm has no step kind for this statement"
            )

    def create_table(self, stmt: SqlStatement, node: ast.CreateStmt) -> None:
        assert node.relation is not None
        self.new_tables.add(table_key(node.relation))
        fields = self._table_fields(node)
        if fields is None:
            self.raw(
                "additive", stmt.text, "a new table locks nothing anyone uses: kept as written"
            )
        else:
            self.add("additive", "create_table", fields)

    def _table_fields(self, node: ast.CreateStmt) -> dict[str, Any] | None:
        """create_table's fields, or None when the table uses what the step cannot express."""
        assert node.relation is not None
        if (
            node.if_not_exists
            or node.inhRelations
            or node.partbound is not None
            or node.partspec is not None
            or node.options
            or node.tablespacename
            or (node.relation.relpersistence or "p") != "p"
            or node.ofTypename is not None
        ):
            return None
        columns: list[dict[str, Any]] = []
        primary_key: list[str] | None = None
        for item in node.tableElts or ():
            if isinstance(item, ast.Constraint):
                if item.contype is CT.CONSTR_PRIMARY and not item.conname and primary_key is None:
                    primary_key = _strings(item.keys)
                    if not primary_key or item.including or item.options:
                        return None
                    continue
                return None
            if not isinstance(item, ast.ColumnDef) or item.typeName is None or not item.colname:
                return None
            column = self._column_fields(item)
            if column is None:
                return None
            columns.append(column)
        if not columns:
            return None
        fields: dict[str, Any] = {"table": table_name(node.relation), "columns": columns}
        if primary_key:
            fields["primary_key"] = primary_key
        return fields

    def _column_fields(self, item: ast.ColumnDef) -> dict[str, Any] | None:
        assert item.typeName is not None
        if (
            item.collClause is not None
            or item.compression
            or _set(item.identity)
            or _set(item.generated)
        ):
            return None
        column: dict[str, Any] = {"name": item.colname, "type": deparse(item.typeName)}
        for con in item.constraints or ():
            if not isinstance(con, ast.Constraint):
                return None
            if con.conname or con.deferrable or con.initdeferred:
                return None
            if con.contype is CT.CONSTR_NOTNULL:
                column["nullable"] = False
            elif con.contype is CT.CONSTR_NULL:
                pass
            elif con.contype is CT.CONSTR_DEFAULT and con.raw_expr is not None:
                column["default"] = deparse(con.raw_expr)
            elif con.contype is CT.CONSTR_PRIMARY:
                column["primary_key"] = True
            elif con.contype is CT.CONSTR_UNIQUE and not getattr(con, "nulls_not_distinct", False):
                column["unique"] = True
            elif con.contype is CT.CONSTR_CHECK and con.raw_expr is not None:
                column["check"] = deparse(con.raw_expr)
            elif con.contype is CT.CONSTR_FOREIGN and con.pktable is not None:
                target = _strings(con.pk_attrs)
                if (
                    len(target) != 1
                    or (con.fk_upd_action or "a") != "a"
                    or (con.fk_matchtype or "s") != "s"
                ):
                    return None
                ref: dict[str, Any] = {"table": table_name(con.pktable), "column": target[0]}
                if (con.fk_del_action or "a") != "a":
                    ref["on_delete"] = _ON_DELETE[con.fk_del_action or "a"]
                column["references"] = ref
            else:
                return None
        return column

    # -- ALTER TABLE -------------------------------------------------------------------------

    def alter(self, rel: ast.RangeVar, cmd: ast.AlterTableCmd, kind: str) -> None:
        table = table_name(rel)
        if kind == "AT_AddColumn" and isinstance(cmd.def_, ast.ColumnDef):
            self.add_column(rel, cmd, cmd.def_)
        elif kind == "AT_AlterColumnType" and isinstance(cmd.def_, ast.ColumnDef) and cmd.name:
            self.change_type(rel, cmd.name, cmd.def_)
        elif kind == "AT_AddConstraint" and isinstance(cmd.def_, ast.Constraint):
            self.add_constraint(rel, cmd, cmd.def_)
        elif kind == "AT_SetNotNull" and cmd.name:
            self.add("cleanup", "set_not_null", {"table": table, "column": cmd.name})
        elif kind == "AT_DropNotNull" and cmd.name:
            self.add(
                "cleanup", "drop_not_null", {"table": table, "column": cmd.name}, rank=RANK_REMOVE
            )
        elif kind == "AT_ColumnDefault" and cmd.name:
            if cmd.def_ is None:
                self.add(
                    "cleanup",
                    "drop_default",
                    {"table": table, "column": cmd.name},
                    rank=RANK_REMOVE,
                )
            else:
                assert isinstance(cmd.def_, ast.Node)
                fields = {"table": table, "column": cmd.name, "default": deparse(cmd.def_)}
                self.add("additive", "set_default", fields)
        elif kind == "AT_DropColumn" and cmd.name:
            self.add(
                "cleanup", "drop_column", {"table": table, "column": cmd.name}, rank=RANK_REMOVE
            )
        elif kind == "AT_DropConstraint" and cmd.name:
            self.add(
                "cleanup", "drop_constraint", {"table": table, "name": cmd.name}, rank=RANK_REMOVE
            )
        elif kind == "AT_ValidateConstraint" and cmd.name:
            self.add("cleanup", "validate_constraint", {"table": table, "name": cmd.name})
        else:
            self.raw(
                "additive",
                _alter_one(rel, cmd),
                "kept as raw SQL: zdm has no step kind for this ALTER TABLE action",
            )

    def add_column(
        self, rel: ast.RangeVar, cmd: ast.AlterTableCmd, definition: ast.ColumnDef
    ) -> None:
        table = table_name(rel)
        column = new_column(definition)
        name = column.name
        assert definition.typeName is not None
        kind = type_ref(definition.typeName).name
        if column.identity or column.generated_stored or definition.collClause is not None:
            self.raw(
                "additive",
                _alter_one(rel, cmd),
                self.decide(
                    "kept as raw SQL: adding an identity or stored generated column rewrites "
                    "the table under ACCESS EXCLUSIVE; add a plain column, fill it with "
                    "dual_write and backfill, and attach the identity/expression later"
                ),
            )
            return
        if kind in SERIAL_TYPES:
            self.add_serial(table, rel, name, kind)
            return
        volatile = column.default is not None and any(volatility(column.default))
        fields: dict[str, Any] = {"name": name, "type": column.type_name}
        if column.default is not None and not volatile:
            fields["default"] = deparse(column.default)
            if column.not_null:
                fields["nullable"] = False
            self.add("additive", "add_column", {"table": table, "column": fields})
        elif column.default is not None:
            default = deparse(column.default)
            self.add(
                "additive",
                "add_column",
                {"table": table, "column": fields},
                comments=[
                    f"the volatile default {default} would rewrite the table: add the column "
                    "bare, set the default for new rows, backfill the old ones"
                ],
            )
            self.add(
                "additive", "set_default", {"table": table, "column": name, "default": default}
            )
            self.add(
                "backfill",
                "backfill",
                {"table": table, "set": {name: default}, "where": f"{identifier(name)} IS NULL"},
            )
            if column.not_null:
                self.add("cleanup", "set_not_null", {"table": table, "column": name})
        else:
            comments = []
            if column.not_null:
                comments = [
                    self.decide(
                        f"{name} is NOT NULL without a default, which fails on a table with "
                        "rows. Say how rows get a value, then enable the steps below:"
                    ),
                    f"  dual_write: - dual_write: {{table: {table}, set: {{{name}: <expression>}}}}",
                    f"  backfill:   - backfill: {{table: {table}}}",
                    f"  cleanup:    - set_not_null: {{table: {table}, column: {name}}}",
                ]
            self.add(
                "additive", "add_column", {"table": table, "column": fields}, comments=comments
            )
        self.inline_constraints(rel, name, definition)

    def add_serial(self, table: str, rel: ast.RangeVar, name: str, kind: str) -> None:
        sequence = object_name(_bare(rel), name, "seq")
        qualified = f"{rel.schemaname}.{sequence}" if rel.schemaname else sequence
        default = (
            f"nextval('{identifier(qualified) if '.' not in qualified else qualified}'::regclass)"
        )
        base = _SERIAL_BASE[kind]
        self.raw(
            "additive",
            f"CREATE SEQUENCE IF NOT EXISTS {identifier(sequence) if not rel.schemaname else qualified} AS {base}",
            f"{kind} fills every row at once (a rewrite under ACCESS EXCLUSIVE); instead: a "
            "sequence, a default for new rows and a batched backfill for old ones",
        )
        self.add("additive", "add_column", {"table": table, "column": {"name": name, "type": base}})
        self.add("additive", "set_default", {"table": table, "column": name, "default": default})
        self.add(
            "backfill",
            "backfill",
            {"table": table, "set": {name: default}, "where": f"{identifier(name)} IS NULL"},
        )
        self.add("cleanup", "set_not_null", {"table": table, "column": name})
        self.raw(
            "cleanup",
            f"ALTER SEQUENCE {qualified} OWNED BY {table}.{identifier(name)}",
            f"as {kind} does: the sequence belongs to the column",
        )

    def inline_constraints(self, rel: ast.RangeVar, column: str, definition: ast.ColumnDef) -> None:
        for con in definition.constraints or ():
            if not isinstance(con, ast.Constraint):
                continue
            if con.contype is CT.CONSTR_CHECK:
                self.add_check(rel, con, column)
            elif con.contype is CT.CONSTR_FOREIGN:
                self.add_foreign_key(rel, con, [column])
            elif con.contype is CT.CONSTR_UNIQUE:
                self.add_unique(rel, con, [column])
            elif con.contype is CT.CONSTR_PRIMARY:
                self.add_primary_key(rel, con, [column])

    def add_constraint(
        self, rel: ast.RangeVar, cmd: ast.AlterTableCmd, con: ast.Constraint
    ) -> None:
        if con.contype is CT.CONSTR_CHECK:
            self.add_check(rel, con, None)
        elif con.contype is CT.CONSTR_FOREIGN:
            self.add_foreign_key(rel, con, _strings(con.fk_attrs))
        elif con.contype is CT.CONSTR_UNIQUE and not con.indexname:
            self.add_unique(rel, con, _strings(con.keys))
        elif con.contype is CT.CONSTR_PRIMARY and not con.indexname:
            self.add_primary_key(rel, con, _strings(con.keys))
        elif con.contype is CT.CONSTR_NOTNULL and not not_valid(con):
            for column in _strings(con.keys):
                self.add("cleanup", "set_not_null", {"table": table_name(rel), "column": column})
        elif con.contype is CT.CONSTR_EXCLUSION:
            self.raw(
                "additive",
                _alter_one(rel, cmd),
                self.decide(
                    "kept as raw SQL: an exclusion constraint builds its index under ACCESS "
                    "EXCLUSIVE and has no online form; migrate through a new table instead"
                ),
            )
        else:
            self.raw("additive", _alter_one(rel, cmd), "safe as written: catalog only")

    def add_check(self, rel: ast.RangeVar, con: ast.Constraint, column: str | None) -> None:
        assert con.raw_expr is not None
        refs = column_refs(con.raw_expr)
        name = con.conname or object_name(_bare(rel), refs[0] if len(refs) == 1 else None, "check")
        fields: dict[str, Any] = {
            "table": table_name(rel),
            "name": name,
            "check": deparse(con.raw_expr),
        }
        if not_valid(con):
            fields["validate"] = False
        self.add("additive", "add_check", fields, movable=table_name(rel))

    def add_foreign_key(self, rel: ast.RangeVar, con: ast.Constraint, columns: list[str]) -> None:
        target = _strings(con.pk_attrs)
        if (
            con.pktable is None
            or not columns
            or (con.fk_upd_action or "a") != "a"
            or (con.fk_matchtype or "s") != "s"
            or con.deferrable
        ):
            text = f"ALTER TABLE {table_name(rel)} ADD {deparse(con)} NOT VALID"
            self.raw(
                "additive",
                text,
                self.decide(
                    "ON UPDATE, MATCH FULL and DEFERRABLE are beyond add_foreign_key: added NOT "
                    "VALID here; add a validate_constraint step in cleanup"
                ),
            )
            return
        comments = []
        if not target:
            target = ["id"]
            comments.append(
                self.decide(f"REFERENCES {table_name(con.pktable)} names no column; assumed id")
            )
        name = con.conname or object_name(_bare(rel), "_".join(columns), "fkey")
        fields: dict[str, Any] = {
            "table": table_name(rel),
            "name": name,
            "columns": columns,
            "references": {"table": table_name(con.pktable), "columns": target},
        }
        if (con.fk_del_action or "a") != "a":
            fields["on_delete"] = _ON_DELETE[con.fk_del_action or "a"]
        if not_valid(con):
            fields["validate"] = False
        self.add("additive", "add_foreign_key", fields, comments=comments, movable=table_name(rel))

    def add_unique(self, rel: ast.RangeVar, con: ast.Constraint, columns: list[str]) -> None:
        name = con.conname or object_name(_bare(rel), "_".join(columns), "key")
        if con.including or con.deferrable or getattr(con, "nulls_not_distinct", False):
            self.raw(
                "additive",
                f"ALTER TABLE {table_name(rel)} ADD {deparse(con)}",
                self.decide("INCLUDE, NULLS NOT DISTINCT and DEFERRABLE are beyond add_unique"),
            )
            return
        fields = {"table": table_name(rel), "name": name, "columns": columns}
        self.add("additive", "add_unique", fields, movable=table_name(rel))

    def add_primary_key(self, rel: ast.RangeVar, con: ast.Constraint, columns: list[str]) -> None:
        table = table_name(rel)
        name = con.conname or object_name(_bare(rel), None, "pkey")
        self.add(
            "additive",
            "create_index",
            {"table": table, "name": name, "columns": columns, "unique": True},
            comments=["a primary key: its unique index is built concurrently first"],
            movable=table,
        )
        for column in columns:
            self.add("cleanup", "set_not_null", {"table": table, "column": column})
        self.raw(
            "cleanup",
            f"ALTER TABLE {table} ADD CONSTRAINT {identifier(name)} PRIMARY KEY USING INDEX {identifier(name)}",
            "catalog only: the index exists and the columns are NOT NULL",
        )

    def change_type(self, rel: ast.RangeVar, column: str, definition: ast.ColumnDef) -> None:
        assert definition.typeName is not None
        table = table_name(rel)
        type_text = deparse(definition.typeName)
        using = definition.raw_default
        old = identifier(column)
        fields: dict[str, Any] = {"table": table, "column": column, "type": type_text}
        fields["up"] = deparse(using) if using is not None else f"CAST({old} AS {type_text})"
        fields["down"] = old
        self.pending_types.append((rel, column, definition, list(self._origin), self._line))
        self.add(
            "changes",
            "alter_column",
            fields,
            comments=[
                f"changing the type of {column} rewrites the table under ACCESS EXCLUSIVE: "
                "alter_column does it in place when PostgreSQL needs no rewrite (varchar "
                "widening, to text), else through a copy kept in step both ways and swapped "
                "in at cleanup, with the old column's default, NOT NULL, indexes and "
                "constraints (`zdm expand` with --dsn shows the steps)",
                f"down: the value old readers see for rows written in the new type; `{old}` "
                "(the new value, cast back on assignment) fails for values the old type "
                "cannot hold",
            ],
        )

    def change_type_by_hand(
        self, rel: ast.RangeVar, column: str, definition: ast.ColumnDef
    ) -> None:
        assert definition.typeName is not None
        table = table_name(rel)
        type_text = deparse(definition.typeName)
        new = truncate(f"{column}_new")
        old_sql, new_sql = identifier(column), identifier(new)
        using = definition.raw_default
        expr = deparse(using) if using is not None else f"{old_sql}::{type_text}"
        trigger = object_name(f"zdm_dw_{_bare(rel)}", column, "type")
        self.add(
            "additive",
            "add_column",
            {"table": table, "column": {"name": new, "type": type_text}},
            comments=[
                f"changing the type of {column} rewrites the table under ACCESS EXCLUSIVE: "
                f"instead, {new} is added, kept in step and swapped in at cleanup",
                "(when the old type converts without a rewrite, e.g. varchar(n) to a longer "
                "varchar or text, the plain ALTER in an sql step is enough)",
            ],
        )
        self.add(
            "dual_write",
            "dual_write",
            {"table": table, "name": trigger, "set": {new: expr}, "reverse": {column: new_sql}},
        )
        self.add("backfill", "backfill", {"table": table})
        self.add(
            "dual_read",
            "verify",
            {
                "sql": f"SELECT count(*) FROM {table} WHERE {new_sql} IS DISTINCT FROM ({expr})",
                "expect": 0,
            },
        )
        schema = f"{rel.schemaname}." if rel.schemaname else ""
        swap = "\n".join(
            [
                f"DROP TRIGGER IF EXISTS {identifier(trigger)} ON {table};",
                f"DROP FUNCTION IF EXISTS {schema}{identifier(trigger)}();",
                f"ALTER TABLE {table} DROP COLUMN {old_sql};",
                f"ALTER TABLE {table} RENAME COLUMN {new_sql} TO {old_sql}",
            ]
        )
        self.raw(
            "cleanup",
            swap,
            self.decide(
                f"before this swap, give {new} what {column} has: set_not_null if it is NOT "
                "NULL, set_default, indexes (create_index) and constraints (they are dropped "
                "with the old column)"
            ),
            rank=RANK_REMOVE,
        )
        self.result.steps[-1].comments.append(
            "one transaction: the trigger, the old column and the rename go together, so no "
            "write sees the table half swapped"
        )

    # -- other statements --------------------------------------------------------------------

    def create_index(self, stmt: SqlStatement, node: ast.IndexStmt) -> None:
        assert node.relation is not None
        table = table_name(node.relation)
        elements = [e for e in node.indexParams or () if isinstance(e, ast.IndexElem)]
        plain = all(
            e.name and not e.opclass and not e.collation and not e.ordering and not e.nulls_ordering
            for e in elements
        )
        expression = (
            len(elements) == 1
            and elements[0].expr is not None
            and not elements[0].opclass
            and not elements[0].collation
            and not elements[0].ordering
            and not elements[0].nulls_ordering
        )
        simple = (
            (plain or expression)
            and (node.relation.inh is not False)
            and not node.options
            and not node.tableSpace
            and not getattr(node, "nulls_not_distinct", False)
            and (node.accessMethod or "btree") in ("btree", "hash", "gin", "gist", "brin", "spgist")
        )
        if not simple:
            node.concurrent = True
            self.raw(
                "additive",
                str(RawStream()(node)),
                "built concurrently; kept as raw SQL because create_index cannot express "
                "operator classes, sort orders or storage options",
                transactional=False,
                lock="SHARE UPDATE EXCLUSIVE",
            )
            return
        names = [
            e.name or (func_name(e.expr) if isinstance(e.expr, ast.FuncCall) else "expr")
            for e in elements
        ]
        name = node.idxname or object_name(_bare(node.relation), "_".join(names), "idx")
        fields: dict[str, Any] = {"table": table, "name": name}
        if plain:
            fields["columns"] = [e.name for e in elements]
        else:
            assert elements[0].expr is not None
            fields["expression"] = deparse(elements[0].expr)
        if node.unique:
            fields["unique"] = True
        if node.whereClause is not None:
            fields["where"] = deparse(node.whereClause)
        include = [
            e.name
            for e in node.indexIncludingParams or ()
            if isinstance(e, ast.IndexElem) and e.name
        ]
        if include:
            fields["include"] = include
        if (node.accessMethod or "btree") != "btree":
            fields["method"] = node.accessMethod
        new = table_key(node.relation) in self.new_tables
        self.add("additive", "create_index", fields, movable=None if new else table)

    def drop(self, stmt: SqlStatement, node: ast.DropStmt) -> None:
        names = [".".join(_strings(o)) for o in node.objects or ()]
        if node.removeType is OT.OBJECT_INDEX and not node.behavior:
            for name in names:
                self.add("cleanup", "drop_index", {"name": name}, rank=RANK_REMOVE)
        elif (
            node.removeType is OT.OBJECT_TABLE
            and node.behavior is not enums.DropBehavior.DROP_CASCADE
        ):
            for name in names:
                if table_key(name) in self.new_tables:
                    self.raw("additive", f"DROP TABLE {name}", "a table this file creates")
                else:
                    self.add("cleanup", "drop_table", {"table": name}, rank=RANK_REMOVE)
        else:
            self.raw(
                "cleanup", stmt.text, "kept as raw SQL: a drop belongs to cleanup", rank=RANK_REMOVE
            )

    def rename(self, stmt: SqlStatement, node: ast.RenameStmt) -> None:
        assert node.relation is not None
        table = table_name(node.relation)
        if table_key(node.relation) in self.new_tables:
            self.raw("additive", stmt.text, "on a table this file creates: safe as written")
        elif node.renameType is OT.OBJECT_COLUMN and node.subname and node.newname:
            fields = {"table": table, "column": node.subname, "to": node.newname}
            self.add(
                "cleanup",
                "rename_column",
                fields,
                comments=["the application must stop using the old name before this runs"],
                rank=RANK_REMOVE,
            )
        elif node.renameType is OT.OBJECT_TABLE and node.newname:
            self.add(
                "cleanup",
                "rename_table",
                {"table": table, "to": node.newname},
                comments=["the application must stop using the old name before this runs"],
                rank=RANK_REMOVE,
            )
        else:
            self.raw("cleanup", stmt.text, "catalog only: kept as written", rank=RANK_REMOVE)

    def reindex(self, node: ast.ReindexStmt) -> None:
        if "concurrently" not in option_names(node.params):
            node.params = (*(node.params or ()), ast.DefElem(defname="concurrently"))
        self.raw(
            "additive",
            str(RawStream()(node)),
            "rebuilt concurrently: reads and writes continue",
            transactional=False,
            lock="SHARE UPDATE EXCLUSIVE",
        )

    def update(self, stmt: SqlStatement, node: ast.UpdateStmt) -> None:
        assert node.relation is not None
        targets = [t for t in node.targetList or () if isinstance(t, ast.ResTarget)]
        simple = (
            not node.fromClause
            and not getattr(node, "returningClause", None)
            and not getattr(node, "returningList", None)
            and node.withClause is None
            and targets
            and all(t.name and not t.indirection and isinstance(t.val, ast.Node) for t in targets)
            and not any(isinstance(t.val, ast.MultiAssignRef) for t in targets)
            and table_key(node.relation) not in self.new_tables
        )
        if not simple:
            self.raw(
                "backfill",
                stmt.text,
                self.decide("kept as raw SQL: an UPDATE of many rows should run in batches"),
            )
            return
        fields: dict[str, Any] = {
            "table": table_name(node.relation),
            "set": {
                t.name: deparse(t.val) for t in targets if t.name and isinstance(t.val, ast.Node)
            },
        }
        if node.whereClause is not None:
            fields["where"] = deparse(node.whereClause)
        self.add(
            "backfill",
            "backfill",
            fields,
            comments=["batched by key range, one short transaction per batch"],
        )
