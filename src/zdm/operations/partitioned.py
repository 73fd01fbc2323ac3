"""The recipes of steps on a partitioned table, chosen when the engine found the table partitioned.

PostgreSQL builds no index concurrently on a partitioned table, and (before 18) takes no NOT VALID
foreign key on one, so these steps work partition by partition:

- an index: `CREATE INDEX … ON ONLY` each partitioned level (INVALID, catalog only), each leaf's
  own index `CONCURRENTLY` (with the INVALID-index recovery), each attached to its parent's
  (`ALTER INDEX … ATTACH PARTITION`, deepest first); the root's index is valid once every
  partition's is attached;
- a unique or primary key: each leaf's unique index built concurrently and attached to the leaf
  as its constraint (`USING INDEX`), then the root's constraint added, which PostgreSQL makes by
  adopting the leaves' (catalog only);
- a CHECK, a NOT NULL or (PostgreSQL 18) a foreign key: added NOT VALID on the root (its
  partitions get NOT VALID copies), validated leaf by leaf, then on each level up;
- a foreign key from a partitioned table before PostgreSQL 18: added NOT VALID and validated on
  each leaf, then added on the root, which adopts the leaves' without a scan;
- a backfill: one walk per leaf, each with its own checkpoints.

Every unit asks the catalog whether its effect is there, so the step is planned again, and run
again, when a partition appears while it runs: the new one gets what the others got.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from psycopg import sql

from zdm.ddl import Action, BackfillJob, LockMode, Statement, Table, Txn
from zdm.ddl import catalog as cat
from zdm.ddl.partitions import Partition, Partitioning, derived_name
from zdm.ddl.quote import do_block
from zdm.operations import columns, constraints, data, indexes, keys
from zdm.operations.base import Context
from zdm.plan import (
    AddCheck,
    AddForeignKey,
    AddPrimaryKey,
    AddUnique,
    Backfill,
    CreateIndex,
    DualWrite,
    SetNotNull,
    StepSpec,
)

AE = LockMode.ACCESS_EXCLUSIVE
SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
SHARE = LockMode.SHARE

PartitionedPlanner = Callable[[Any, Context, Partitioning], list[Action]]
Refusal = Callable[[Any, Context, Partitioning], str | None]
_S = TypeVar("_S", bound=StepSpec)

FORWARD: dict[type[StepSpec], PartitionedPlanner] = {}
INVERSE: dict[type[StepSpec], PartitionedPlanner] = {}
REFUSALS: dict[type[StepSpec], Refusal] = {}


def _register(
    registry: dict[type[StepSpec], Any], kind: type[_S]
) -> Callable[[Callable[[_S, Context, Partitioning], Any]], Any]:
    def register(fn: Callable[[_S, Context, Partitioning], Any]) -> Any:
        registry[kind] = fn
        return fn

    return register


def tree_of(step: StepSpec, ctx: Context) -> Partitioning | None:
    """The step's table's partitions, when the step has a recipe for them."""
    table = getattr(step, "table", None)
    if not isinstance(table, str) or (type(step) not in FORWARD and type(step) not in REFUSALS):
        return None
    return ctx.partitioning(ctx.table(table))


def refusal(step: StepSpec, ctx: Context) -> str | None:
    """Why PostgreSQL cannot take the step on its partitioned table, said before anything runs."""
    tree = tree_of(step, ctx)
    check = REFUSALS.get(type(step))
    return None if tree is None or check is None else check(step, ctx, tree)


def _leaf_ctx(ctx: Context) -> Context:
    """The context the ordinary planners get for one partition (planned as a plain table)."""
    return replace(ctx, partitions={})


def _named(table: Table) -> str:
    return f"{table.schema}.{table.name}"


# --- indexes -------------------------------------------------------------------------------


def _index_of(tree: Partitioning, index: str, table: Table) -> Table:
    """The index of `table` (the root or a partition) that makes up the root's index `index`."""
    if table == tree.root:
        return tree.root.sibling(index)
    return table.sibling(derived_name(index, table))


def attached_on(parent_index: Table, table: Table) -> sql.Composed:
    """True when the partitioned index has a valid index of `table` attached to it."""
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits h JOIN pg_index i ON i.indexrelid = h.inhrelid"
        " WHERE h.inhparent = {} AND i.indrelid = {} AND i.indisvalid)"
    ).format(cat.regclass(parent_index), cat.regclass(table))


def covered(root_index: Table, table: Table, *, valid: bool) -> sql.Composed:
    """True when `table` has an index (valid, when `valid`) that is part of the root's index,
    whatever its name: attached to it at some level (PostgreSQL names the indexes it makes for
    partitions created or attached later, and those of an index made before the plan ran)."""
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = {}{} AND {} IN"
        " (SELECT a.relid FROM pg_partition_ancestors(i.indexrelid) a))"
    ).format(
        cat.regclass(table),
        sql.SQL(" AND i.indisvalid" if valid else ""),
        cat.regclass(root_index),
    )


