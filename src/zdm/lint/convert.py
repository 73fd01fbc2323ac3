"""`zdm convert`: turn a .sql migration into a zdm plan that makes the same change safely.

Each statement becomes the steps that reach the same schema without holding a lock that stalls
traffic: indexes are built concurrently, constraints added NOT VALID and validated apart,
NOT NULL proven by a validated check, volatile defaults and serial columns filled by a batched
backfill, rewriting type changes done through a new column kept in step by a dual_write trigger
and swapped in at cleanup. Destructive statements (drops, renames) move to the cleanup phase.

What cannot be decided from the SQL alone is marked in the plan with a ``# DECIDE:`` comment;
statements zdm has no safe recipe for are kept as ``sql`` steps with a comment saying why. The
plan is checked to load before it is written.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from zdm.lint.files import LintError, read_text
from zdm.lint.source import PglastMissing, SqlSyntaxError, require_pglast
from zdm.plan import MAX_IDENTIFIER_BYTES, PHASES, PlanError, parse_plan
from zdm.plan.expand import offline_facts

EXIT_OK, EXIT_ERROR = 0, 2

# Order inside cleanup: enforce (indexes, constraints, NOT NULL) before removing old shapes.
RANK_BUILD, RANK_ENFORCE, RANK_REMOVE = 0, 1, 2


@dataclass
class Step:
    """One step of the plan being written, with the comments printed above it."""

    phase: str
    kind: str
    fields: dict[str, Any]
    comments: list[str] = field(default_factory=list)
    rank: int = RANK_ENFORCE
    movable_table: str | None = None
    """Index/constraint steps on this table move after its backfill, into cleanup."""
    literal: str | None = None
    """For sql steps: the key whose value is printed as a literal block."""


@dataclass
class Converted:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decisions: int = 0


class ConvertError(Exception):
    """The input cannot be converted (unreadable, not SQL)."""


def convert_command(
    sql_file: Path, output: Path | None, out: TextIO, stdin: str | None = None
) -> int:
    """Write the plan for ``sql_file`` (``-``: the SQL ``stdin``) to ``output`` (or ``out``);
    returns the exit code. A pgroll migration (JSON or YAML) converts too, and a folder of
    them converts into a folder."""
    from zdm.lint.pgroll import PgrollError

    if stdin is None and sql_file.is_dir():
        return _convert_folder(sql_file, output)
    try:
        text = convert_file(sql_file, stdin)
    except (LintError, ConvertError, PgrollError) as error:
        sys.stderr.write(f"zdm convert: {error}\n")
        return EXIT_ERROR
    except Exception as error:  # a converter bug: say so instead of printing a traceback
        sys.stderr.write(f"zdm convert: internal error, please report it: {error!r}\n")
        return EXIT_ERROR
    if output is None:
        out.write(text)
        return EXIT_OK
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        sys.stderr.write(f"zdm convert: cannot write {output}: {error.strerror or error}\n")
        return EXIT_ERROR
    decisions = text.count("# DECIDE:")
    sys.stderr.write(
        f"wrote {output}"
        + (f"; {decisions} place(s) marked DECIDE need a person" if decisions else "")
        + "\n"
    )
    return EXIT_OK


def _convert_folder(folder: Path, output: Path | None) -> int:
    """Every pgroll migration of `folder`, in name order, into the folder `output`."""
    from zdm.lint.pgroll import PgrollError, convert_pgroll, migration_files, output_name

    if output is None:
        sys.stderr.write(f"zdm convert: {folder} is a folder: give --output FOLDER\n")
        return EXIT_ERROR
    files = migration_files(folder)
    if not files:
        sys.stderr.write(f"zdm convert: {folder}: no .json, .yaml or .yml migrations\n")
        return EXIT_ERROR
    plans = []
    try:
        for position, path in enumerate(files, 1):
            name = output_name(path, position)
            plans.append((name, convert_pgroll(read_text(path), str(path), name[:-5])))
    except (LintError, PgrollError) as error:
        sys.stderr.write(f"zdm convert: {error}\n")
        return EXIT_ERROR
    try:
        output.mkdir(parents=True, exist_ok=True)
        for name, text in plans:
            (output / name).write_text(text, encoding="utf-8")
    except OSError as error:
        sys.stderr.write(f"zdm convert: cannot write {output}: {error.strerror or error}\n")
        return EXIT_ERROR
    sys.stderr.write(f"wrote {len(plans)} plan(s) to {output}\n")
    return EXIT_OK


def convert_file(sql_file: Path, stdin: str | None = None) -> str:
    """The plan YAML for a .sql file, a pgroll migration (or ``stdin``); raises LintError,
    ConvertError or PgrollError."""
    from zdm.lint.pgroll import convert_pgroll, is_pgroll

    file = str(sql_file) if stdin is None else "<stdin>"
    text = read_text(sql_file) if stdin is None else stdin
    if is_pgroll(text):
        return convert_pgroll(text, file, sql_file.stem if stdin is None else "converted")
    try:
        require_pglast()
    except PglastMissing as error:
        raise ConvertError(str(error)) from None
    from zdm.lint.source import parse_source

    try:
        source = parse_source(text)
    except SqlSyntaxError as error:
        line = column = None
        if error.offset is not None:
            line = text.count("\n", 0, error.offset) + 1
            column = error.offset - (text.rfind("\n", 0, error.offset) + 1) + 1
        raise LintError(file, f"cannot parse the SQL: {error.message}", line, column) from None
    if not source.statements:
        raise ConvertError(f"{file}: no SQL statements to convert")
    if stdin is not None:
        return convert_sql(text, "converted", "stdin")
    return convert_sql(text, sql_file.stem, sql_file.name)


def convert_sql(text: str, name: str, origin: str) -> str:
    """The plan YAML for SQL text (pglast must be installed)."""
    from zdm.lint.convert_steps import Converter
    from zdm.lint.source import parse_source

    source = parse_source(text)
    converter = Converter(source)
    result = converter.run()
    plan = render(result, name or "converted", origin)
    try:
        # A change that copies a column is expanded against the database when it runs.
        parse_plan(plan, f"{name or 'converted'}.yaml", facts=offline_facts)
    except PlanError as error:  # pragma: no cover - a bug in the converter
        raise ConvertError(f"the converted plan does not load (a zdm bug):\n{error}") from None
    return plan


# --- YAML output ------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Quote what a YAML 1.2 reader could take for something else (zdm reads the core schema).
    style = None
    if value and (value[0] in "0123456789+-." or value.lower() in ("null", "true", "false", "~")):
        style = "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _flow(value: Any) -> str:
    text = yaml.dump(
        value,
        Dumper=_Dumper,
        default_flow_style=True,
        sort_keys=False,
        width=1_000_000,
        allow_unicode=True,
    )
    return text.strip().removesuffix("...").strip()


def _render_step(step: Step) -> list[str]:
    lines = [f"    # {c}" if c else "    #" for c in step.comments]
    if step.literal is None:
        lines.append(f"    - {step.kind}: {_flow(step.fields)}")
        return lines
    lines.append(f"    - {step.kind}:")
    for key, value in step.fields.items():
        if key == step.literal:
            lines.append(f"        {key}: |")
            lines.extend(
                f"          {row}" if row.strip() else "" for row in str(value).splitlines()
            )
        else:
            lines.append(f"        {key}: {_flow(value)}")
    return lines


def _place(result: Converted) -> list[Step]:
    """Index and constraint steps on a table that is backfilled go after its backfill."""
    backfilled = {s.fields.get("table") for s in result.steps if s.kind == "backfill"}
    for step in result.steps:
        if step.phase == "changes":
            continue
        if step.movable_table is not None and step.movable_table in backfilled:
            step.phase = "cleanup"
            step.rank = RANK_BUILD
    order = {phase: index for index, phase in enumerate(PHASES)}
    return sorted(
        (step for step in result.steps if step.phase != "changes"),
        key=lambda s: (order[s.phase], s.rank if s.phase == "cleanup" else 0),
    )


def render(result: Converted, name: str, origin: str) -> str:
    steps = _place(result)
    lines = [
        f"# Written by `zdm convert {origin}`: the same change as the SQL file, made without",
        "# holding locks that stall traffic. Statements are regrouped into the five phases;",
        "# read the plan before you run it, in particular every line marked DECIDE.",
        "version: 1",
        f"name: {_flow(name)}",
        f"description: {_flow('Converted from ' + origin)}",
        "# gates: [cleanup]  # stop before cleanup until the application no longer uses the old shape",
    ]
    for note in result.notes:
        lines.append(f"# {note}")
    changes = [step for step in result.steps if step.phase == "changes"]
    if changes:
        lines.append("changes:")
        for step in changes:
            lines.extend(row[2:] for row in _render_step(step))
        if not steps:
            return "\n".join(lines) + "\n"
    lines.append("phases:")
    current = None
    for step in steps:
        if step.phase != current:
            lines.append(f"  {step.phase}:")
            current = step.phase
        lines.extend(_render_step(step))
    if not steps:
        lines.append("  additive: []")
    return "\n".join(lines) + "\n"


def identifier(name: str) -> str:
    """A column or table name as SQL text: bare when it may be, else double-quoted."""
    from pglast.keywords import RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

    if (
        re.fullmatch(r"[a-z_][a-z0-9_$]*", name)
        and name not in RESERVED_KEYWORDS | TYPE_FUNC_NAME_KEYWORDS
    ):
        return name
    return '"' + name.replace('"', '""') + '"'


def truncate(name: str) -> str:
    return name.encode()[:MAX_IDENTIFIER_BYTES].decode(errors="ignore")
