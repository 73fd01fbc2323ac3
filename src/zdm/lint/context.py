"""What the linter knows when it reaches a statement: transactions, new tables, lock_timeout,
and the column types that earlier migrations created.

A file's statements are walked in order; each rule sees the state left by the statements
before the one it checks. The `Schema` outlives a file: files linted together (a directory of
migrations, in version order) tell later files the types of their columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from pglast import ast, enums

from zdm.ddl.locks import LockMode
from zdm.lint.analysis import (
    constraints_of,
    func_name,
    is_not_null_check,
    locks,
    not_valid,
    string_value,
    table_key,
    table_name,
)
from zdm.lint.source import SqlSource, SqlStatement
from zdm.lint.types import TypeRef, type_ref

TS = enums.TransactionStmtKind
OPEN = (TS.TRANS_STMT_BEGIN, TS.TRANS_STMT_START)
CLOSE = (
    TS.TRANS_STMT_COMMIT,
    TS.TRANS_STMT_ROLLBACK,
    TS.TRANS_STMT_PREPARE,
    TS.TRANS_STMT_COMMIT_PREPARED,
    TS.TRANS_STMT_ROLLBACK_PREPARED,
)


class Wrap(Enum):
    """How the tool that runs the SQL groups its statements into transactions."""

    NONE = "each statement commits on its own"
    FILE = "the migration tool runs the file in one transaction"
    FORCED = "the file runs in one transaction (--assume-in-transaction)"
    ALWAYS = "the sql step runs in one transaction"


@dataclass(frozen=True)
class Txn:
    """A transaction that holds several statements."""

    id: int
    explicit: bool
    line: int
    size: int

    def describe(self) -> str:
        if self.explicit:
            return f"the transaction opened on line {self.line}"
        return "the transaction the whole file runs in"


@dataclass
class TableModel:
    """What earlier statements said about a table."""

    columns: dict[str, TypeRef | None] = field(default_factory=dict)
    checks: dict[str, tuple[str | None, bool]] = field(default_factory=dict)
    """Constraint name -> (column it proves NOT NULL, validated)."""
    not_null_proven: set[str] = field(default_factory=set)
    partitioned: bool = False
    """Made with PARTITION BY (or, with --dsn, partitioned in the live catalog)."""


@dataclass
class Schema:
    """Tables and column types created by the files linted so far (migration history)."""

    tables: dict[str, TableModel] = field(default_factory=dict)

    def table(self, key: str) -> TableModel:
        return self.tables.setdefault(key, TableModel())

    def column_type(self, table: str, column: str) -> TypeRef | None:
        model = self.tables.get(table_key(table))
        return model.columns.get(column) if model else None


def is_transaction_control(node: ast.Node) -> bool:
    return isinstance(node, ast.TransactionStmt)


def assign_transactions(source: SqlSource, wrap: Wrap) -> list[Txn | None]:
    """The transaction each statement runs in; None when it commits on its own."""
    statements = source.statements
    control = [s for s in statements if isinstance(s.node, ast.TransactionStmt)]
    # Session settings (SET lock_timeout, ...) around one statement do not make a file a
    # transaction of several statements: `SET ...; CREATE INDEX CONCURRENTLY ...` is fine.
    settings = [s for s in statements if isinstance(s.node, ast.VariableSetStmt)]
    if wrap is Wrap.FILE and (control or len(statements) - len(control) - len(settings) <= 1):
        wrap = Wrap.NONE
    if wrap is Wrap.FORCED:
        wrap = Wrap.NONE if control else Wrap.FILE
        forced = True
    else:
        forced = False
    members: dict[int, list[int]] = {}
    starts: dict[int, tuple[bool, int]] = {}
    assigned: list[int | None] = []
    current: int | None = 0 if wrap is not Wrap.NONE else None
    if current is not None:
        starts[0] = (False, source.position(statements[0].start)[0] if statements else 1)
    next_id = 1
    for stmt in statements:
        node = stmt.node
        if isinstance(node, ast.TransactionStmt) and node.kind in OPEN:
            current = next_id
            next_id += 1
            starts[current] = (True, source.position(stmt.start)[0])
            assigned.append(None)
            continue
        if isinstance(node, ast.TransactionStmt) and node.kind in CLOSE:
            current = 0 if wrap is Wrap.ALWAYS else None
            assigned.append(None)
            continue
        assigned.append(current)
        if current is not None:
            members.setdefault(current, []).append(stmt.index)
    txns = {
        key: Txn(key, starts[key][0], starts[key][1], len(members.get(key, []))) for key in starts
    }
    result: list[Txn | None] = []
    for key in assigned:
        txn = txns.get(key) if key is not None else None
        if txn is not None and not txn.explicit and wrap is Wrap.FILE and txn.size <= 1:
            txn = None if not forced else txn
        result.append(txn)
    return result


def _timeout_value(node: ast.Node) -> tuple[bool, bool] | None:
    """(sets a non-zero lock_timeout, only for this transaction) for statements that set it."""
    if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() == "lock_timeout":
        if node.kind is not enums.VariableSetKind.VAR_SET_VALUE:
            return (False, bool(node.is_local))
        values = [a for a in node.args or ()]
        return (not _is_zero(values[0] if values else None), bool(node.is_local))
    if isinstance(node, ast.VariableSetStmt) and node.kind is enums.VariableSetKind.VAR_RESET_ALL:
        return (False, False)
    if isinstance(node, ast.SelectStmt):
        for target in node.targetList or ():
            call = target.val if isinstance(target, ast.ResTarget) else None
            if isinstance(call, ast.FuncCall) and func_name(call) == "set_config":
                args = list(call.args or ())
                if len(args) == 3 and (string_value(args[0]) or "").lower() == "lock_timeout":
                    flag = args[2].val if isinstance(args[2], ast.A_Const) else None
                    is_local = isinstance(flag, ast.Boolean) and bool(flag.boolval)
                    return (not _is_zero(args[1]), is_local)
    return None


def _is_zero(value: object) -> bool:
    if isinstance(value, ast.A_Const):
        if isinstance(value.val, ast.Integer):
            return not value.val.ival
        text = string_value(value)
        if text is not None:
            return text.strip().rstrip("ms").strip() in ("0", "") or text.strip() == "0s"
    return False


@dataclass
class FileState:
    """Everything earlier statements of one file (or one plan) established."""

    schema: Schema
    new_tables: set[str] = field(default_factory=set)
    new_indexes: dict[str, str] = field(default_factory=dict)
    """Index name -> table, for indexes on new tables."""
    session_timeout: bool = False
    local_timeout: bool = False
    held: dict[str, tuple[str, int]] = field(default_factory=dict)
    """ACCESS EXCLUSIVE locks held in the current transaction: table key -> (name, line)."""
    not_valid: dict[tuple[str, str], int] = field(default_factory=dict)
    """Constraints added NOT VALID in the current transaction -> line."""
    txn: Txn | None = None
    utc: bool = False
    """``SET timezone = 'UTC'`` ran: timestamp <-> timestamptz changes need no rewrite."""
    pg_version: int | None = None
    """The server's major version (``--pg-version``); None: a current one."""

    def enter(self, txn: Txn | None) -> None:
        """Move to the transaction of the next statement; a new one starts with no locks."""
        if txn is None or self.txn is None or txn.id != self.txn.id:
            self.held.clear()
            self.not_valid.clear()
            self.local_timeout = False
        self.txn = txn

    def apply(self, stmt: SqlStatement, line: int) -> None:
        """Record what a statement did, after the rules have looked at it."""
        node = stmt.node
        timeout = _timeout_value(node)
        if timeout is not None:
            value, local = timeout
            if local:
                self.local_timeout = value and self.txn is not None
            else:
                self.session_timeout = value
                self.local_timeout = self.local_timeout and value
        if isinstance(node, ast.VariableSetStmt) and (node.name or "").lower() == "timezone":
            values = [string_value(a) for a in node.args or ()]
            self.utc = bool(values) and (values[0] or "").lower() in ("utc", "etc/utc", "z")
        if self.txn is not None:
            for lock in locks(node):
                if lock.mode is LockMode.ACCESS_EXCLUSIVE and lock.key not in self.new_tables:
                    self.held.setdefault(lock.key, (lock.table, line))
        if isinstance(node, ast.CreateStmt) and node.relation is not None:
            self._create_table(node)
        elif isinstance(node, ast.CreateTableAsStmt) and node.into is not None:
            if node.into.rel is not None:
                self.new_tables.add(table_key(node.into.rel))
        elif isinstance(node, ast.AlterTableStmt) and node.relation is not None:
            self._alter_table(table_key(node.relation), node, line)
        elif isinstance(node, ast.RenameStmt) and node.relation is not None:
            self._rename(node)
        elif isinstance(node, ast.DropStmt) and node.removeType is enums.ObjectType.OBJECT_TABLE:
            for obj in node.objects or ():
                name = ".".join(n.sval for n in obj if isinstance(n, ast.String) and n.sval)
                self.schema.tables.pop(table_key(name), None)
                self.new_tables.discard(table_key(name))
        elif (
            isinstance(node, ast.IndexStmt)
            and node.relation is not None
            and node.idxname
            and table_key(node.relation) in self.new_tables
        ):
            self.new_indexes[node.idxname] = table_key(node.relation)

    def _create_table(self, node: ast.CreateStmt) -> None:
        assert node.relation is not None
        key = table_key(node.relation)
        if not node.if_not_exists:
            self.new_tables.add(key)
        model = TableModel(partitioned=node.partspec is not None)
        self.schema.tables[key] = model
        for item in node.tableElts or ():
            if isinstance(item, ast.ColumnDef) and item.colname and item.typeName is not None:
                model.columns[item.colname] = type_ref(item.typeName)

    def _alter_table(self, key: str, node: ast.AlterTableStmt, line: int) -> None:
        model = self.schema.table(key)
        for cmd in node.cmds or ():
            if not isinstance(cmd, ast.AlterTableCmd) or cmd.subtype is None:
                continue
            kind = cmd.subtype.name
            definition = cmd.def_
            if kind == "AT_AddColumn" and isinstance(definition, ast.ColumnDef):
                if definition.colname and definition.typeName is not None:
                    model.columns[definition.colname] = type_ref(definition.typeName)
            elif kind == "AT_AlterColumnType" and isinstance(definition, ast.ColumnDef):
                if cmd.name and definition.typeName is not None:
                    model.columns[cmd.name] = type_ref(definition.typeName)
            elif kind == "AT_DropColumn" and cmd.name:
                model.columns.pop(cmd.name, None)
            elif kind == "AT_ValidateConstraint" and cmd.name in model.checks:
                column, _ = model.checks[cmd.name]
                model.checks[cmd.name] = (column, True)
                if column:
                    model.not_null_proven.add(column)
            elif kind == "AT_DropConstraint" and cmd.name:
                model.checks.pop(cmd.name, None)
            for con in constraints_of(cmd):
                if con.contype is enums.ConstrType.CONSTR_CHECK and con.conname:
                    column = is_not_null_check(con.raw_expr)
                    model.checks[con.conname] = (column, not not_valid(con))
                    if column and not not_valid(con):
                        model.not_null_proven.add(column)
                if con.conname and not_valid(con):
                    self.not_valid[(key, con.conname)] = line

    def _rename(self, node: ast.RenameStmt) -> None:
        assert node.relation is not None
        key = table_key(node.relation)
        if node.renameType is enums.ObjectType.OBJECT_COLUMN and node.subname and node.newname:
            model = self.schema.table(key)
            model.columns[node.newname] = model.columns.pop(node.subname, None)
        elif node.renameType is enums.ObjectType.OBJECT_TABLE and node.newname:
            schema = node.relation.schemaname
            new_key = table_key(f"{schema}.{node.newname}" if schema else node.newname)
            if key in self.schema.tables:
                self.schema.tables[new_key] = self.schema.tables.pop(key)
            if key in self.new_tables:
                self.new_tables.discard(key)
                self.new_tables.add(new_key)


@dataclass
class Ctx:
    """What a rule may know about the statement it checks."""

    state: FileState
    source: SqlSource
    txn: Txn | None
    line: int
    phase: str | None = None
    """The plan phase of a ``sql`` step; None for a .sql file."""

    def is_new(self, table: ast.RangeVar | str) -> bool:
        """Created earlier in the same file (or plan): empty, and used by no one yet."""
        return table_key(table) in self.state.new_tables

    @property
    def lock_timeout(self) -> bool:
        return self.state.session_timeout or self.state.local_timeout

    def column_type(self, table: ast.RangeVar, column: str) -> TypeRef | None:
        return self.state.schema.column_type(table_name(table), column)

    @property
    def in_transaction(self) -> bool:
        return self.txn is not None

    def pg_before(self, major: int) -> bool:
        """The server is known (``--pg-version``) to be older than ``major``."""
        return self.state.pg_version is not None and self.state.pg_version < major
