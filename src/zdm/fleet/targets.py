"""The targets file: one DSN a line, or `!command` lines whose output lines are DSNs."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from zdm.engine.session import redact


class TargetsError(Exception):
    """A targets file that cannot be read; the message names file and line."""


@dataclass(frozen=True)
class Target:
    dsn: str
    label: str
    """The DSN redacted: what logs, the workflow state and the status table show."""
    host: str
    """host:port, the key of the per-host concurrency limit."""


def load_targets(path: str | Path) -> list[Target]:
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise TargetsError(f"{path}: cannot read targets file: {e.strerror}") from None
    out: list[Target] = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{n}"
        dsns = _command_output(line[1:], where) if line.startswith("!") else [line]
        for dsn in dsns:
            out.append(_target(dsn, where))
    if not out:
        raise TargetsError(f"{path}: no targets listed")
    labels = [t.label for t in out]
    dup = next((label for label in labels if labels.count(label) > 1), None)
    if dup is not None:
        raise TargetsError(f"{path}: target {dup} is listed twice")
    return out


def _command_output(command: str, where: str) -> list[str]:
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TargetsError(f"{where}: targets command failed: {e}") from None
    if done.returncode != 0:
        raise TargetsError(f"{where}: targets command exited with {done.returncode}")
    return [s.strip() for s in done.stdout.splitlines() if s.strip() and not s.startswith("#")]


def _target(dsn: str, where: str) -> Target:
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise TargetsError(f"{where}: not a connection string: {redact(dsn)}") from None
    host = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    return Target(dsn=dsn, label=redact(dsn), host=host)
