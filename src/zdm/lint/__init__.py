"""`zdm lint`: static safety checks of zdm plans and plain ``.sql`` migrations.

``run_lint`` reads plan files (``.yaml``/``.yml``) and SQL files (``.sql``, Flyway's
``V001__name.sql`` included); a directory is searched recursively for both and read in
migration order, so that earlier migrations tell later ones what their columns are. SQL is
parsed with PostgreSQL's own parser (pglast, the optional ``zdm[lint]`` extra).

Each finding names its rule, severity and place, says what goes wrong (the lock taken, what it
blocks, whether it scans or rewrites the table) and what to do instead, usually the zdm step
that does it.

Suppressing a finding: a comment that names the rule applies to the statement that follows it,
to the statement it sits in, or, at the end of a line, to the statement that ended on that line::

    -- zdm-lint: ignore index-not-concurrent, missing-lock-timeout
    CREATE INDEX users_email_idx ON users (email);

In a plan, ``# zdm-lint: ignore rule-id`` on the lines right above a step (or at the end of its
first line) applies to the whole step, its SQL included. A suppression that names an unknown
rule is an error, so that a typo does not silently keep a finding.

Exit codes: 0 no findings, 1 findings, 2 a file cannot be read or parsed (or names an unknown
rule, or SQL needs pglast and it is missing); the reason goes to stderr as ``file:line:col:
message``.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TextIO

from zdm.lint.change_rules import CHANGE_RULE_IDS
from zdm.lint.files import LintError, LintFile, discover, read_text, wrap_of
from zdm.lint.findings import Finding, Problem, Rule, Severity
from zdm.lint.plan_rules import PLAN_RULE_IDS, PLAN_RULES
from zdm.lint.report import FORMATS, summary, write
from zdm.lint.source import PglastMissing, require_pglast

if TYPE_CHECKING:
    from zdm.lint.context import Schema
    from zdm.lint.live import Live

__all__ = [
    "PLAN_RULES",
    "Finding",
    "LintError",
    "LintOptions",
    "Problem",
    "Rule",
    "Severity",
    "lint_paths",
    "run_lint",
]

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class ParserMissing(LintError):
    """SQL files not checked because pglast is missing; ``files`` counts them."""

    def __init__(self, sql_files: list[str]) -> None:
        where = sql_files[0] if len(sql_files) == 1 else f"{len(sql_files)} .sql files"
        super().__init__(where, f"not checked: {PglastMissing()}")
        self.files = len(sql_files)


@dataclass(frozen=True)
class LintOptions:
    """How to lint: the CLI's options over the ``[tool.zdm.lint]`` configuration."""

    exclude: frozenset[str] = frozenset()
    """Rules not to report (``--exclude``)."""
    assume_in_transaction: bool | None = None
    """True/False: every SQL file runs in one transaction / statement by statement; None: by
    file kind (see `wrap_of`)."""
    stdin: str | None = None
    """The SQL that ``-`` stands for."""
    pg_version: int | None = None
    """The server's major version (``--pg-version``); None: a current one."""
    dsn: str | None = None
    """A live database whose column types, sizes and version the rules use (``--dsn``)."""


def _read_live(dsn: str, schema: Schema) -> Live:
    from zdm.engine.live_schema import read_live_schema
    from zdm.engine.session import ConnectionFailed
    from zdm.lint.live import seed

    try:
        return seed(schema, read_live_schema(dsn))
    except ConnectionFailed as error:
        raise LiveUnavailable(str(error)) from None


class LiveUnavailable(Exception):
    """``--dsn`` names a database that cannot be read (exit 2)."""


def _known_rules() -> set[str] | None:
    try:
        from zdm.lint.rules import RULES_BY_ID
    except ImportError:
        return None
    return set(RULES_BY_ID) | set(PLAN_RULE_IDS) | set(CHANGE_RULE_IDS)


