"""Findings as text for people, JSON for programs, GitHub Actions annotations and SARIF 2.1.0
(for code scanning: GitHub's upload-sarif action, GitLab, IDEs)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from zdm.lint.findings import Finding

FORMATS = ("text", "json", "github", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def write(findings: Sequence[Finding], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps([f.as_json() for f in findings], indent=2) + "\n")
    elif fmt == "sarif":
        out.write(json.dumps(sarif(findings), indent=2) + "\n")
    elif fmt == "github":
        for f in findings:
            out.write(github_annotation(f) + "\n")
    else:
        for f in findings:
            out.write(f"{f.file}:{f.line}:{f.column}: {f.severity.value} [{f.rule}] {f.message}\n")
            out.write(f"    fix: {f.fix}\n")


def sarif(findings: Sequence[Finding]) -> dict[str, object]:
    """One SARIF run: the rules that found something, and one result per finding."""
    import zdm

    rules = sorted({f.rule for f in findings})
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "zdm lint",
                        "version": zdm.__version__,
                        "rules": [
                            {"id": rule, "shortDescription": {"text": _summary(rule)}}
                            for rule in rules
                        ],
                    }
                },
                "results": [
                    {
                        "ruleId": f.rule,
                        "ruleIndex": rules.index(f.rule),
                        "level": f.severity.value,
                        "message": {"text": f"{f.message}\nfix: {f.fix}"},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {"uri": f.file.replace("\\", "/")},
                                    "region": {"startLine": f.line, "startColumn": f.column},
                                }
                            }
                        ],
                    }
                    for f in findings
                ],
            }
        ],
    }


def _summary(rule: str) -> str:
    from zdm.lint.plan_rules import PLAN_RULES

    for plan_rule in PLAN_RULES:
        if plan_rule.id == rule:
            return plan_rule.summary
    try:
        from zdm.lint.rules import RULES_BY_ID
    except ImportError:
        return rule
    return RULES_BY_ID[rule].summary if rule in RULES_BY_ID else rule


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotation(f: Finding) -> str:
    """``::error file=…,line=…,col=…,title=…::message`` (workflow command syntax, escaped)."""
    props = ",".join(
        [
            f"file={_property(f.file)}",
            f"line={f.line}",
            f"col={f.column}",
            f"title={_property(f'zdm lint {f.rule}')}",
        ]
    )
    level = "notice" if f.severity.value == "note" else f.severity.value
    return f"::{level} {props}::{_data(f.message + chr(10) + 'fix: ' + f.fix)}"


def summary(findings: Sequence[Finding], files: int) -> str:
    errors = sum(1 for f in findings if f.severity.value == "error")
    notes = sum(1 for f in findings if f.severity.value == "note")
    warnings = len(findings) - errors - notes
    if not findings:
        return f"no problems in {files} file{'s' if files != 1 else ''}"
    if notes:
        plural = "s" if notes != 1 else ""
        rest = summary([f for f in findings if f.severity.value != "note"], files)
        return f"{rest}; {notes} note{plural} (small live tables)"
    return (
        f"{len(findings)} problem{'s' if len(findings) != 1 else ''} ({errors} error"
        f"{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}) in "
        f"{files} file{'s' if files != 1 else ''}"
    )
