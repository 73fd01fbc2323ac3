"""Which files `zdm lint` reads, in which order, and how their tool runs them.

A directory is searched recursively for ``.sql`` files and plan files (``.yaml``/``.yml`` with
``phases``; other YAML such as CI configuration is skipped). Files are read in migration order
(Flyway ``V<version>__name.sql`` by version, others by name with numbers compared as numbers),
so that earlier migrations tell later ones what their columns are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zdm.plan.migration_files import migration_name

if TYPE_CHECKING:  # context needs pglast, which plan linting does without
    from zdm.lint.context import Wrap

PLAN_SUFFIXES = (".yaml", ".yml")


class LintError(Exception):
    """A file that cannot be linted (unreadable, not SQL, not a plan): exit code 2."""

    def __init__(self, file: str, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.file = file
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


#: The name `zdm lint -` gives SQL read from standard input.
STDIN = "<stdin>"


@dataclass(frozen=True)
class LintFile:
    path: Path
    plan: bool
    text: str | None = None
    """The SQL itself, for standard input."""

    @property
    def stdin(self) -> bool:
        return self.text is not None

    @property
    def undo(self) -> bool:
        """A Flyway undo migration: it reverses history instead of adding to it."""
        name = migration_name(self.path.name)
        return name is not None and name.prefix == "U"


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in re.split(r"(\d+)", text)
        if part
    )


def migration_order(path: Path, root: Path) -> tuple[object, ...]:
    """Versioned files (Flyway ``V2__x``, or a leading number) by version, then the rest
    (repeatable, undo, plans) by natural name."""
    name = _natural(str(path.relative_to(root)))
    flyway = migration_name(path.name)
    if flyway is not None and flyway.prefix:
        return ({"V": 0, "R": 1, "U": 2}[flyway.prefix], flyway.key, name)
    number = re.match(r"\d+", path.name)
    if number:
        return (0, (int(number.group()),), name)
    return (1, (), name)


def _looks_like_plan(path: Path) -> bool:
    from zdm.plan.yamlsource import YamlSyntaxError, read_yaml

    try:
        data = read_yaml(path.read_text(encoding="utf-8")).data
    except (OSError, UnicodeDecodeError, YamlSyntaxError):
        return False
    return isinstance(data, dict) and ("phases" in data or "changes" in data)


def discover(paths: list[str], stdin: str | None = None) -> tuple[list[LintFile], list[LintError]]:
    """The files to lint, in order, and the paths that do not exist; ``-`` is ``stdin`` (SQL)."""
    files: list[LintFile] = []
    errors: list[LintError] = []
    for text in paths:
        path = Path(text)
        if text == "-":
            files.append(LintFile(Path(STDIN), False, stdin or ""))
        elif path.is_dir():
            found = [
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in (".sql", *PLAN_SUFFIXES)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
            for p in sorted(found, key=lambda p: migration_order(p, path)):
                if p.suffix.lower() in PLAN_SUFFIXES:
                    if _looks_like_plan(p):
                        files.append(LintFile(p, True))
                else:
                    files.append(LintFile(p, False))
        elif path.exists():
            files.append(LintFile(path, path.suffix.lower() in PLAN_SUFFIXES))
        else:
            errors.append(LintError(text, "no such file or directory"))
    return files, errors


def wrap_of(item: LintFile, assume_in_transaction: bool | None = None) -> Wrap:
    """How the file's statements are grouped into transactions.

    ``assume_in_transaction`` (``--[no-]assume-in-transaction``) decides when given. Else a file
    runs in one transaction, as migration tools run it, unless told not to (Flyway: a .conf
    file with ``executeInTransaction=false``); standard input runs as written (psql, and the
    SQL that Alembic and Django print carries its own BEGIN and COMMIT).
    """
    from zdm.lint.context import Wrap

    if assume_in_transaction is not None:
        return Wrap.FORCED if assume_in_transaction else Wrap.NONE
    if item.stdin:
        return Wrap.NONE
    path = item.path
    conf = path.with_name(path.name + ".conf")
    if conf.is_file():
        try:
            lines = conf.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        for line in lines:
            key, _, value = line.partition("=")
            if key.strip() == "executeInTransaction" and value.strip().lower() == "false":
                return Wrap.NONE
    return Wrap.FILE


def read_text(path: Path) -> str:
    """A file's text; LintError (with the line) when it cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise LintError(str(path), f"cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise LintError(
            str(path), f"not UTF-8 text (byte {data[error.start]:#04x})", line
        ) from None
