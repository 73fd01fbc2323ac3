"""The change rules against their own examples, located at the change's field, suppressible."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import lint_plan_text

from zdm.lint.change_rules import CHANGE_RULES, ChangeRule
from zdm.lint.plan_rules import PLAN_RULES
from zdm.lint.rules import RULES

EXAMPLES = [
    pytest.param(rule, text, bad, id=f"{rule.id}-{'bad' if bad else 'good'}{index}")
    for rule in CHANGE_RULES
    for bad, examples in ((True, rule.bad), (False, rule.good))
    for index, text in enumerate(examples)
]


@pytest.mark.parametrize(("rule", "text", "bad"), EXAMPLES)
def test_change_rule_examples(rule: ChangeRule, text: str, bad: bool, tmp_path: Path) -> None:
    fired = [f for f in lint_plan_text(tmp_path, text) if f.rule == rule.id]
    assert bool(fired) is bad, fired
    for finding in fired:
        assert finding.message and finding.fix


def test_rule_ids_are_unique() -> None:
    ids = [r.id for r in RULES] + [r.id for r in PLAN_RULES] + [r.id for r in CHANGE_RULES]
    assert len(ids) == len(set(ids))


def test_findings_point_at_the_field_and_can_be_ignored(tmp_path: Path) -> None:
    text = """\
version: 1
changes:
  - alter_column:
      table: t
      column: c
      type: numeric(10,2)
      down: c::integer
  # zdm-lint: ignore drop-column-without-down
  - drop_column: {table: t, column: d}
"""
    findings = lint_plan_text(tmp_path, text)
    assert [(f.rule, f.line, f.column) for f in findings] == [("change-type-without-up", 6, 13)]
