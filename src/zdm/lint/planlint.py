"""Lint a plan file: the plan rules, then the SQL rules over its ``sql`` steps.

Findings point into the YAML: a plan rule at its step, an SQL finding at the statement inside
the step's ``up`` (exactly for ``up: |`` blocks and one-line values, at the value otherwise), or
into the file that ``up_file`` names. A YAML comment ``# zdm-lint: ignore rule-id`` on the lines
right above a step (or at the end of its first line) suppresses that rule for the step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from zdm.ddl.locks import LockMode
from zdm.lint.change_rules import CHANGE_RULES
from zdm.lint.files import LintError, read_text
from zdm.lint.findings import Finding
from zdm.lint.plan_rules import PLAN_RULES
from zdm.lint.source import PglastMissing, require_pglast, suppressed_rules
from zdm.plan import (
    AddColumn,
    CreateTable,
    DropTable,
    LoadedPlan,
    PlanError,
    PlanStep,
    Sql,
    load_plan,
)
from zdm.plan.expand import offline_facts
from zdm.plan.yamlsource import YamlDocument, read_yaml

if TYPE_CHECKING:
    from zdm.lint.context import Schema
    from zdm.lint.types import TypeRef


@dataclass
class PlanResult:
    findings: list[Finding] = field(default_factory=list)
    errors: list[LintError] = field(default_factory=list)
    suppressions: list[tuple[str, int, str]] = field(default_factory=list)
    """(file, line, rule) of every suppression comment, to check that the rules exist."""


def _step_suppressions(lines: list[str], line: int) -> dict[str, int]:
    """Rules named by ``# zdm-lint: ignore`` comments right above a step or on its line."""
    found: dict[str, int] = {}
    if 0 < line <= len(lines):
        head = lines[line - 1]
        if "#" in head:
            for rule in suppressed_rules(head[head.index("#") :]):
                found[rule] = line
    index = line - 2
    while index >= 0 and lines[index].strip().startswith("#"):
        for rule in suppressed_rules(lines[index]):
            found.setdefault(rule, index + 1)
        index -= 1
    return found


def lint_plan(path: Path, schema: Schema | None = None) -> PlanResult:
    """Everything `zdm lint` reports about one plan file."""
    result = PlanResult()
    file = str(path)
    try:
        loaded = load_plan(path, offline_facts)
    except PlanError as error:
        result.errors.extend(
            LintError(
                issue.file,
                f"{issue.path}: {issue.message}" if issue.path else issue.message,
                issue.line,
                issue.column,
            )
            for issue in error.issues
        )
        return result
    document = read_yaml(loaded.text)
    lines = loaded.text.splitlines()
    steps = loaded.steps()
    ignored: dict[str, set[str]] = {}
    for step in steps:
        line = loaded.step_line(step.key)
        rules = _step_suppressions(lines, line) if line else {}
        ignored[step.key] = set(rules)
        result.suppressions.extend((file, at, rule) for rule, at in rules.items())

    for rule in PLAN_RULES:
        for problem in rule.check(loaded.plan):
            if rule.id in ignored.get(problem.step.key, set()):
                continue
            line, column = document.position(loaded.step_paths[problem.step.key]) or (1, 1)
            result.findings.append(
                Finding(
                    rule.id,
                    problem.severity or rule.severity,
                    file,
                    line,
                    column,
                    problem.message,
                    problem.fix,
                )
            )

    if loaded.source is not None:
        _lint_changes(loaded, document, lines, result)

    if any(isinstance(step.spec, Sql) for step in steps):
        try:
            require_pglast()
        except PglastMissing as error:
            result.errors.append(LintError(file, f"the sql steps were not checked: {error}"))
        else:
            _lint_sql_steps(loaded, document, steps, ignored, schema, result)
    result.findings.sort(key=lambda f: (f.file, f.line, f.column))
    return result


def _lint_changes(
    loaded: LoadedPlan, document: YamlDocument, lines: list[str], result: PlanResult
) -> None:
    """The change rules, at each change's field; `# zdm-lint: ignore RULE` above the change
    silences one."""
    assert loaded.source is not None
    file = str(loaded.path)
    for index, change in enumerate(loaded.source.changes):
        where = document.position(("changes", index))
        ignored = _step_suppressions(lines, where[0]) if where else {}
        result.suppressions.extend((file, at, rule) for rule, at in ignored.items())
        for rule in CHANGE_RULES:
            if rule.id in ignored:
                continue
            for problem in rule.check(change):
                loc = ("changes", index, change.kind, problem.field)
                line, column = document.position(loc) or where or (1, 1)
                result.findings.append(
                    Finding(
                        rule.id, rule.severity, file, line, column, problem.message, problem.fix
                    )
                )


