"""Facts about parsed statements that several rules share: names, lock modes, expressions.

The lock levels are those of the PostgreSQL manual ("Explicit Locking" and each command's
reference page), modelled as data like zdm.ddl.locks does for zdm's own statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pglast import ast, enums
from pglast.stream import RawStream

from zdm.ddl.locks import LockMode

AE = LockMode.ACCESS_EXCLUSIVE
SRE = LockMode.SHARE_ROW_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


def table_name(rel: ast.RangeVar) -> str:
    """The table as written: ``schema.name`` or ``name``."""
    name = rel.relname or ""
    return f"{rel.schemaname}.{name}" if rel.schemaname else name


def table_key(rel: ast.RangeVar | str) -> str:
    """A key that equates ``t`` and ``public.t`` (the search path is unknown to a linter)."""
    name = table_name(rel) if isinstance(rel, ast.RangeVar) else rel
    return name.removeprefix("public.")


def deparse(node: ast.Node) -> str:
    """SQL text of an expression or type, as PostgreSQL's parser understood it."""
    return str(RawStream()(node))


def walk(node: object) -> Iterator[ast.Node]:
    """Every node in a tree, the root first."""
    if isinstance(node, ast.Node):
        yield node
        for attr in node:
            yield from walk(getattr(node, attr))
    elif isinstance(node, tuple):
        for item in node:
            yield from walk(item)


def func_name(call: ast.FuncCall) -> str:
    """The function's name without ``pg_catalog``."""
    names = [n.sval for n in call.funcname or () if isinstance(n, ast.String) and n.sval]
    return names[-1].lower() if names else ""


def string_value(node: object) -> str | None:
    """The value of a string constant, else None."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return node.val.sval
    return None


def column_refs(node: object) -> list[str]:
    """Names of the columns an expression reads, in order of appearance."""
    names: list[str] = []
    for item in walk(node):
        if isinstance(item, ast.ColumnRef):
            fields = [f.sval for f in item.fields or () if isinstance(f, ast.String) and f.sval]
            if fields and fields[-1] not in names:
                names.append(fields[-1])
    return names


def is_not_null_check(expr: object) -> str | None:
    """The column of a ``col IS NOT NULL`` check expression, else None."""
    if (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype is enums.NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        refs = column_refs(expr.arg)
        return refs[0] if refs else None
    return None


def option_names(options: object) -> set[str]:
    """Names of a statement's ``(option, ...)`` list (VACUUM, REINDEX, CLUSTER)."""
    if not isinstance(options, tuple):
        return set()
    return {o.defname.lower() for o in options if isinstance(o, ast.DefElem) and o.defname}


def constraints_of(cmd: ast.AlterTableCmd) -> list[ast.Constraint]:
    """Constraints an ALTER TABLE subcommand adds: ADD CONSTRAINT, or inline in ADD COLUMN."""
    if isinstance(cmd.def_, ast.Constraint):
        return [cmd.def_]
    if isinstance(cmd.def_, ast.ColumnDef):
        return [c for c in cmd.def_.constraints or () if isinstance(c, ast.Constraint)]
    return []


def alter_commands(node: ast.Node) -> Iterator[tuple[ast.RangeVar, ast.AlterTableCmd, str]]:
    """(table, subcommand, subcommand kind such as ``AT_AddColumn``) of an ALTER TABLE."""
    if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd) and cmd.subtype is not None:
                yield node.relation, cmd, cmd.subtype.name


def enforced(con: ast.Constraint) -> bool:
    """False for PostgreSQL 18's NOT ENFORCED constraints, which check nothing."""
    return getattr(con, "is_enforced", True) is not False or con.contype not in (
        CT.CONSTR_CHECK,
        CT.CONSTR_FOREIGN,
    )


def not_valid(con: ast.Constraint) -> bool:
    """Added NOT VALID: existing rows are not checked."""
    return bool(con.skip_validation)


@dataclass(frozen=True)
class Lock:
    """A table lock a statement takes."""

    table: str
    """As written, or a description (``every table``) when the statement names none."""
    mode: LockMode

    @property
    def key(self) -> str:
        return table_key(self.table)


_CMD_LOCKS: dict[str, LockMode] = {
    "AT_ValidateConstraint": SUE,
    "AT_SetStatistics": SUE,
    "AT_ClusterOn": SUE,
    "AT_DropCluster": SUE,
    "AT_SetRelOptions": SUE,
    "AT_ResetRelOptions": SUE,
    "AT_AttachPartition": SUE,
    "AT_DetachPartitionFinalize": SUE,
    "AT_EnableTrig": SRE,
    "AT_EnableAlwaysTrig": SRE,
    "AT_EnableReplicaTrig": SRE,
    "AT_DisableTrig": SRE,
    "AT_EnableTrigAll": SRE,
    "AT_DisableTrigAll": SRE,
    "AT_EnableTrigUser": SRE,
    "AT_DisableTrigUser": SRE,
}


