"""Malformed plan files at the command line: exit 2 and a clean message, never a traceback.

What users rely on: a typo in a plan is reported by `zdm validate` and `zdm run --dry-run` as
"file:line: path: what was expected", with exit code 2, and nothing else happens.

A hypothesis property mutates plans/add_phone.yaml (keys deleted, values of the wrong type,
unknown keys, bad durations) or replaces the whole file (garbage YAML, binary junk, an empty
file, a list or a scalar instead of a mapping) and runs both commands in-process with typer's
CliRunner; a few cases run the real process.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from zdm_helpers import ADD_PHONE, output_of, zdm

from zdm.cli import app

BASE: dict[str, Any] = yaml.safe_load(ADD_PHONE.read_text())
NO_DSN = {v: None for v in ("ZDM_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE", "PGSERVICE")}
DURATIONS = ("lock_timeout", "lock_timeout_max", "statement_timeout", "retry_max_wait")


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside the plan (mapping keys and list indexes)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from paths(v, (*prefix, i))


def get(data: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        data = data[k]
    return data


ALL_PATHS = list(paths(BASE))
MAPPINGS = [p for p in [(), *ALL_PATHS] if isinstance(get(BASE, p), dict)]


@dataclass(frozen=True)
class Case:
    """A malformed file: its bytes, whether it must be rejected, whether it is a YAML mapping."""

    content: bytes
    invalid: bool
    mapping: bool
    what: str


def dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


WRONG_VALUES = [123, 1.5, True, None, [], {}, ["x"], {"x": 1}, "text", "", -1]


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    plan = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["delete", "wrong_type", "unknown_key", "bad_duration"]))
    if kind == "delete":
        path = draw(st.sampled_from(ALL_PATHS))
        parent = get(plan, path[:-1])
        del parent[path[-1]]
        # Optional keys may go: the plan can stay valid.
        return Case(dump(plan), invalid=False, mapping=True, what=f"delete {path}")
    if kind == "wrong_type":
        path = draw(st.sampled_from(ALL_PATHS))
        old = get(plan, path)
        value = draw(st.sampled_from([v for v in WRONG_VALUES if type(v) is not type(old)]))
        get(plan, path[:-1])[path[-1]] = value
        return Case(dump(plan), invalid=False, mapping=True, what=f"{path} = {value!r}")
    if kind == "unknown_key":
        path = draw(st.sampled_from(MAPPINGS))
        key = draw(st.sampled_from(["bogus", "lockTimeout", "phase", "tabel", "colums"]))
        get(plan, path)[key] = 1  # unknown, or a column mapped to a number: wrong either way
        return Case(dump(plan), invalid=True, mapping=True, what=f"{path}.{key} added")
    name = draw(st.sampled_from(DURATIONS))
    value = draw(
        st.one_of(
            st.sampled_from(["200", "2 s", "1.5.s", "-1s", "200ns", "1w", "0.5ms", "ms", "9999h"]),
            st.integers(min_value=1, max_value=10**12),
            st.text(max_size=8).filter(
                lambda t: not re.fullmatch(r"0|[0-9]+(\.[0-9]+)?(ms|s|m|h)", t)
            ),
        )
    )
    plan["settings"][name] = value
    return Case(dump(plan), invalid=True, mapping=True, what=f"settings.{name} = {value!r}")


whole_files = st.one_of(
    st.text(max_size=200).map(lambda t: Case(t.encode(), True, False, f"text {t!r}")),
    st.binary(max_size=200).map(lambda b: Case(b, True, False, f"bytes {b!r}")),
    st.just(Case(b"", True, False, "empty")),
    st.just(Case(b"   \n# only a comment\n", True, False, "comment only")),
    st.just(Case(dump([BASE]), True, False, "a list of the plan")),
    st.just(Case(b"- version: 1\n- phases: {}\n", True, False, "a list")),
    st.just(Case(b"42\n", True, False, "a scalar")),
    st.just(Case(b"version: 1\nphases: {additive: [\n", True, False, "unclosed flow")),
    st.just(Case(b"version: 1\n\tphases: {}\n", True, False, "a tab")),
    st.just(Case(b"version: 1\nversion: 1\nphases: {}\n", True, True, "duplicate key")),
    st.just(Case(b"\xff\xfe\x00junk", True, False, "not utf-8")),
    st.just(Case(ADD_PHONE.read_bytes()[:300], True, False, "truncated")),
)


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("malformed")


def check(result: Any, plan: Path, case: Case, command: str) -> None:
    where = f"{command} on {case.what}:\nexit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    assert result.exception is None or isinstance(result.exception, SystemExit), where
    assert "Traceback" not in result.stdout + result.stderr, where
    assert result.exit_code in (0, 2), where
    if case.invalid:
        assert result.exit_code == 2, where
    if result.exit_code == 2:
        assert "invalid plan" in result.stderr, where
        assert str(plan) in result.stderr, where
        if case.mapping:
            assert re.search(re.escape(str(plan)) + r":\d+", result.stderr), where
        assert result.stdout == "", where


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=st.one_of(mutated(), whole_files))
def test_malformed_plans_exit_2_with_a_clean_message(plan_dir: Path, case: Case) -> None:
    plan = plan_dir / "plan.yaml"
    plan.write_bytes(case.content)
    runner = CliRunner(env=NO_DSN)
    check(runner.invoke(app, ["validate", str(plan)]), plan, case, "validate")
    check(runner.invoke(app, ["run", str(plan), "--dry-run"]), plan, case, "run --dry-run")


@pytest.mark.parametrize(
    ("command", "content"),
    [
        ("validate", b"\x00\x01\x02\xff binary"),
        ("run --dry-run", b"- just\n- a list\n"),
        ("validate", b"version: 1\nphases:\n  additive: [{"),
    ],
)
def test_malformed_plan_in_a_real_process(tmp_path: Path, command: str, content: bytes) -> None:
    plan = tmp_path / "broken.yaml"
    plan.write_bytes(content)
    verb, *flags = command.split()
    done = zdm(verb, plan, *flags)
    assert done.returncode == 2, output_of(done)
    assert "Traceback" not in done.stderr
    assert re.search(re.escape(str(plan)) + r":\d+", done.stderr), output_of(done)
    assert done.stdout == ""


def test_missing_file_and_directory(tmp_path: Path) -> None:
    runner = CliRunner(env=NO_DSN)
    for target in (tmp_path / "nope.yaml", tmp_path):
        for args in (["validate", str(target)], ["run", str(target), "--dry-run"]):
            result = runner.invoke(app, args)
            assert result.exit_code == 2, result.stderr
            assert "cannot read the plan" in result.stderr
            assert result.exception is None or isinstance(result.exception, SystemExit)


def test_one_error_names_file_line_and_path(tmp_path: Path) -> None:
    plan = tmp_path / "typo.yaml"
    text = ADD_PHONE.read_text().replace("lock_timeout: 200ms", "lock_timeout: 200")
    plan.write_text(text)
    line = text.splitlines().index("  lock_timeout: 200") + 1
    result = CliRunner(env=NO_DSN).invoke(app, ["validate", str(plan)])
    assert result.exit_code == 2
    assert f"{plan}:{line}:" in result.stderr
    assert "settings.lock_timeout" in result.stderr
    assert "500ms" in result.stderr or "unit" in result.stderr
