"""SQL files written for psql or Flyway, made fit for zdm's own transaction around a `sql` step.

Such a file often wraps itself in `BEGIN; … COMMIT;`. The executor already runs a transactional
`sql` step in one transaction, with its timeouts and the step's bookkeeping; the file's COMMIT
would end that transaction early and leave the bookkeeping outside it. So the outer pair is
taken off, and only that pair: anything else in the file runs exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Whitespace, `-- line` comments and `/* block */` comments (not nested) before the first word.
_LEADING = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_BEGIN = re.compile(r"(?:BEGIN|START\s+TRANSACTION)(?:\s+(?:TRANSACTION|WORK))?\s*;", re.I)
_COMMIT = re.compile(r"(?<![\w$])(?:COMMIT|END)(?:\s+(?:TRANSACTION|WORK))?\s*;?\Z", re.I)


def _without_trailing_comments(text: str) -> str:
    while True:
        text = text.rstrip()
        last_line = text.rpartition("\n")[2].lstrip()
        if last_line.startswith("--"):
            text = text[: len(text) - len(last_line)]
        elif text.endswith("*/") and "/*" in text:
            text = text[: text.rindex("/*")]
        else:
            return text


def without_own_transaction(text: str) -> str:
    """`text` without a leading `BEGIN;` and trailing `COMMIT;` around it; else unchanged."""
    lead = _LEADING.match(text)
    start = lead.end() if lead else 0
    begin = _BEGIN.match(text, start)
    if begin is None:
        return text
    body = _without_trailing_comments(text[begin.end() :])
    commit = _COMMIT.search(body)
    # COMMIT (or END) must be a statement of its own, not the end of `CASE … END`.
    if commit is None or not _without_trailing_comments(body[: commit.start()]).endswith(";"):
        return text
    return text[:start] + body[: commit.start()].rstrip() + "\n"


# Where scanning a statement stops to look: a quote, a comment, a dollar quote, a word, a `;`,
# a number, a `.` (the name after it is another relation's).
_TOKEN = re.compile(
    r"""(?P<q>[Ee]')|(?P<s>')|(?P<d>")|(?P<line>--)|(?P<block>/\*)"""
    r"""|(?P<dollar>\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$)"""
    r"""|(?P<word>[A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)|(?P<semi>;)"""
    r"""|(?P<num>\.?\d[\d.]*(?:[eE][+-]?\d+)?)|(?P<dot>\.)"""
)
_ROUTINE = re.compile(r"\A\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.I)


def split_statements(text: str) -> list[str]:
    """The statements of `text`, split at each `;` that is not in a quote, a comment or a
    dollar-quoted body, nor in the `BEGIN ATOMIC … END` body of a SQL-standard routine.

    For a `sql` step that runs outside a transaction: PostgreSQL runs a multi-statement string
    as one implicit transaction, in which CREATE INDEX CONCURRENTLY and the like are refused.
    Statements that hold only comments are left out.
    """
    statements: list[str] = []
    start = 0
    depth = 0  # BEGIN … END nesting in a routine body
    for kind, value, begin, end in _scan(text):
        if kind == "word":
            word = value.upper()
            if word in ("BEGIN", "CASE") and (
                depth or (word == "BEGIN" and _ROUTINE.match(text, start))
            ):
                depth += 1
            elif word == "END" and depth:
                depth -= 1
        elif kind == "semi" and depth == 0:
            statements.append(text[start:begin])
            start = end
    statements.append(text[start:])
    return [s.strip() for s in statements if _has_code(s)]


def identifiers(text: str) -> set[str]:
    """Every name a SQL expression may use, lower-cased: its unquoted words (keywords and
    function names too) and its quoted identifiers, not what is in strings or comments.

    Over-inclusive on purpose: it tells which columns an expression cannot be reading.
    """
    return {value.lower() for kind, value, _, _ in _scan(text) if kind in ("word", "ident")}


def folded_names(text: str) -> set[str]:
    """Every name a SQL expression may use, as PostgreSQL folds it: unquoted words lower-cased,
    quoted identifiers as they are (keywords and function names too; over-inclusive)."""
    return {
        value.lower() if kind == "word" else value
        for kind, value, _, _ in _scan(text)
        if kind in ("word", "ident")
    }


def names_column(text: str, column: str) -> bool:
    """Whether SQL expression `text` names `column` of its own table: an unquoted name folded
    to lower case or a quoted one as it is, not one qualified by another relation (`o.name`),
    nor anything in a string or a comment.

    (engine/backfill_sql.py's `_mentions` still asks this with a looser word match that errs on
    yes; it is meant to use this helper once the backfill package settles.)"""
    qualified = False
    for kind, value, _, _ in _scan(text):
        if kind == "dot":
            qualified = True
            continue
        name = value.lower() if kind == "word" else value
        if kind in ("word", "ident") and not qualified and name == column:
            return True
        qualified = False
    return False


def _scan(text: str) -> Iterator[tuple[str, str, int, int]]:
    """(kind, text, start, end) of each word, quoted identifier ("ident", unquoted), `;`, number
    and `.` of `text`, passing over strings, comments and dollar-quoted bodies."""
    pos = 0
    while (m := _TOKEN.search(text, pos)) is not None:
        kind = m.lastgroup
        if kind == "q":
            pos = _end_of_quote(text, m.end(), backslashes=True)
        elif kind == "s":
            pos = _end_of_quote(text, m.end(), backslashes=False)
        elif kind == "d":
            end = text.find('"', m.end())
            while end != -1 and text.startswith('""', end):
                end = text.find('"', end + 2)
            pos = len(text) if end == -1 else end + 1
            yield "ident", text[m.end() : pos - 1].replace('""', '"'), m.start(), pos
        elif kind == "line":
            end = text.find("\n", m.end())
            pos = len(text) if end == -1 else end + 1
        elif kind == "block":
            pos = _end_of_block_comment(text, m.end())
        elif kind == "dollar":
            end = text.find(m.group(), m.end())
            pos = len(text) if end == -1 else end + len(m.group())
        else:  # a word, a ;, a number or a .
            pos = m.end()
            yield str(kind), m.group(), m.start(), pos


def _end_of_quote(text: str, pos: int, *, backslashes: bool) -> int:
    while pos < len(text):
        c = text[pos]
        if backslashes and c == "\\":
            pos += 2
        elif c == "'":
            if text.startswith("''", pos):
                pos += 2
            else:
                return pos + 1
        else:
            pos += 1
    return len(text)


def _end_of_block_comment(text: str, pos: int) -> int:
    nesting = 1
    while nesting and pos < len(text):
        if text.startswith("/*", pos):
            nesting, pos = nesting + 1, pos + 2
        elif text.startswith("*/", pos):
            nesting, pos = nesting - 1, pos + 2
        else:
            pos += 1
    return pos


def _has_code(statement: str) -> bool:
    rest = _LEADING.match(statement)
    return bool(statement[rest.end() if rest else 0 :].strip())