def _on_only(build: Txn, index: Table, table: Table) -> Statement:
    """The ordinary planner's `CREATE [UNIQUE] INDEX CONCURRENTLY` made `… ON ONLY` a
    partitioned table: the same definition, catalog only, INVALID until its partitions attach."""
    text = build.statements[0].text()
    on = f" ON {table.ident().as_string(None)}"
    for unique in ("UNIQUE ", ""):
        head = f"CREATE {unique}INDEX CONCURRENTLY {sql.Identifier(index.name).as_string(None)}"
        if text.startswith(head + on):
            break
    else:
        raise ValueError(f"unexpected index statement {text!r}")
    # SQL zdm's own planner composed from the plan a line above: trusted as the plan is.
    body = text[len(head + on) :]
    return Statement(
        sql.SQL("CREATE {}INDEX {} ON ONLY {}{}").format(
            sql.SQL(unique), sql.Identifier(index.name), table.ident(), sql.SQL(body)
        ),
        SHARE,
        table,
        note="catalog only (ON ONLY: the partitions' indexes are built one by one)",
    )


def _build_on(step: CreateIndex, ctx: Context, table: Table, name: str) -> list[Action]:
    """The ordinary planner's units building the step's index, named `name`, on one table."""
    spec = step.model_copy(update={"table": _named(table), "name": name})
    return indexes.create_index(spec, _leaf_ctx(ctx))


def _attach(tree: Partitioning, index: str, member: Partition) -> Txn:
    parent = _index_of(tree, index, member.parent)
    child = _index_of(tree, index, member.table)
    stmt = Statement(
        sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(parent.ident(), child.ident()),
        AE,
        member.table,
        note="catalog only: the partition's index is built",
    )
    done = sql.SQL("SELECT ({}) OR ({})").format(
        attached_on(parent, member.table),
        covered(tree.root.sibling(index), member.table, valid=member.leaf),
    )
    return Txn((stmt,), f"attach index {child.name} to {parent.name}", skip_if=done)


@_register(FORWARD, CreateIndex)
def create_index(step: CreateIndex, ctx: Context, tree: Partitioning) -> list[Action]:
    root = tree.root
    actions: list[Action] = []
    for table in (root, *(p.table for p in tree.inner)):
        index = _index_of(tree, step.name, table)
        head = _build_on(step, ctx, table, index.name)[-1]
        assert isinstance(head, Txn)
        actions.append(
            Txn(
                (_on_only(head, index, table),),
                f"create index {index.name} on only {table.name}",
                skip_if=sql.SQL("SELECT ({}) OR ({})").format(
                    cat.index_exists(index), covered(root.sibling(step.name), table, valid=False)
                ),
            )
        )
    for leaf in tree.leaves:
        name = _index_of(tree, step.name, leaf.table)
        done = sql.SQL("SELECT ({}) OR ({})").format(
            covered(root.sibling(step.name), leaf.table, valid=True), cat.index_valid(name)
        )
        recover, build = _build_on(step, ctx, leaf.table, name.name)
        assert isinstance(build, Txn)
        actions += [recover, replace(build, skip_if=done)]
    actions += [_attach(tree, step.name, m) for m in tree.bottom_up()]
    actions.append(_valid_at_the_end(root.sibling(step.name)))
    return actions


def _valid_at_the_end(index: Table) -> Txn:
    """Fails the step unless the parent's index is valid (every partition's attached); skipped,
    and so no work of the step's, when it is: an index that was there before is adopted."""
    message = f"index {index} is not valid: a partition's index is missing or not attached"
    body = f"BEGIN RAISE EXCEPTION {sql.Literal(message).as_string(None)}; END"
    stmt = Statement(do_block(body), LockMode.NONE, None, note="locks nothing")
    return Txn((stmt,), f"check index {index.name} is valid", skip_if=cat.index_valid(index))


def _drop_leaf_indexes(tree: Partitioning, index: str) -> list[Action]:
    """The partitions' own indexes that were built but not yet attached when the step stopped
    (attached ones went with the root's)."""
    actions: list[Action] = []
    for member in tree.bottom_up():
        name = _index_of(tree, index, member.table)
        stmt = Statement(
            sql.SQL("DROP INDEX {}IF EXISTS {}").format(
                sql.SQL("CONCURRENTLY " if member.leaf else ""), name.ident()
            ),
            SUE if member.leaf else AE,
            member.table,
            note="an index no query uses yet" if member.leaf else "catalog only",
        )
        actions.append(
            Txn(
                (stmt,),
                f"drop index {name.name}",
                transactional=not member.leaf,
                skip_if=cat.index_missing(name),
            )
        )
    return actions


