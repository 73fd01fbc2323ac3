"""SQL files written for psql or Flyway, made fit for zdm's own transaction around a `sql` step.

Such a file often wraps itself in `BEGIN; … COMMIT;`. The executor already runs a transactional
`sql` step in one transaction, with its timeouts and the step's bookkeeping; the file's COMMIT
would end that transaction early and leave the bookkeeping outside it. So the outer pair is
taken off, and only that pair: anything else in the file runs exactly as written.
"""

from __future__ import annotations

import re

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
