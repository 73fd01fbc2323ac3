"""Plan errors: every problem is reported with its file, line, column and path in the plan."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PlanIssue:
    """One problem in a plan file, located so that an editor can jump to it."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where, self.path, self.message] if self.path else [where, self.message]
        return ": ".join(parts)


class PlanError(Exception):
    """A plan file that cannot be used; carries every issue found, not only the first."""

    def __init__(self, issues: Iterable[PlanIssue]) -> None:
        self.issues: list[PlanIssue] = list(issues)
        # The list is the only argument, so the exception survives pickling (multiprocessing).
        super().__init__(self.issues)

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


class PlanValueError(ValueError):
    """A validator's complaint about one field of the model it checks.

    Model-level validators raise it with ``field`` so the issue is reported at that field's
    path and line rather than at the whole mapping.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def describe(value: Any) -> str:
    """Name a YAML value's kind (and a short form of it) for "expected X, got Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}" if value else "an empty string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a value of type {type(value).__name__}"
