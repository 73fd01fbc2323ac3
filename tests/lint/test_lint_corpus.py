"""zdm lint on a labelled corpus: every dangerous file flagged by the expected rules, no safe one."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_corpus import CASES, Case
from lint_support import lint_migration


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert sum(c.dangerous for c in CASES) >= 20
    assert sum(not c.dangerous for c in CASES) >= 15
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, tmp_path: Path) -> None:
    fired = {f.rule for f in lint_migration(tmp_path, case.sql, case.history)}
    assert fired == set(case.rules), (
        f"{case.name}: expected {sorted(case.rules)}, got {sorted(fired)}"
    )
