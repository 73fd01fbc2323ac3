"""Rules about a plan as a whole, which no single step's model can check."""

from __future__ import annotations

from zdm.plan.messages import Finding, Loc, format_path
from zdm.plan.model import Plan
from zdm.plan.names import split_qualified
from zdm.plan.steps import (
    AddCheck,
    AddForeignKey,
    AddUnique,
    Backfill,
    CreateIndex,
    DropConstraint,
    DropDualWrite,
    DropIndex,
    DualWrite,
)


def check_plan(plan: Plan) -> list[Finding]:
    """Every violation of the cross-step rules, in plan order."""
    return [
        *_unique_gates(plan),
        *_destructive_only_in_cleanup(plan),
        *_backfills_have_a_mapping(plan),
        *_created_names_are_unique(plan),
    ]


def _step_loc(phase: str, index: int, kind: str) -> Loc:
    return ("phases", phase, index, kind)


def _unique_gates(plan: Plan) -> list[Finding]:
    findings = []
    for index, gate in enumerate(plan.gates):
        if gate in plan.gates[:index]:
            findings.append(Finding(("gates", index), f"phase {gate!r} is listed twice in gates"))
    return findings


def _destructive_only_in_cleanup(plan: Plan) -> list[Finding]:
    # Old application code still runs until cleanup; dropping or renaming what it uses breaks it.
    return [
        Finding(
            _step_loc(phase, index, spec.kind),
            f"{spec.kind} is destructive and belongs in the cleanup phase, after the "
            f"application stopped using the old shape; move it to phases.cleanup",
            at="key",
        )
        for phase, index, spec in plan.iter_steps()
        if spec.destructive and phase != "cleanup"
    ]


def _backfills_have_a_mapping(plan: Plan) -> list[Finding]:
    # A backfill without `set` takes its expressions from the table's dual_write trigger.
    findings = []
    triggers: dict[tuple[str, str], set[str]] = {}
    for phase, index, spec in plan.iter_steps():
        if isinstance(spec, DualWrite | DropDualWrite):
            names = triggers.setdefault(split_qualified(spec.table, plan.schema_), set())
            if isinstance(spec, DualWrite):
                names.add(spec.trigger_name)
            else:
                names.discard(spec.trigger_name)
        elif (
            isinstance(spec, Backfill)
            and spec.set is None
            and spec.from_ is None
            and not triggers.get(split_qualified(spec.table, plan.schema_))
        ):
            findings.append(
                Finding(
                    _step_loc(phase, index, spec.kind),
                    f"this backfill of {spec.table} has no 'set' and there is no earlier "
                    f"dual_write step on {spec.table} to take it from; add a dual_write "
                    "step before it or give the backfill a 'set'",
                    at="key",
                )
            )
    return findings


def _created_names_are_unique(plan: Plan) -> list[Finding]:
    # Index names share their schema's namespace with tables; constraint names are per table.
    findings = []
    created: dict[tuple[str, str, str], str] = {}
    for phase, index, spec in plan.iter_steps():
        where = f"{format_path(('phases', phase, index))} ({spec.kind})"
        keys: list[tuple[str, str, str]] = []
        if isinstance(spec, CreateIndex | AddUnique | AddCheck | AddForeignKey):
            schema, table = split_qualified(spec.table, plan.schema_)
            if isinstance(spec, CreateIndex | AddUnique):
                keys.append(("relation", schema, spec.name))
            if not isinstance(spec, CreateIndex):
                keys.append(("constraint", f"{schema}.{table}", spec.name))
            for key in keys:
                if key in created:
                    findings.append(
                        Finding(
                            (*_step_loc(phase, index, spec.kind), "name"),
                            f"the name {spec.name!r} is already used by {created[key]}; "
                            "each index and constraint needs its own name",
                        )
                    )
                    break
            else:
                created.update(dict.fromkeys(keys, where))
        elif isinstance(spec, DropIndex):
            created.pop(("relation", *split_qualified(spec.name, plan.schema_)), None)
        elif isinstance(spec, DropConstraint):
            schema, table = split_qualified(spec.table, plan.schema_)
            created.pop(("constraint", f"{schema}.{table}", spec.name), None)
            created.pop(("relation", schema, spec.name), None)
    return findings
