"""Migration files: Flyway-style names (`V001__x.sql`, `U001__x.sql`, `R__x.sql`), their versions,
and loading a plan file or a `.sql` migration adopted as a plan — which every verb does.

Names are read case-insensitively, as Flyway and `zdm lint` read them: `v1__x.SQL` is version 1.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from zdm.engine.refusals import MigrationsRefused
from zdm.plan.loader import LoadedPlan, load_plan, parse_plan

if TYPE_CHECKING:
    from zdm.plan.expand import FactReader

_FLYWAY = re.compile(
    r"^(?P<prefix>[VUR])(?P<version>\d+(?:[._]\d+)*)?__(?P<description>.*?)(?:\.(?P<ext>[^.]*))?$",
    re.IGNORECASE,
)
# A number (such as a timestamp), then `_`: `20250108120000_add_phone.yaml`.
_NUMBERED = re.compile(r"^(?P<version>\d+)_(?P<description>[^_].*)\.(?P<ext>ya?ml)$", re.IGNORECASE)
#: Where undo files of `V…sql` migrations may live, relative to the migrations' directory.
UNDO_DIRS = (".", "rollback", "undo", "../rollback", "../undo")
PLAN_EXTS = ("yaml", "yml")

Version = tuple[int, ...]


@dataclass(frozen=True)
class MigrationName:
    """What a migration's file name says."""

    prefix: str
    """`V` (versioned), `U` (undo), `R` (repeatable, or undo with a version), or `` for a
    number-named plan; upper-cased."""
    version: str | None
    """As the name writes it (`001`, `1.2`, `1_2`); None for Flyway's repeatable `R__x`."""
    description: str
    ext: str
    """The extension, lower-cased, without its dot; `` when there is none."""

    @property
    def key(self) -> Version:
        return version_key(self.version or "")

    @property
    def versioned(self) -> bool:
        """A migration `zdm migrate` applies: `V<version>__<name>.{sql,yaml,yml}` or
        `<number>_<name>.{yaml,yml}`."""
        return (
            self.prefix in ("V", "")
            and self.version is not None
            and self.description != ""
            and self.ext in ("sql", *PLAN_EXTS)
        )

    @property
    def undo(self) -> bool:
        """An undo file of a versioned `.sql` migration: `U001__x.sql` or `R001__x.sql`."""
        return (
            self.prefix in ("U", "R")
            and self.version is not None
            and self.description != ""
            and self.ext == "sql"
        )


def migration_name(file_name: str) -> MigrationName | None:
    """The parts of a Flyway-style or number-named file name; None for any other name."""
    m = _FLYWAY.match(file_name)
    if m is not None:
        return MigrationName(
            m["prefix"].upper(), m["version"], m["description"], (m["ext"] or "").lower()
        )
    m = _NUMBERED.match(file_name)
    if m is not None:
        return MigrationName("", m["version"], m["description"], m["ext"].lower())
    return None


def version_key(version: str) -> Version:
    """`"001"` -> (1,); `"1.2"` and `"1_2"` -> (1, 2): versions compare as numbers."""
    return tuple(int(part) for part in re.split(r"[._]", version) if part)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_sql(path: Path) -> bool:
    return path.suffix.lower() == ".sql"


def undo_files(directory: Path) -> dict[Version, Path]:
    """The undo files beside or below a migrations directory (see UNDO_DIRS), by version."""
    found: dict[Version, Path] = {}
    for sub in UNDO_DIRS:
        folder = (directory / sub).resolve()
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            name = migration_name(path.name)
            if name is not None and name.undo and path.is_file():
                found.setdefault(name.key, path)
    return found


def find_undo(path: Path) -> Path | None:
    """The undo file (`U001__*.sql` / `R001__*.sql`) of a `V001__*.sql` migration, if any."""
    name = migration_name(path.name)
    if name is None or name.prefix != "V" or not name.versioned:
        return None
    return undo_files(path.parent).get(name.key)


def adopt_sql(path: Path, undo: Path | None = None) -> LoadedPlan:
    """A Flyway-style `.sql` migration as a plan of one `sql` step (its undo file as `down`)."""
    step: dict[str, Any] = {"up_file": path.name}
    if undo is not None:
        step["down_file"] = os.path.relpath(undo, path.parent)
    text = yaml.safe_dump(
        {
            "version": 1,
            "name": path.stem,
            "description": f"{path.name}, adopted as it is",
            "phases": {"additive": [{"sql": step}]},
        },
        sort_keys=False,
    )
    loaded = parse_plan(text, str(path))
    return replace(loaded, sha256=file_sha256(path))


def load_any(path: str | Path, facts: FactReader | None = None) -> LoadedPlan:
    """A plan file, or a Flyway-style `.sql` migration adopted as a plan; `facts` reads the
    live catalog for changes that copy a column."""
    path = Path(path)
    if is_sql(path):
        if not path.is_file():
            raise MigrationsRefused(f"cannot read {path}: no such file")
        return adopt_sql(path, find_undo(path))
    return load_plan(path, facts)