@_register(INVERSE, CreateIndex)
def undo_create_index(step: CreateIndex, ctx: Context, tree: Partitioning) -> list[Action]:
    index = tree.root.sibling(step.name)
    stmt = Statement(
        sql.SQL("DROP INDEX IF EXISTS {}").format(index.ident()),
        AE,
        tree.root,
        also=tuple(p.table for p in tree.members),
        note="PostgreSQL drops a partitioned index only with its partitions' at once, not"
        " concurrently: brief, under lock_timeout",
    )
    return [
        Txn((stmt,), f"drop index {step.name}", skip_if=cat.index_missing(index)),
        *_drop_leaf_indexes(tree, step.name),
    ]


def _unique_refusal(
    step: CreateIndex | AddUnique | AddPrimaryKey, ctx: Context, tree: Partitioning
) -> str | None:
    if isinstance(step, CreateIndex) and not step.unique:
        return None
    what = f"{step.kind} {step.name} on partitioned table {tree.root}"
    if tree.key_expressions:
        return f"{what}: PostgreSQL takes no unique key on a table partitioned by an expression"
    covered = set(step.columns or [])
    missing = [c for c in tree.key_columns if c not in covered]
    if isinstance(step, CreateIndex) and step.expression is not None:
        missing = list(tree.key_columns)
    if missing:
        return (
            f"{what}: a unique key must include the partition key; add column(s)"
            f" {', '.join(missing)} to its columns (PostgreSQL checks uniqueness per partition)"
        )
    return None


REFUSALS[CreateIndex] = _unique_refusal
REFUSALS[AddUnique] = _unique_refusal
REFUSALS[AddPrimaryKey] = _unique_refusal


def _constraint_backed(
    step: AddUnique | AddPrimaryKey, ctx: Context, tree: Partitioning, kind: str
) -> list[Action]:
    root = tree.root
    done = cat.constraint_exists(root, step.name)
    actions: list[Action] = []
    if isinstance(step, AddPrimaryKey):
        actions += keys.add_primary_key(step, _leaf_ctx(ctx))[:1]  # its NOT NULL guard
    for leaf in tree.leaves:
        name = derived_name(step.name, leaf.table)
        units = constraints.index_backed(
            leaf.table, name, step.columns, kind, f"{kind.lower()} of partition", "catalog only"
        )
        actions += [
            replace(u, skip_if=sql.SQL("SELECT ({}) OR ({})").format(done, u.skip_if))
            if isinstance(u, Txn) and u.skip_if is not None
            else u
            for u in units
        ]
    add = Statement(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} ({})").format(
            root.ident(),
            sql.Identifier(step.name),
            sql.SQL(kind),
            sql.SQL(", ").join(map(sql.Identifier, step.columns)),
        ),
        AE,
        root,
        note="catalog only: PostgreSQL adopts every partition's constraint and index",
    )
    actions.append(Txn((add,), f"add {kind.lower()} {step.name}", skip_if=done))
    return actions


@_register(FORWARD, AddUnique)
def add_unique(step: AddUnique, ctx: Context, tree: Partitioning) -> list[Action]:
    return _constraint_backed(step, ctx, tree, "UNIQUE")


@_register(FORWARD, AddPrimaryKey)
def add_primary_key(step: AddPrimaryKey, ctx: Context, tree: Partitioning) -> list[Action]:
    return _constraint_backed(step, ctx, tree, "PRIMARY KEY")


def _undo_constraint_backed(
    step: AddUnique | AddPrimaryKey, ctx: Context, tree: Partitioning
) -> list[Action]:
    actions: list[Action] = [constraints.drop(tree.root, step.name)]
    for leaf in tree.leaves:
        actions += constraints.drop_index_backed(leaf.table, derived_name(step.name, leaf.table))
    return actions


INVERSE[AddUnique] = _undo_constraint_backed
INVERSE[AddPrimaryKey] = _undo_constraint_backed


# --- constraints validated partition by partition -------------------------------------------


def validate_down_up(tree: Partitioning, name: str) -> list[Action]:
    """VALIDATE of the constraint on each leaf, then on each level up to the root's: each scan is
    one partition's, each committed on its own (a resumed run does not scan it again)."""
    order = [*tree.leaves, *(p for p in tree.bottom_up() if not p.leaf)]
    actions: list[Action] = []
    for member in order:
        txn = constraints.validate(member.table, name)
        actions.append(replace(txn, skip_if=cat.constraint_not_pending(member.table, name)))
    return actions


