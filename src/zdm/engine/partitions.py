"""Reads the partition trees of the tables a plan names: what per-partition recipes plan from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import psycopg

from zdm.ddl import Table
from zdm.ddl.partitions import TREE, Partition, Partitioning
from zdm.engine.session import server_version
from zdm.operations import Context, plan_refusal
from zdm.plan import LoadedPlan, Plan, PlanIssue, StepSpec
from zdm.plan.messages import format_path
from zdm.plan.yamlsource import read_yaml


def step_tables(spec: StepSpec, schema: str) -> list[Table]:
    """The tables a step acts on or references (a foreign key's target)."""
    names: list[str] = []
    table = getattr(spec, "table", None)
    if isinstance(table, str):
        names.append(table)
    references = getattr(spec, "references", None)
    target = getattr(references, "table", None)
    if isinstance(target, str):
        names.append(target)
    return [Table.parse(n, schema) for n in names]


def plan_tables(plan: Plan) -> list[Table]:
    seen: dict[Table, None] = {}
    for _, _, spec in plan.iter_steps():
        seen.update(dict.fromkeys(step_tables(spec, plan.schema_)))
    return list(seen)


def read_partitions(
    conn: psycopg.Connection[Any], tables: Iterable[Table]
) -> dict[Table, Partitioning]:
    """The partitioned ones among `tables`, each with its partitions; read in one query."""
    names = [t.ident().as_string(None) for t in tables]
    if not names:
        return {}
    trees: dict[Table, Partitioning] = {}
    for rs, rn, s, n, ps, pn, level, leaf, keys in conn.execute(TREE, {"tables": names}):
        root = Table(rs, rn)
        tree = trees.get(root) or Partitioning(root, (), ())
        members = tree.members
        if level > 0:
            members += (Partition(level, Table(s, n), Table(ps, pn), leaf),)
        columns = tree.key_columns + tuple(k for k in keys or [] if k and k not in tree.key_columns)
        expressions = tree.key_expressions or any(not k for k in keys or [])
        trees[root] = Partitioning(root, members, columns, expressions)
    return trees


def with_partitions(ctx: Context, conn: psycopg.Connection[Any], plan: Plan) -> Context:
    """The context with the plan's partitioned tables as they are now."""
    return replace(ctx, partitions=read_partitions(conn, plan_tables(plan)))


def refusals(loaded: LoadedPlan, ctx: Context, pending: Iterable[str] | None) -> list[PlanIssue]:
    """What PostgreSQL cannot do on the plan's partitioned tables, as plan issues (file:line), for
    the steps still to run (`pending` keys; all by default)."""
    keys = None if pending is None else set(pending)
    issues: list[PlanIssue] = []
    document = None
    for step in loaded.steps():
        if keys is not None and step.key not in keys:
            continue
        message = plan_refusal(step.spec, ctx)
        if message is None:
            continue
        document = document or read_yaml(loaded.text)
        loc: tuple[str | int, ...] = ("phases", step.phase, step.index, step.kind)
        line, column = document.position(loc) or (None, None)
        issues.append(PlanIssue(str(loaded.path), line, column, format_path(loc), message))
    return issues


def partition_refusals(
    conn: psycopg.Connection[Any], loaded: LoadedPlan, pending: Iterable[str] | None
) -> list[PlanIssue]:
    """`refusals` of the plan against the database as it is now (`zdm validate --dsn`)."""
    ctx = Context.of(loaded, server_version(conn), "zdm")
    return refusals(loaded, with_partitions(ctx, conn, loaded.plan), pending)
