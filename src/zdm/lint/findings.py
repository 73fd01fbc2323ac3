"""What the linter reports: findings, their severity, and the rules that produce them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zdm.lint.context import Ctx
    from zdm.lint.source import SqlStatement


class Severity(StrEnum):
    """``error``: the statement stalls traffic, rewrites a table or fails; ``warning``: it may;
    ``note``: it would, but the live table is small (``zdm lint --dsn``); notes do not fail."""

    error = "error"
    warning = "warning"
    note = "note"


@dataclass(frozen=True)
class Finding:
    """One problem at one place in one file."""

    rule: str
    severity: Severity
    file: str
    line: int
    column: int
    message: str
    """What goes wrong: the lock taken, what it blocks, whether it scans or rewrites the table."""
    fix: str
    """The safe alternative, with the zdm step that does it."""

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Problem:
    """What a rule's check reports about one statement, before it is given a file position."""

    message: str
    fix: str
    at: int | None = None
    """Character offset in the source where the problem is, when more precise than the statement."""
    severity: Severity | None = None
    """When this problem is less (or more) certain than the rule's usual severity."""


@dataclass(frozen=True)
class Example:
    """A migration file for a rule's documentation and tests.

    ``history`` is SQL that ran in earlier migrations (a table and its column types), for rules
    that depend on what is already in the database.
    """

    sql: str
    history: str = ""


Check = Callable[["SqlStatement", "Ctx"], Iterable[Problem]]


@dataclass(frozen=True)
class Rule:
    """A SQL rule: its id (used in suppression comments), severity, check and examples."""

    id: str
    severity: Severity
    summary: str
    check: Check
    bad: tuple[Example, ...]
    """Files in which the rule must report something."""
    good: tuple[Example, ...]
    """Files in which the rule must stay silent (other rules may speak)."""
