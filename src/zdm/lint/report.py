"""Findings as text for people, JSON for programs, and GitHub Actions annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from zdm.lint.findings import Finding

FORMATS = ("text", "json", "github")


def write(findings: Sequence[Finding], fmt: str, out: TextIO) -> None:
    if fmt == "json":
        out.write(json.dumps([f.as_json() for f in findings], indent=2) + "\n")
    elif fmt == "github":
        for f in findings:
            out.write(github_annotation(f) + "\n")
    else:
        for f in findings:
            out.write(f"{f.file}:{f.line}:{f.column}: {f.severity.value} [{f.rule}] {f.message}\n")
            out.write(f"    fix: {f.fix}\n")


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
    return f"::{f.severity.value} {props}::{_data(f.message + chr(10) + 'fix: ' + f.fix)}"


def summary(findings: Sequence[Finding], files: int) -> str:
    errors = sum(1 for f in findings if f.severity.value == "error")
    warnings = len(findings) - errors
    if not findings:
        return f"no problems in {files} file{'s' if files != 1 else ''}"
    return (
        f"{len(findings)} problem{'s' if len(findings) != 1 else ''} ({errors} error"
        f"{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}) in "
        f"{files} file{'s' if files != 1 else ''}"
    )
