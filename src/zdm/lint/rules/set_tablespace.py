"""set-tablespace: ``ALTER TABLE ... SET TABLESPACE`` copies the table under ACCESS EXCLUSIVE.

Moving a table (or index) to another tablespace copies every data file while nothing can read
or write it. pg_repack can move a table online (``--tablespace``).
"""

from __future__ import annotations

from collections.abc import Iterator

from zdm.lint.analysis import alter_commands, table_name
from zdm.lint.context import Ctx
from zdm.lint.findings import Example, Problem, Rule, Severity
from zdm.lint.source import SqlStatement

BAD = (
    Example("ALTER TABLE events SET TABLESPACE archive_disk;"),
    Example("ALTER INDEX events_pkey SET TABLESPACE fast_disk;"),
)
GOOD = (Example("ALTER TABLE events SET (fillfactor = 90);"),)


def check(stmt: SqlStatement, ctx: Ctx) -> Iterator[Problem]:
    for rel, cmd, kind in alter_commands(stmt.node):
        if kind != "AT_SetTableSpace" or ctx.is_new(rel):
            continue
        name = table_name(rel)
        yield Problem(
            f"SET TABLESPACE {cmd.name} copies every data file of {name} while holding an "
            "ACCESS EXCLUSIVE lock: every read and write waits for the whole copy",
            "move it online with pg_repack --tablespace, or create new objects in the "
            "tablespace and migrate through them; zdm has no step for it",
        )


RULE = Rule("set-tablespace", Severity.error, "ALTER TABLE ... SET TABLESPACE", check, BAD, GOOD)
