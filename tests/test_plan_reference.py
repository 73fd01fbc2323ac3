"""docs/plan-reference.md is checked against the plan models, so it cannot drift.

Every top-level key, setting, step kind and field (nested ones as ``column.name`` or
``columns[].name``) must have a row with the model's default; every step kind a section with a
lock line and a YAML example that validates. A failure says exactly which row or section to add,
change or remove, and where.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from zdm.plan import PHASES, Plan, Settings, parse_plan
from zdm.plan.changes import CHANGE_KINDS
from zdm.plan.expand import offline_facts
from zdm.plan.steps import STEP_KINDS, PlanModel, StepSpec

DOC = Path(__file__).parent.parent / "docs" / "plan-reference.md"
DOC_NAME = "docs/plan-reference.md"
STEP_KINDS_HEADING = "Step kinds"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([^|]*?)\s*\|")


# --- what the models say -------------------------------------------------------------------


def _default(info: FieldInfo) -> str:
    """The default as the doc writes it: required, — (not set), or the plan's spelling."""
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if isinstance(value, BaseModel):
        return "(all defaults)"
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]  # type: ignore[valid-type]
    dumped = TypeAdapter(annotation).dump_python(value, mode="json")
    return dumped if isinstance(dumped, str) else json.dumps(dumped)


