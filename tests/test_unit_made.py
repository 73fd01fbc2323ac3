"""What a unit proved or built is recorded from its statements (`zdm report` reads it back)."""

from __future__ import annotations

from typing import Any

import pytest

from zdm.ddl import Txn
from zdm.engine.executor import made
from zdm.operations import Context, plan_step
from zdm.plan import AddCheck, CreateIndex, SetNotNull


def _made(step: Any, version: int = 180000) -> list[dict[str, Any]]:
    ctx = Context(server_version=version)
    return [made(a) for a in plan_step(step, ctx) if isinstance(a, Txn) and made(a)]


@pytest.mark.parametrize(
    ("version", "constraint"),
    [(180000, "Mixed Case_v_not_null"), (170000, "Mixed Case_v_zdm_not_null")],
)
def test_set_not_null_records_the_constraint_it_validates(version: int, constraint: str) -> None:
    recorded = _made(SetNotNull(table="Mixed Case", column="v"), version)
    assert {"validated": [["public", "Mixed Case", constraint]]} in recorded


def test_add_check_and_create_index_record_what_they_make() -> None:
    assert _made(AddCheck(table="t", name="v pos", check="v > 0")) == [
        {"validated": [["public", "t", "v pos"]]}
    ]
    assert _made(CreateIndex(table="app.t", name="Odd Idx", columns=["v"])) == [
        {"indexes": [["app", "Odd Idx"]]}
    ]
