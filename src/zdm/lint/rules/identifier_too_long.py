"""identifier-too-long: a name longer than 63 bytes, which PostgreSQL silently truncates.

PostgreSQL keeps the first 63 bytes of an identifier (with only a NOTICE), so the object gets
another name than the migration says, and two long names that share their first 63 bytes
become the same name. The parser has already truncated the names it hands over, so this rule
reads the identifiers as written, from the scanner's tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement
from zdm.plan import MAX_IDENTIFIER_BYTES

_LONG = "orders_customer_id_created_at_status_partial_index_for_dashboard_v2"

BAD = (
    Example(f"CREATE INDEX CONCURRENTLY {_LONG} ON orders (customer_id, created_at);"),
    Example('CREATE TABLE "' + "é" * 40 + '" (id bigint);'),
)
GOOD = (Example("CREATE INDEX CONCURRENTLY orders_customer_created_idx ON orders (customer_id);"),)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    seen: set[str] = set()
    for ident in stmt.identifiers:
        size = len(ident.name.encode("utf-8", "surrogatepass"))
        if size <= MAX_IDENTIFIER_BYTES or ident.name in seen:
            continue
        seen.add(ident.name)
        cut = ident.name.encode("utf-8", "surrogatepass")[:MAX_IDENTIFIER_BYTES]
        truncated = cut.decode("utf-8", "ignore")
        yield Problem(
            f"the name {ident.name} is {size} bytes; PostgreSQL silently keeps the first "
            f"{MAX_IDENTIFIER_BYTES}, so the object is called {truncated}, and another long "
            "name with the same start would collide with it",
            f"shorten it to at most {MAX_IDENTIFIER_BYTES} bytes",
            at=ident.offset,
        )


RULE = Rule(
    "identifier-too-long",
    Severity.error,
    "identifier longer than 63 bytes",
    check,
    BAD,
    GOOD,
)