def _lint_sql(
    item: LintFile, schema: Schema, options: LintOptions, live: Live | None
) -> tuple[list[Finding], list[tuple[str, int, str]]]:
    from zdm.lint.context import FileState
    from zdm.lint.source import SqlSource, SqlSyntaxError, parse_source
    from zdm.lint.sqllint import lint_source

    file = str(item.path)
    text = item.text if item.text is not None else read_text(item.path)
    try:
        source = parse_source(text)
    except SqlSyntaxError as error:
        probe = SqlSource(text, [], [0, *(i + 1 for i, c in enumerate(text) if c == "\n")])
        line, column = probe.position(error.offset) if error.offset is not None else (None, None)
        raise LintError(file, f"cannot parse the SQL: {error.message}", line, column) from None
    wrap = wrap_of(item, options.assume_in_transaction)
    state = FileState(schema, pg_version=options.pg_version)
    findings = lint_source(source, file, state, wrap=wrap, live=live)
    suppressions = [
        (file, source.position(offset)[0], rule)
        for stmt in source.statements
        for rule, offset in stmt.suppression_at.items()
    ]
    return findings, suppressions


def lint_paths(
    paths: list[str], options: LintOptions | None = None
) -> tuple[list[Finding], list[LintError], int]:
    """Findings and errors for the files under ``paths``, and how many files were read."""
    from zdm.lint.planlint import lint_plan

    options = options or LintOptions()
    files, errors = discover(paths, options.stdin)
    findings: list[Finding] = []
    suppressions: list[tuple[str, int, str]] = []
    schema: Schema | None = None
    live: Live | None = None
    pglast_missing = False
    for item in files:
        if schema is None:
            try:
                require_pglast()
                from zdm.lint.context import Schema

                schema = Schema()
            except PglastMissing:
                pass
            if schema is not None and options.dsn is not None:
                live = _read_live(options.dsn, schema)
                if options.pg_version is None:
                    options = replace(options, pg_version=live.server_major)
        history = copy.deepcopy(schema) if item.undo and schema is not None else schema
        try:
            if item.plan:
                result = lint_plan(item.path, history)
                findings.extend(result.findings)
                errors.extend(result.errors)
                suppressions.extend(result.suppressions)
            elif history is None:
                pglast_missing = True
            else:
                found, suppressed = _lint_sql(item, history, options, live)
                findings.extend(found)
                suppressions.extend(suppressed)
        except LintError as error:
            errors.append(error)
        except Exception as error:  # a bug in a rule must not hide the other files' findings
            errors.append(LintError(str(item.path), f"internal error, please report it: {error!r}"))
    if pglast_missing:
        errors.append(ParserMissing([str(f.path) for f in files if not f.plan]))
    known = _known_rules()
    if known is not None:
        for rule in sorted(options.exclude - known):
            errors.append(
                LintError(
                    "--exclude",
                    f"unknown rule {rule!r}; known rules: " + ", ".join(sorted(known)),
                )
            )
        for file, line, rule in suppressions:
            if rule not in known:
                errors.append(
                    LintError(
                        file,
                        f"zdm-lint: ignore names an unknown rule {rule!r}; known rules: "
                        + ", ".join(sorted(known)),
                        line,
                    )
                )
    findings = [f for f in findings if f.rule not in options.exclude]
    return findings, errors, len(files)


def run_lint(paths: list[str], fmt: str, out: TextIO, options: LintOptions | None = None) -> int:
    """Lint ``paths`` and write the findings to ``out`` in ``fmt``; returns the exit code."""
    if fmt not in FORMATS:
        sys.stderr.write(
            f"zdm lint: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}\n"
        )
        return EXIT_ERROR
    try:
        findings, errors, count = lint_paths(paths, options)
    except LiveUnavailable as unavailable:
        sys.stderr.write(f"zdm lint: --dsn: {unavailable}\n")
        return EXIT_ERROR
    write(findings, fmt, out)
    for error in errors:
        sys.stderr.write(f"{error}\n")
    # Only SQL files and no parser: the one line naming the extra says it all.
    only = errors[0] if len(errors) == 1 else None
    nothing_checked = isinstance(only, ParserMissing) and only.files == count
    if fmt == "text" and not nothing_checked:
        unchecked = len({error.file for error in errors})
        tail = f"; {unchecked} could not be checked (see above)" if errors else ""
        sys.stderr.write(summary(findings, count) + tail + "\n")
    if errors:
        return EXIT_ERROR
    failing = [f for f in findings if f.severity is not Severity.note]
    return EXIT_FINDINGS if failing else EXIT_CLEAN