def _cmd_locks(table: str, cmd: ast.AlterTableCmd) -> list[Lock]:
    subtype = cmd.subtype.name if cmd.subtype is not None else ""
    if subtype == "AT_DetachPartition":
        spec = cmd.def_
        concurrent = isinstance(spec, ast.PartitionCmd) and bool(spec.concurrent)
        return [Lock(table, SUE if concurrent else AE)]
    if subtype in _CMD_LOCKS:
        return [Lock(table, _CMD_LOCKS[subtype])]
    locks: list[Lock] = []
    constraints = constraints_of(cmd)
    foreign = [c for c in constraints if c.contype is CT.CONSTR_FOREIGN]
    for con in foreign:
        if con.pktable is not None:
            locks.append(Lock(table_name(con.pktable), SRE))
    if subtype == "AT_AddConstraint" and foreign:
        locks.append(Lock(table, SRE))
    else:
        locks.append(Lock(table, AE))
    return locks


def _range_vars(items: object) -> list[ast.RangeVar]:
    return (
        [r for r in items or () if isinstance(r, ast.RangeVar)] if isinstance(items, tuple) else []
    )


def _object_name(obj: object) -> str:
    if isinstance(obj, tuple):
        return ".".join(n.sval for n in obj if isinstance(n, ast.String) and n.sval)
    return ""


def locks(node: ast.Node) -> list[Lock]:
    """The table locks a statement takes (weaker row-level locks of plain DML included)."""
    if isinstance(node, ast.AlterTableStmt) and node.relation is not None:
        table = table_name(node.relation)
        result: list[Lock] = []
        for cmd in node.cmds or ():
            if isinstance(cmd, ast.AlterTableCmd):
                result.extend(_cmd_locks(table, cmd))
        return result
    if isinstance(node, ast.RenameStmt) and node.relation is not None:
        mode = SUE if node.renameType is OT.OBJECT_INDEX else AE
        return [Lock(table_name(node.relation), mode)]
    if isinstance(node, ast.IndexStmt) and node.relation is not None:
        return [Lock(table_name(node.relation), SUE if node.concurrent else LockMode.SHARE)]
    if isinstance(node, ast.DropStmt):
        if node.removeType in (
            OT.OBJECT_TABLE,
            OT.OBJECT_VIEW,
            OT.OBJECT_MATVIEW,
            OT.OBJECT_SEQUENCE,
        ):
            return [Lock(_object_name(o), AE) for o in node.objects or ()]
        if node.removeType is OT.OBJECT_INDEX:
            mode = SUE if node.concurrent else AE
            return [Lock(_object_name(o), mode) for o in node.objects or ()]
        return []
    if isinstance(node, ast.TruncateStmt):
        return [Lock(table_name(r), AE) for r in _range_vars(node.relations)]
    if isinstance(node, ast.LockStmt):
        mode = LockMode(node.mode or 8)
        return [Lock(table_name(r), mode) for r in _range_vars(node.relations)]
    if isinstance(node, ast.VacuumStmt):
        mode = AE if "full" in option_names(node.options) else SUE
        rels = [v.relation for v in node.rels or () if isinstance(v, ast.VacuumRelation)]
        tables = [table_name(r) for r in rels if r is not None] or ["every table"]
        return [Lock(t, mode) for t in tables]
    if isinstance(node, ast.ClusterStmt):
        return [Lock(table_name(node.relation) if node.relation else "every clustered table", AE)]
    if isinstance(node, ast.ReindexStmt):
        mode = SUE if "concurrently" in option_names(node.params) else LockMode.SHARE
        name = table_name(node.relation) if node.relation else (node.name or "every table")
        return [Lock(name, mode)]
    if isinstance(node, ast.CreateTrigStmt) and node.relation is not None:
        return [Lock(table_name(node.relation), SRE)]
    if isinstance(node, ast.CreateStmt):
        result = []
        for item in walk(node.tableElts):
            if (
                isinstance(item, ast.Constraint)
                and item.contype is CT.CONSTR_FOREIGN
                and item.pktable is not None
            ):
                result.append(Lock(table_name(item.pktable), SRE))
        for parent in _range_vars(node.inhRelations):
            if node.partbound is not None:
                result.append(Lock(table_name(parent), AE))
        return result
    if isinstance(node, ast.RefreshMatViewStmt) and node.relation is not None:
        return [Lock(table_name(node.relation), LockMode.EXCLUSIVE if node.concurrent else AE)]
    if isinstance(node, ast.ViewStmt) and node.replace and node.view is not None:
        return [Lock(table_name(node.view), AE)]
    if isinstance(node, ast.UpdateStmt | ast.DeleteStmt | ast.InsertStmt | ast.MergeStmt):
        relation = node.relation
        return [Lock(table_name(relation), LockMode.ROW_EXCLUSIVE)] if relation else []
    return []


def blocks(mode: LockMode) -> str:
    """What application traffic a lock mode stops, in words."""
    if mode is AE:
        return "blocks every read and write of the table"
    if mode.blocks_writes:
        return "blocks every INSERT, UPDATE and DELETE on the table (reads continue)"
    return "lets reads and writes continue"


def lock_phrase(mode: LockMode, table: str) -> str:
    """``an ACCESS EXCLUSIVE lock on t, which blocks every read and write of the table``."""
    article = "an" if mode.sql_name[0] in "AEIOU" else "a"
    return f"{article} {mode.sql_name} lock on {table}, which {blocks(mode)}"
