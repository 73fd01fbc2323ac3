"""vacuum-full: ``VACUUM FULL`` rewrites a table under ACCESS EXCLUSIVE.

It copies every live row into a new file and rebuilds all indexes; nothing can read or write
the table meanwhile. Plain ``VACUUM`` (SHARE UPDATE EXCLUSIVE) makes the space reusable without
blocking; to shrink a table online use pg_repack or pg_squeeze.
"""

from __future__ import annotations

from collections.abc import Iterator

from pglast import ast

from zdm.lint.analysis import locks, option_names
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (Example("VACUUM FULL users;"), Example("VACUUM (FULL, ANALYZE) orders;"))
GOOD = (Example("VACUUM (ANALYZE) users;"), Example("VACUUM users;"))


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    node = stmt.node
    if not isinstance(node, ast.VacuumStmt) or "full" not in option_names(node.options):
        return
    tables = [lock.table for lock in locks(node) if not ctx.is_new(lock.table)]
    if tables:
        yield Problem(
            f"VACUUM FULL rewrites {', '.join(tables)} and rebuilds every index while holding "
            "an ACCESS EXCLUSIVE lock: every read and write waits for the whole rewrite",
            "plain VACUUM makes dead space reusable without blocking anyone; to give space "
            "back to the operating system online, use pg_repack or pg_squeeze (zdm has no step "
            "for it)",
        )


RULE = Rule("vacuum-full", Severity.error, "VACUUM FULL", check, BAD, GOOD)
