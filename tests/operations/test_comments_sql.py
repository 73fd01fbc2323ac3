"""set_comment: the exact SQL, the comment it remembers, and its inverse."""

from __future__ import annotations

import pytest
from ops_support import U, ctx, shape

from zdm.ddl import LockMode
from zdm.operations import Irreversible, plan_inverse, plan_memo, plan_step
from zdm.plan import SetComment

SUE = LockMode.SHARE_UPDATE_EXCLUSIVE
T = '"public"."users"'


def test_set_comment_of_a_column_and_of_a_table() -> None:
    step = SetComment(table="users", column='Ph"one', comment="it's a phone")
    assert shape(plan_step(step, ctx())) == [
        U((f"COMMENT ON COLUMN {T}.\"Ph\"\"one\" IS 'it''s a phone'",), SUE, probe=False)
    ]
    table = SetComment(table="app.users", comment=None)
    assert shape(plan_step(table, ctx())) == [
        U(('COMMENT ON TABLE "app"."users" IS NULL',), SUE, probe=False)
    ]


def test_set_comment_remembers_the_comment_it_replaces() -> None:
    step = SetComment(table="users", column="phone", comment="new")
    memo = plan_memo(step, ctx())
    assert memo is not None
    assert memo.as_string(None) == (
        "SELECT jsonb_build_object('comment', (SELECT col_description(attrelid, attnum)"
        f" FROM pg_attribute WHERE attrelid = to_regclass('{T}') AND attname = 'phone'"
        " AND NOT attisdropped))"
    )
    table_memo = plan_memo(SetComment(table="users", comment="t"), ctx())
    assert table_memo is not None
    assert table_memo.as_string(None) == (
        f"SELECT jsonb_build_object('comment', obj_description(to_regclass('{T}'), 'pg_class'))"
    )
    assert shape(plan_inverse(step, ctx(), {"comment": "old"})) == [
        U((f"COMMENT ON COLUMN {T}.\"phone\" IS 'old'",), SUE, probe=False)
    ]
    assert shape(plan_inverse(step, ctx(), {"comment": None})) == [
        U((f'COMMENT ON COLUMN {T}."phone" IS NULL',), SUE, probe=False)
    ]
    with pytest.raises(Irreversible, match=r"set_comment users\.phone: .*no record"):
        plan_inverse(step, ctx())