def _nested(annotation: Any, suffix: str = "") -> list[tuple[type[PlanModel], str]]:
    """The plan models inside an optional, union or list annotation, with ``[]`` for a list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [found for arg in typing.get_args(annotation) for found in _nested(arg, suffix)]
    if origin is list:
        return _nested(typing.get_args(annotation)[0], "[]")
    if typing.get_origin(annotation) is Annotated:
        return _nested(typing.get_args(annotation)[0], suffix)
    if isinstance(annotation, type) and issubclass(annotation, PlanModel):
        return [(annotation, suffix)]
    return []


def model_rows(
    model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()
) -> dict[str, str]:
    """Field path -> default, for ``model`` and the plan models inside it (not under ``skip``)."""
    rows: dict[str, str] = {}
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name)
        rows[key] = _default(info)
        if key in skip:
            continue
        for inner, suffix in _nested(info.annotation):
            rows.update(model_rows(inner, f"{key}{suffix}."))
    return rows


# --- what the doc says ---------------------------------------------------------------------


def sections(text: str, level: str) -> dict[str, str]:
    """Heading text -> body, for headings of ``level`` (``##`` or ``###``)."""
    parts = re.split(rf"^{level} (.+)$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def doc_rows(body: str) -> dict[str, str]:
    """First-column name -> default column of the section's tables (backticks dropped)."""
    rows: dict[str, str] = {}
    for line in body.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = match.group(2).replace("`", "").strip()
    return rows


def yaml_blocks(body: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)


def _row_hint(key: str, default: str) -> str:
    shown = default if default in ("required", "—", "(all defaults)") else f"`{default}`"
    return f"| `{key}` | {shown} | <what it does> |"


def compare(where: str, expected: dict[str, str], documented: dict[str, str]) -> list[str]:
    """Problems, each saying what to add, change or remove in which section of the doc."""
    problems = []
    for key, default in expected.items():
        if key not in documented:
            problems.append(
                f"{DOC_NAME}, section {where}: no row for `{key}`; add to its table: "
                + _row_hint(key, default)
            )
        elif documented[key] != default:
            problems.append(
                f"{DOC_NAME}, section {where}: `{key}` has default {documented[key]!r} in the "
                f"doc but {default!r} in the model; write: " + _row_hint(key, default)
            )
    for key in documented.keys() - expected.keys():
        problems.append(
            f"{DOC_NAME}, section {where}: row `{key}` names no field of the model; remove it"
            " (or fix its name)"
        )
    return problems


def _loads_as_plan(steps_yaml: str, phase: str) -> str | None:
    steps = yaml.safe_load(steps_yaml)
    plan = yaml.safe_dump({"version": 1, "name": "example", "phases": {phase: steps}})
    try:
        parse_plan(plan, "example.yaml")
    except Exception as error:
        return str(error)
    return None


# --- the checks ----------------------------------------------------------------------------

TEXT = DOC.read_text(encoding="utf-8")
TOP = sections(TEXT, "##")
#: Sections checked on their own; nested top-level keys (``changes[].…``) may have a section of
#: their own besides "Top-level keys".
CHANGE_KINDS_HEADING = "Change kinds"
OWN_SECTIONS = ("Settings", "Phases", STEP_KINDS_HEADING, CHANGE_KINDS_HEADING)


def test_top_level_keys_are_documented_with_their_defaults() -> None:
    documented: dict[str, str] = {}
    for heading, body in TOP.items():
        if heading not in OWN_SECTIONS:
            documented.update(doc_rows(body))
    problems = compare(
        '"## Top-level keys" (or a section of its own)',
        model_rows(Plan, skip=("settings", "phases")),
        documented,
    )
    assert not problems, "\n".join(problems)
    (example,) = yaml_blocks(TOP["Top-level keys"])
    parse_plan(example, "example.yaml")


def test_settings_are_documented_with_their_defaults() -> None:
    problems = compare('"## Settings"', model_rows(Settings), doc_rows(TOP.get("Settings", "")))
    assert not problems, "\n".join(problems)
    (example,) = yaml_blocks(TOP["Settings"])
    parse_plan(
        yaml.safe_dump({"version": 1, **yaml.safe_load(example), "phases": {}}), "example.yaml"
    )


def test_phases_are_documented_in_order() -> None:
    documented = list(doc_rows(TOP.get("Phases", "")))
    assert documented == list(PHASES), (
        f'{DOC_NAME}, section "## Phases": its table must list the phases {list(PHASES)} in order'
    )


def test_every_step_kind_is_in_the_summary_table_with_its_destructiveness() -> None:
    body = TOP.get(STEP_KINDS_HEADING, "")
    summary = body.split("\n### ")[0]
    rows = {}
    for line in summary.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        match = ROW.match(line)
        if match and len(cells) == 3:
            rows[match.group(1)] = cells[2]
    problems = []
    for kind, cls in STEP_KINDS.items():
        destructive = "yes" if cls.destructive else "no"
        if kind not in rows:
            problems.append(
                f'{DOC_NAME}, section "## {STEP_KINDS_HEADING}": the summary table has no row for '
                f"`{kind}`; add: | `{kind}` | <strongest lock, what it blocks> | {destructive} |"
            )
        elif rows[kind] != destructive:
            problems.append(
                f'{DOC_NAME}, section "## {STEP_KINDS_HEADING}": `{kind}` is destructive='
                f"{destructive} in the model; write {destructive} in its last column"
            )
    for kind in rows.keys() - STEP_KINDS.keys():
        problems.append(
            f'{DOC_NAME}, section "## {STEP_KINDS_HEADING}": summary row `{kind}` is no step kind;'
            " remove it"
        )
    assert not problems, "\n".join(problems)


@dataclass(frozen=True)
class KindDoc:
    """What a section of one kind (a step kind, a change kind) must hold."""

    what: str
    """`step` or `change`: how the messages name the kind."""
    heading: str
    registry: Mapping[str, Any]
    marker: str
    """The line every section has (``**Lock:**``), and what goes after it."""
    hint: str
    template_line: str
    """The marker line in the section a missing kind is given to write."""
    example_problems: Callable[[str, Any, str], list[str]]
    """Why a section's example (its yaml) is not a valid one of the kind; empty when it is."""


def _section_template(
    kind: str, cls: type[Any], marker: str = "**Lock:** <lock mode, what it blocks>"
) -> str:
    rows = "\n".join(_row_hint(key, default) for key, default in model_rows(cls).items())
    return (
        f"### `{kind}`\n\n<what it does>\n\n{marker}\n\n"
        f"```yaml\n- {kind}: {{...}}\n```\n\n| field | default | meaning |\n|---|---|---|\n"
        f"{rows}"
    )


def kind_problems(text: str, doc: KindDoc) -> list[str]:
    """What the section `doc.heading` of `text` lacks: a section per kind with its marker line,
    one example that is valid, and a row per field."""
    kinds = sections(sections(text, "##").get(doc.heading, ""), "###")
    documented = {heading.strip("`"): body for heading, body in kinds.items()}
    problems = []
    for kind, cls in doc.registry.items():
        where = f'"### `{kind}`"'
        body = documented.get(kind)
        if body is None:
            template = _section_template(kind, cls, doc.template_line)
            problems.append(
                f"{DOC_NAME}: no section for {doc.what} kind `{kind}`; add under "
                f'"## {doc.heading}":\n{template}'
            )
            continue
        if doc.marker not in body:
            problems.append(f"{DOC_NAME}, section {where}: add a line {doc.marker} {doc.hint}")
        examples = yaml_blocks(body)
        if len(examples) != 1:
            problems.append(
                f"{DOC_NAME}, section {where}: give one ```yaml example of the {doc.what}"
            )
        else:
            problems += [
                f"{DOC_NAME}, section {where}: {problem}"
                for problem in doc.example_problems(kind, cls, examples[0])
            ]
        problems += compare(where, model_rows(cls), doc_rows(body))
    for kind in documented.keys() - doc.registry.keys():
        problems.append(f'{DOC_NAME}: section "### `{kind}`" is no {doc.what} kind; remove it')
    return problems


def _step_example_problems(kind: str, cls: Any, example: str) -> list[str]:
    steps = yaml.safe_load(example)
    if not (isinstance(steps, list) and steps and all(kind in s for s in steps)):
        return [f"its example must be a list of `{kind}` steps"]
    error = _loads_as_plan(example, "cleanup" if cls.destructive else "additive")
    return [f"its example does not validate:\n{error}"] if error else []


def _change_example_problems(kind: str, cls: Any, example: str) -> list[str]:
    plan = yaml.safe_dump({"version": 1, "name": "example", "changes": yaml.safe_load(example)})
    try:
        parse_plan(plan, "example.yaml", facts=offline_facts)
    except Exception as error:
        return [f"its example does not validate:\n{error}"]
    return []


STEP_DOC = KindDoc(
    "step",
    STEP_KINDS_HEADING,
    STEP_KINDS,
    "**Lock:**",
    "<mode, blocks>",
    "**Lock:** <lock mode, what it blocks>",
    _step_example_problems,
)
CHANGE_DOC = KindDoc(
    "change",
    CHANGE_KINDS_HEADING,
    CHANGE_KINDS,
    "**Expands into:**",
    "<phases, steps, locks>",
    "**Expands into:** <phases, steps, locks>",
    _change_example_problems,
)


def test_every_step_kind_has_a_section_with_lock_example_and_every_field() -> None:
    problems = kind_problems(TEXT, STEP_DOC)
    assert not problems, "\n".join(problems)


def change_kind_problems(text: str) -> list[str]:
    return kind_problems(text, CHANGE_DOC)


def test_every_change_kind_has_a_section_with_expansion_example_and_every_field() -> None:
    problems = change_kind_problems(TEXT)
    assert not problems, "\n".join(problems)


def test_a_change_kind_without_its_section_fails() -> None:
    start = TEXT.index("### `rename_table`", TEXT.index(f"## {CHANGE_KINDS_HEADING}"))
    end = TEXT.index("### ", start + 4)
    problems = change_kind_problems(TEXT[:start] + TEXT[end:])
    assert len(problems) == 1
    assert problems[0].startswith(
        f'{DOC_NAME}: no section for change kind `rename_table`; add under "## Change kinds":\n'
        "### `rename_table`\n"
    )
    assert "| `from` | required | <what it does> |" in problems[0]


def test_the_drift_check_names_what_to_add_for_a_new_field() -> None:
    """What a developer who adds a field sees: the section, the row, the default."""

    class WithOnError(StepSpec):
        kind = "dual_write"
        table: str
        on_error: typing.Literal["fail", "log"] = "fail"

    problems = compare('"### `dual_write`"', model_rows(WithOnError), {"table": "required"})
    assert problems == [
        f'{DOC_NAME}, section "### `dual_write`": no row for `on_error`; add to its table: '
        "| `on_error` | `fail` | <what it does> |"
    ]
    template = _section_template("alter_column", WithOnError)
    assert template.startswith("### `alter_column`\n") and "| `on_error` | `fail` |" in template


def test_readme_links_the_reference_and_nothing_outside_the_repository() -> None:
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "(docs/plan-reference.md)" in readme
    for target in re.findall(r"\]\(([^)#]+)", readme):
        assert not target.startswith("..") and not target.startswith("/"), target
        if "://" not in target:
            assert (DOC.parent.parent / target).exists(), f"README links a missing file: {target}"


def test_json_schema_keeps_the_field_docstrings() -> None:
    """Field docstrings are read when the schema is made, not at import (start-up time)."""
    from zdm.plan import plan_json_schema

    schema = plan_json_schema()
    backfill = schema["$defs"]["Backfill"]["properties"]
    assert backfill["batch_time"]["description"].startswith(
        "Target duration of one batch when batch_size is auto"
    )
    assert backfill["from"]["description"].startswith("Another table joined into the UPDATE")
    assert schema["properties"]["name"]["description"].startswith("Names the plan's runs")
    settings = schema["$defs"]["Settings"]["properties"]
    assert settings["lock_retries"]["description"].startswith("Attempts per step")
    assert Plan.model_fields["name"].description is None  # not paid for at import
