"""Run the SQL rules over parsed SQL: a .sql file, or the SQL of a plan's ``sql`` step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from zdm.lint.analysis import locks
from zdm.lint.context import Ctx, FileState, Wrap, assign_transactions
from zdm.lint.findings import Finding
from zdm.lint.live import soften
from zdm.lint.rules import RULES
from zdm.lint.source import SqlSource

if TYPE_CHECKING:
    from zdm.lint.live import Live


def lint_source(
    source: SqlSource,
    file: str,
    state: FileState,
    *,
    wrap: Wrap,
    phase: str | None = None,
    suppressed: Iterable[str] = (),
    live: Live | None = None,
) -> list[Finding]:
    """Findings of every rule on every statement, in order; ``state`` carries what they did."""
    findings: list[Finding] = []
    ignored = set(suppressed)
    for stmt, txn in zip(source.statements, assign_transactions(source, wrap), strict=True):
        state.enter(txn)
        line, column = source.position(stmt.start)
        ctx = Ctx(state, source, txn, line, phase)
        tables = [lock.table for lock in locks(stmt.node)] if live is not None else []
        for rule in RULES:
            if rule.id in stmt.suppressed or rule.id in ignored:
                continue
            for problem in rule.check(stmt, ctx):
                at_line, at_column = (
                    source.position(problem.at) if problem.at is not None else (line, column)
                )
                finding = Finding(
                    rule.id,
                    problem.severity or rule.severity,
                    file,
                    at_line,
                    at_column,
                    problem.message,
                    problem.fix,
                )
                findings.append(soften(finding, tables, live) if live is not None else finding)
        state.apply(stmt, line)
    state.enter(None)
    return findings