def _lint_sql_steps(
    loaded: LoadedPlan,
    document: YamlDocument,
    steps: list[PlanStep],
    ignored: dict[str, set[str]],
    schema: Schema | None,
    result: PlanResult,
) -> None:
    from zdm.lint.analysis import table_key
    from zdm.lint.context import FileState, Schema, Wrap
    from zdm.lint.source import SqlSource, SqlSyntaxError, parse_source
    from zdm.lint.sqllint import lint_source

    state = FileState(schema if schema is not None else Schema())
    plan_schema = loaded.plan.schema_
    for step in steps:
        spec = step.spec
        if isinstance(spec, CreateTable):
            for name in _names(spec.table, plan_schema):
                state.new_tables.add(table_key(name))
            model = state.schema.table(table_key(spec.table))
            for definition in spec.columns:
                model.columns[definition.name] = _parse_type(definition.type)
            continue
        if isinstance(spec, AddColumn):
            state.schema.table(table_key(spec.table)).columns[spec.column.name] = _parse_type(
                spec.column.type
            )
            continue
        if isinstance(spec, DropTable):
            for name in _names(spec.table, plan_schema):
                state.new_tables.discard(table_key(name))
            continue
        if not isinstance(spec, Sql) or step.key in loaded.step_origins:
            continue  # the SQL that changes expand into is zdm's own, not the plan's to lint
        file = str(loaded.path)
        if spec.up is not None:
            text = spec.up
            loc = (*loaded.step_paths[step.key], "sql", "up")
            first_line, first_column, indent = _scalar_origin(loaded.text, document, loc)
        else:
            assert spec.up_file is not None
            up_path = loaded.path.parent / spec.up_file
            text = read_text(up_path)
            file = str(up_path)
            first_line, first_column, indent = 1, 1, 0
        try:
            source: SqlSource = parse_source(text)
        except SqlSyntaxError as error:
            probe = SqlSource(text, [], _line_starts(text), first_line, first_column, indent)
            line, column = (
                probe.position(error.offset) if error.offset is not None else (first_line, None)
            )
            result.errors.append(LintError(file, f"{step.key}: {error.message}", line, column))
            continue
        source.first_line, source.first_column, source.indent = first_line, first_column, indent
        declared = LockMode.parse(spec.lock) if spec.lock else LockMode.ACCESS_EXCLUSIVE
        # The executor sets a short lock_timeout for steps whose declared lock blocks traffic.
        state.session_timeout = declared.blocks_app
        result.findings.extend(
            lint_source(
                source,
                file,
                state,
                wrap=Wrap.ALWAYS if spec.transactional else Wrap.FILE,
                phase=step.phase,
                suppressed=ignored.get(step.key, ()),
            )
        )
        for stmt in source.statements:
            for rule, offset in stmt.suppression_at.items():
                result.suppressions.append((file, source.position(offset)[0], rule))
        state.session_timeout = False


def _names(table: str, schema: str) -> Iterable[str]:
    return (table, f"{schema}.{table}") if "." not in table else (table,)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(index + 1 for index, char in enumerate(text) if char == "\n")
    return starts


def _parse_type(text: str) -> TypeRef | None:
    from pglast import ast
    from pglast.parser import ParseError, parse_sql

    from zdm.lint.types import type_ref

    try:
        stmt = parse_sql(f"CREATE TABLE zdm_lint_probe (c {text})")[0].stmt
    except (ParseError, IndexError):
        return None
    if isinstance(stmt, ast.CreateStmt):
        for item in stmt.tableElts or ():
            if isinstance(item, ast.ColumnDef) and item.typeName is not None:
                return type_ref(item.typeName)
    return None


def _scalar_origin(
    text: str, document: YamlDocument, loc: tuple[object, ...]
) -> tuple[int, int, int]:
    """(first line, first column, indent of later lines) of a YAML string's content."""
    position = document.position(loc)
    if position is None:
        return 1, 1, 0
    line, column = position
    lines = text.splitlines()
    here = lines[line - 1][column - 1 :] if line - 1 < len(lines) else ""
    if here[:1] in ("|", ">"):
        # Block scalars start on the next line; their leading blank lines stay in the value.
        for content in lines[line:]:
            if content.strip():
                indent = len(content) - len(content.lstrip(" "))
                return line + 1, indent + 1, indent
        return line + 1, 1, 0
    if here[:1] in ('"', "'"):
        return line, column + 1, column
    return line, column, column - 1
