"""SQL text parsed by PostgreSQL's own parser (libpg_query through pglast), with positions.

pglast is an optional dependency (``zdm[lint]``, GPL-3.0-or-later), so it is imported only here
and in the rule modules, which are imported only after `require_pglast` succeeded.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pglast import ast

INSTALL_HINT = "pip install 'zdm[lint]'"

#: ``-- zdm-lint: ignore rule-a, rule-b`` (or inside ``/* */``, or ``#`` in YAML plans).
SUPPRESSION = re.compile(r"zdm-lint:\s*ignore\s+([a-z0-9][a-z0-9-]*(?:\s*,\s*[a-z0-9][a-z0-9-]*)*)")


class PglastMissing(Exception):
    """SQL cannot be checked: the optional parser is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "checking SQL needs PostgreSQL's parser, which comes with the optional 'lint' "
            f"extra: {INSTALL_HINT}"
        )


def require_pglast() -> None:
    """Raise PglastMissing unless pglast can be imported."""
    try:
        import pglast.parser  # noqa: F401
    except ImportError:
        raise PglastMissing from None


class SqlSyntaxError(Exception):
    """The text is not SQL that PostgreSQL accepts; ``offset`` is where the parser gave up."""

    def __init__(self, message: str, offset: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def suppressed_rules(comment: str) -> set[str]:
    """Rule ids that a comment's ``zdm-lint: ignore`` names."""
    rules: set[str] = set()
    for match in SUPPRESSION.finditer(comment):
        rules.update(part.strip() for part in match.group(1).split(","))
    return rules


@dataclass(frozen=True)
class Identifier:
    """An identifier as written (before PostgreSQL truncates it) and where."""

    name: str
    offset: int


@dataclass
class SqlStatement:
    """One parsed statement: its tree, its text and its place in the source."""

    node: ast.Node
    index: int
    start: int
    """Offset of its first token (comments before it excluded)."""
    end: int
    """Offset just after its last token."""
    text: str
    identifiers: tuple[Identifier, ...] = ()
    suppressed: set[str] = field(default_factory=set)
    suppression_at: dict[str, int] = field(default_factory=dict)
    """Offset of the comment that suppresses each rule, for messages about unknown rules."""


@dataclass
class SqlSource:
    """A file's (or a plan step's) SQL: the statements and a map from offsets to lines."""

    text: str
    statements: list[SqlStatement]
    line_starts: list[int]
    first_line: int = 1
    first_column: int = 1
    """Where the text starts in its file (a plan's ``sql`` step sits inside YAML)."""
    indent: int = 0
    """Columns to add on lines after the first (a YAML block scalar is indented)."""

    def position(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset, in the file that holds the text."""
        index = bisect.bisect_right(self.line_starts, offset) - 1
        column = offset - self.line_starts[index] + 1
        if index == 0:
            return self.first_line, column + self.first_column - 1
        return self.first_line + index, column + self.indent


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(match.end() for match in re.finditer("\n", text))
    return starts


def _unquote(token: str) -> str:
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    if token[:2].upper() == "U&":
        return token
    return token.lower()


def parse_source(text: str) -> SqlSource:
    """Parse SQL text; raise SqlSyntaxError (with the offset) when PostgreSQL would reject it."""
    from pglast import parser

    try:
        raw = parser.parse_sql(text)
        tokens = parser.scan(text)
    except parser.ParseError as error:
        message, offset = error.args[0], error.args[1] if len(error.args) > 1 else None
        raise SqlSyntaxError(str(message), offset if isinstance(offset, int) else None) from None

    comments = [t for t in tokens if t.name in ("SQL_COMMENT", "C_COMMENT")]
    code = [t for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT")]
    statements: list[SqlStatement] = []
    for index, item in enumerate(raw):
        location = item.stmt_location or 0
        length = item.stmt_len or 0
        limit = location + length if length else len(text)
        inside = [t for t in code if location <= t.start < limit and t.name != "ASCII_59"]
        start = inside[0].start if inside else location
        end = inside[-1].end + 1 if inside else limit
        identifiers = tuple(
            Identifier(_unquote(text[t.start : t.end + 1]), t.start)
            for t in inside
            if t.name in ("IDENT", "UIDENT")
        )
        assert item.stmt is not None
        statements.append(SqlStatement(item.stmt, index, start, end, text[start:end], identifiers))
    source = SqlSource(text, statements, _line_starts(text))
    _attach_suppressions(source, [(c.start, text[c.start : c.end + 1]) for c in comments])
    return source


def _attach_suppressions(source: SqlSource, comments: list[tuple[int, str]]) -> None:
    """A suppression comment applies to the statement it is in, the statement that ends on its
    line before it (a trailing comment), or else the next statement."""
    statements = source.statements
    for offset, comment in comments:
        rules = suppressed_rules(comment)
        if not rules or not statements:
            continue
        target: SqlStatement | None = None
        line = source.position(offset)[0]
        for stmt in statements:
            if stmt.start <= offset < stmt.end:
                target = stmt
                break
            if stmt.end <= offset and source.position(stmt.end)[0] == line:
                target = stmt
        if target is None:
            target = next((s for s in statements if s.start > offset), None)
        if target is None:
            continue
        target.suppressed.update(rules)
        for rule in rules:
            target.suppression_at.setdefault(rule, offset)