def _with_leaves_validated(actions: list[Action], tree: Partitioning, name: str) -> list[Action]:
    """The ordinary recipe (add NOT VALID, validate, …) with the partitions validated first."""
    return [actions[0], *validate_down_up(tree, name), *actions[1:]]


@_register(FORWARD, AddCheck)
def add_check(step: AddCheck, ctx: Context, tree: Partitioning) -> list[Action]:
    ordinary = constraints.add_check(step, _leaf_ctx(ctx))
    return _with_leaves_validated(ordinary, tree, step.name) if step.validate else ordinary


@_register(FORWARD, SetNotNull)
def set_not_null(step: SetNotNull, ctx: Context, tree: Partitioning) -> list[Action]:
    table = tree.root
    ordinary = columns.set_not_null(step, _leaf_ctx(ctx))
    name = (
        columns.not_null_constraint_name(table, step.column)
        if ctx.server_version >= 180000
        else columns.not_null_check_name(table, step.column)
    )
    return _with_leaves_validated(ordinary, tree, name)


@_register(REFUSALS, AddForeignKey)
def _foreign_key_refusal(step: AddForeignKey, ctx: Context, tree: Partitioning) -> str | None:
    if ctx.server_version >= 180000 or step.validate:
        return None
    return (
        f"add_foreign_key {step.name}: PostgreSQL {ctx.server_version // 10000} takes no"
        f" NOT VALID foreign key on partitioned table {tree.root} (18 does); validate it"
        " (validate: true), which zdm does partition by partition"
    )


@_register(FORWARD, AddForeignKey)
def add_foreign_key(step: AddForeignKey, ctx: Context, tree: Partitioning) -> list[Action]:
    ordinary = constraints.add_foreign_key(step, _leaf_ctx(ctx))
    if ctx.server_version >= 180000:
        return _with_leaves_validated(ordinary, tree, step.name) if step.validate else ordinary
    # Before 18: NOT VALID and validated on each leaf, then the root's, adopting the leaves'.
    done = cat.constraint_exists(tree.root, step.name)
    actions: list[Action] = []
    for leaf in tree.leaves:
        spec = step.model_copy(update={"table": _named(leaf.table)})
        for unit in constraints.add_foreign_key(spec, _leaf_ctx(ctx)):
            assert isinstance(unit, Txn) and unit.skip_if is not None
            actions.append(
                replace(unit, skip_if=sql.SQL("SELECT ({}) OR ({})").format(done, unit.skip_if))
            )
    add = ordinary[0]
    assert isinstance(add, Txn)
    stmt = add.statements[0]
    text = stmt.text().removesuffix(" NOT VALID")
    adopt = replace(
        stmt,
        sql=sql.SQL(text),  # zdm's own statement, composed from the plan above
        note="no scan: PostgreSQL adopts every partition's validated foreign key",
    )
    actions.append(replace(add, statements=(adopt,), label=f"add constraint {step.name}"))
    return actions


@_register(INVERSE, AddForeignKey)
def undo_add_foreign_key(step: AddForeignKey, ctx: Context, tree: Partitioning) -> list[Action]:
    actions: list[Action] = [constraints.drop(tree.root, step.name)]
    if ctx.server_version < 180000:
        actions += [constraints.drop(leaf.table, step.name) for leaf in tree.leaves]
    return actions


# --- dual-write triggers ----------------------------------------------------------------------
# The ordinary trigger, created on the parent: PostgreSQL (13+) clones a row trigger on a
# partitioned table to every partition, those attached or created later included, so writes
# through the parent and straight into a partition both fire it.


@_register(REFUSALS, DualWrite)
def _dual_write_refusal(step: DualWrite, ctx: Context, tree: Partitioning) -> str | None:
    mapped = [c for c in (*step.set, *(step.reverse or {})) if c in tree.key_columns]
    if mapped:
        return (
            f"dual_write on partitioned table {tree.root}: it maps partition key column(s)"
            f" {', '.join(mapped)}, and PostgreSQL refuses a BEFORE row trigger that moves a row"
            " to another partition"
        )
    return None


# --- backfill -------------------------------------------------------------------------------


@_register(FORWARD, Backfill)
def backfill(step: Backfill, ctx: Context, tree: Partitioning) -> list[Action]:
    """One walk per leaf, each with its own checkpoints (`zdm status` shows each): a leaf's key
    ranges are its own (a key range of the parent spans every hash partition), a walk without a
    key goes by the leaf's own pages, and a resumed run takes each leaf up where it was."""
    actions: list[Action] = []
    for unit in data.backfill(step, _leaf_ctx(ctx)):
        assert isinstance(unit, BackfillJob)
        actions += [
            replace(unit, table=leaf.table, label=f"backfill {leaf.table}", part=str(leaf.table))
            for leaf in tree.leaves
        ]
    return actions
