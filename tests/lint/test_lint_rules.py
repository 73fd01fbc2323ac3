"""Every rule against its own good and bad examples."""

from __future__ import annotations

from pathlib import Path

import pytest
from lint_support import lint_migration, lint_plan_text

from zdm.lint.findings import Example, Rule
from zdm.lint.plan_rules import PLAN_RULES, PlanRule
from zdm.lint.rules import RULES, RULES_BY_ID

SQL_EXAMPLES = [
    pytest.param(rule, example, bad, id=f"{rule.id}-{'bad' if bad else 'good'}{index}")
    for rule in RULES
    for bad, examples in ((True, rule.bad), (False, rule.good))
    for index, example in enumerate(examples)
]

PLAN_EXAMPLES = [
    pytest.param(rule, text, bad, id=f"{rule.id}-{'bad' if bad else 'good'}{index}")
    for rule in PLAN_RULES
    for bad, examples in ((True, rule.bad), (False, rule.good))
    for index, text in enumerate(examples)
]


@pytest.mark.parametrize(("rule", "example", "bad"), SQL_EXAMPLES)
def test_sql_rule_examples(rule: Rule, example: Example, bad: bool, tmp_path: Path) -> None:
    findings = lint_migration(tmp_path, example.sql, example.history)
    fired = [f for f in findings if f.rule == rule.id]
    if bad:
        assert fired, f"{rule.id} stayed silent on:\n{example.sql}"
        for finding in fired:
            assert finding.message and finding.fix
    else:
        assert not fired, f"{rule.id} fired on:\n{example.sql}\n{fired[0].message}"


@pytest.mark.parametrize(("rule", "text", "bad"), PLAN_EXAMPLES)
def test_plan_rule_examples(rule: PlanRule, text: str, bad: bool, tmp_path: Path) -> None:
    fired = [f for f in lint_plan_text(tmp_path, text) if f.rule == rule.id]
    assert bool(fired) is bad, fired


def test_every_rule_has_examples_and_a_docstring() -> None:
    import importlib

    ids = [rule.id for rule in RULES] + [rule.id for rule in PLAN_RULES]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        assert rule.bad and rule.good, rule.id
        module = importlib.import_module(rule.check.__module__)
        assert module.__doc__ and module.__doc__.startswith(rule.id), rule.id
    assert set(RULES_BY_ID) == {rule.id for rule in RULES}
    for plan_rule in PLAN_RULES:
        assert plan_rule.bad and plan_rule.good, plan_rule.id


def test_every_rule_is_listed_in_the_docs_with_its_severity() -> None:
    from zdm.lint.change_rules import CHANGE_RULES

    docs = (Path(__file__).parent.parent.parent / "docs" / "lint.md").read_text()
    for rule in (*RULES, *PLAN_RULES, *CHANGE_RULES):
        assert f"| `{rule.id}` | {rule.severity.value} | {rule.summary} |" in docs, rule.id
