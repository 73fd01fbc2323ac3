"""Load a plan file: YAML, then the models, then the cross-step rules, with every issue located."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from zdm.plan.durations import PLAN_FILE_CONTEXT
from zdm.plan.errors import PlanError, PlanIssue, describe
from zdm.plan.expand import ExpansionError, FactReader, expand
from zdm.plan.messages import Finding, translate
from zdm.plan.model import Plan, PlanStep
from zdm.plan.rules import check_plan
from zdm.plan.steps import Sql
from zdm.plan.yamlsource import YamlDocument, YamlSyntaxError, read_yaml


@dataclass(frozen=True)
class LoadedPlan:
    """A validated plan with what a run needs to know about its file."""

    path: Path
    plan: Plan
    name: str
    """The plan's ``name``, else the file name without extension; keys runs and locks."""
    sha256: str
    """Hex digest of the file's bytes; a resume refuses a plan whose file changed."""
    text: str
    base_dir: Path
    """Directory that relative ``up_file``/``down_file`` paths are resolved against."""
    step_lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)
    step_paths: Mapping[str, tuple[str | int, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )
    """Step key -> where the step is written in the file: ``("phases", phase, index)``, or
    ``("changes", index)`` for a step expanded from a change."""
    step_origins: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """Step key -> the change it was expanded from (``"changes[0] alter_column"``)."""
    source: Plan | None = field(default=None, repr=False, compare=False)
    """The plan as written, when it has ``changes`` (``plan`` is then their expansion)."""

    def steps(self) -> list[PlanStep]:
        """The plan's steps in execution order."""
        return self.plan.steps()

    def step_line(self, key: str) -> int | None:
        """The line where step ``key`` (``"cleanup[1]"``) starts, for messages about it."""
        return self.step_lines.get(key)

    def resolve(self, relative: str) -> Path:
        """A path written in the plan (``up_file``), relative to the plan's directory."""
        return self.base_dir / relative


def load_plan(path: str | Path, facts: FactReader | None = None) -> LoadedPlan:
    """Read and validate a plan file; raise PlanError listing every problem found.

    ``facts`` reads the live catalog for changes that copy a column; without it they are
    refused, naming what cannot be known."""
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise PlanError(
            [PlanIssue(file, None, None, "", f"cannot read the plan: {reason}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        message = f"the plan is not UTF-8 text (byte {data[error.start]:#04x})"
        raise PlanError([PlanIssue(file, line, None, "", message)]) from None
    digest = hashlib.sha256(data).hexdigest()
    return _load(text, file, path, digest, check_files=True, facts=facts)


def parse_plan(
    text: str, filename: str = "<string>", facts: FactReader | None = None
) -> LoadedPlan:
    """Validate plan text; ``filename`` names it in messages and gives the default name."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _load(text, filename, Path(filename), digest, check_files=False, facts=facts)


def _load(
    text: str,
    file: str,
    path: Path,
    digest: str,
    *,
    check_files: bool,
    facts: FactReader | None = None,
) -> LoadedPlan:
    try:
        document = read_yaml(text)
    except YamlSyntaxError as error:
        line, column = error.position or (None, None)
        raise PlanError([PlanIssue(file, line, column, "", error.message)]) from None

    issues = [
        _issue(file, document, Finding(item.loc, item.message), item.position)
        for item in document.issues
    ]
    if not isinstance(document.data, dict):
        shape = "empty" if document.data is None else f"{describe(document.data)}, not a mapping"
        line, column = document.position(()) or (None, None)
        message = (
            f"the plan is {shape}; expected a mapping with version and phases, changes or both"
        )
        raise PlanError([*issues, PlanIssue(file, line, column, "", message)])

    plan: Plan | None = None
    try:
        # Files use the YAML keys only: `from` and `schema`, never the Python names.
        plan = Plan.model_validate(
            document.data, context={PLAN_FILE_CONTEXT: True}, by_alias=True, by_name=False
        )
    except ValidationError as error:
        findings: Iterable[Finding] = (translate(detail, Plan) for detail in error.errors())
        issues += (_issue(file, document, finding) for finding in findings)
    source = plan
    origins: list[int] = []
    if plan is not None and not issues:
        try:
            plan, origins = expand(plan, plan.name or path.stem, facts)
        except ExpansionError as error:
            issues += (_issue(file, document, finding) for finding in error.findings)
            plan = None
    if plan is not None:
        issues += (
            _issue(file, document, _relocated(finding, plan, origins))
            for finding in check_plan(plan)
        )
        if check_files:
            base_dir = path.absolute().parent
            issues += (
                _issue(file, document, finding) for finding in _missing_files(plan, base_dir)
            )
    if issues or plan is None:
        raise PlanError(_sorted_unique(issues))

    step_lines = {}
    step_origins = {}
    step_paths: dict[str, tuple[str | int, ...]] = {}
    for ordinal, step in enumerate(plan.steps()):
        written = _written_index(plan, origins, step.phase, step.index)
        if origins and origins[ordinal] >= 0:
            change = origins[ordinal]
            assert source is not None
            step_origins[step.key] = f"changes[{change}] {source.changes[change].kind}"
            step_paths[step.key] = ("changes", change)
        else:
            step_paths[step.key] = ("phases", step.phase, written)
        position = document.position(step_paths[step.key])
        if position is not None:
            step_lines[step.key] = position[0]
    return LoadedPlan(
        path=path,
        plan=plan,
        name=plan.name or path.stem,
        sha256=digest,
        text=text,
        base_dir=path.absolute().parent,
        step_lines=step_lines,
        step_origins=step_origins,
        step_paths=step_paths,
        source=source if source is not None and source.changes else None,
    )


def _written_index(plan: Plan, origins: list[int], phase: str, index: int) -> int:
    """The index under ``phases.<phase>`` in the file of the expanded plan's step there."""
    if not origins:
        return index
    start = 0
    for step in plan.steps():
        if step.phase == phase:
            break
        start += 1
    expanded = sum(1 for origin in origins[start : start + index] if origin >= 0)
    return index - expanded


def _relocated(finding: Finding, plan: Plan, origins: list[int]) -> Finding:
    """A rule's finding about an expanded step, moved to the change it came from, and one about
    a hand-written step moved to its place in the file."""
    loc = finding.loc
    if not origins or len(loc) < 3 or loc[0] != "phases":
        return finding
    phase, index = loc[1], loc[2]
    ordinal = next(
        (n for n, step in enumerate(plan.steps()) if step.phase == phase and step.index == index),
        None,
    )
    if ordinal is None:
        return finding
    if origins[ordinal] >= 0:
        return Finding(("changes", origins[ordinal]), finding.message, "value")
    written = _written_index(plan, origins, str(phase), int(index))
    return Finding(("phases", phase, written, *loc[3:]), finding.message, finding.at)


def _missing_files(plan: Plan, base_dir: Path) -> list[Finding]:
    findings = []
    for phase, index, spec in plan.iter_steps():
        if isinstance(spec, Sql):
            for key in ("up_file", "down_file"):
                name = getattr(spec, key)
                if name is not None and not (base_dir / name).is_file():
                    loc = ("phases", phase, index, spec.kind, key)
                    findings.append(Finding(loc, f"file not found: {base_dir / name}"))
    return findings


def _issue(
    file: str,
    document: YamlDocument,
    finding: Finding,
    position: tuple[int, int] | None = None,
) -> PlanIssue:
    if position is None:
        loc = finding.loc[:-1] if finding.at == "parent" else finding.loc
        position = document.position(loc, at_key=finding.at == "key")
    line, column = position or (None, None)
    return PlanIssue(file, line, column, finding.path, finding.message)


def _sorted_unique(issues: list[PlanIssue]) -> list[PlanIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(
        unique, key=lambda issue: (issue.line is None, issue.line or 0, issue.column or 0)
    )
