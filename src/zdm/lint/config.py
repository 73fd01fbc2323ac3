"""`zdm lint` settings from ``.zdm.toml`` (table ``[lint]``) or ``pyproject.toml`` (table
``[tool.zdm.lint]``), found in the current directory or the nearest parent that has one;
command-line options override them.

    [tool.zdm.lint]
    exclude = ["prefer-jsonb", "missing-lock-timeout"]
    assume-in-transaction = false
    pg-version = 15
    format = "github"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEYS = ("exclude", "assume-in-transaction", "pg-version", "format")


class ConfigError(Exception):
    """The configuration file is not valid TOML or has a wrong key or value (exit 2)."""


@dataclass(frozen=True)
class LintConfig:
    file: Path | None = None
    exclude: tuple[str, ...] = ()
    assume_in_transaction: bool | None = None
    pg_version: int | None = None
    format: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def find_config(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest ``.zdm.toml`` or ``pyproject.toml`` with a zdm lint table, and that table."""
    for folder in (start.resolve(), *start.resolve().parents):
        for name, keys in ((".zdm.toml", ("lint",)), ("pyproject.toml", ("tool", "zdm", "lint"))):
            path = folder / name
            if not path.is_file():
                continue
            try:
                data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
                raise ConfigError(f"{path}: cannot read: {error}") from None
            for key in keys:
                data = data.get(key) if isinstance(data, dict) else None
            if data is not None:
                if not isinstance(data, dict):
                    raise ConfigError(f"{path}: [{'.'.join(keys)}] must be a table")
                return path, data
    return None


def load_config(start: Path) -> LintConfig:
    found = find_config(start)
    if found is None:
        return LintConfig()
    path, table = found
    where = f"{path}: [{'lint' if path.name == '.zdm.toml' else 'tool.zdm.lint'}]"
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(KEYS)}")
    exclude = table.get("exclude", [])
    if not (isinstance(exclude, list) and all(isinstance(r, str) for r in exclude)):
        raise ConfigError(f"{where}: exclude must be a list of rule names")
    assume = table.get("assume-in-transaction")
    if assume is not None and not isinstance(assume, bool):
        raise ConfigError(f"{where}: assume-in-transaction must be true or false")
    version = table.get("pg-version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise ConfigError(f"{where}: pg-version must be a major version number such as 15")
    fmt = table.get("format")
    if fmt is not None and not isinstance(fmt, str):
        raise ConfigError(f"{where}: format must be a string")
    return LintConfig(path, tuple(exclude), assume, version, fmt)
