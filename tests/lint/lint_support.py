"""Helpers of the lint tests: lint SQL text as a migration file, with optional history."""

from __future__ import annotations

from pathlib import Path

from zdm.lint import Finding, lint_paths


def lint_migration(tmp: Path, sql: str, history: str = "") -> list[Finding]:
    """Findings of ``sql`` linted as V002 after ``history`` as V001, in a fresh directory."""
    folder = tmp / f"m{len(list(tmp.iterdir()))}"
    folder.mkdir()
    if history:
        (folder / "V001__history.sql").write_text(history)
    case = folder / "V002__case.sql"
    case.write_text(sql)
    findings, errors, _ = lint_paths([str(folder)])
    assert not errors, [str(e) for e in errors]
    return [f for f in findings if f.file == str(case)]


def lint_plan_text(tmp: Path, text: str) -> list[Finding]:
    path = tmp / f"plan{len(list(tmp.iterdir()))}.yaml"
    path.write_text(text)
    findings, errors, _ = lint_paths([str(path)])
    assert not errors, [str(e) for e in errors]
    return findings
