"""`zdm` starts fast: a command imports only what it uses (timings: bench/startup.py).

Each case runs the real command in a fresh interpreter and lists the modules it imported; no
timing is asserted, the heavy imports a command must not pay for are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import zdm

PLAN = """\
version: 1
name: startup
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: text}}
"""

# Run the CLI in-process after a clean start and print the imported modules on stdout's last
# line (the command's own output comes before it).
PROBE = """\
import json, sys
from zdm.cli import main
sys.argv = ["zdm", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
sys.stdout.write("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""

ENGINE = ("psycopg", "structlog", "zdm.engine.runner", "zdm.engine.backfill", "zdm.operations")


def imported(*args: str, cwd: Path) -> tuple[int, set[str], str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    *output, last = result.stdout.rstrip("\n").split("\n")
    report = json.loads(last)
    return report["code"], set(report["modules"]), "\n".join(output) + result.stderr


def test_help_and_version_import_no_engine_and_no_plan_models(tmp_path: Path) -> None:
    code, modules, output = imported("--help", cwd=tmp_path)
    assert code == 0 and "validate" in output
    assert not modules & {*ENGINE, "zdm.api", "zdm.plan", "pglast", "matplotlib"}
    assert not any(m.startswith("pydantic") for m in modules), "typer --help needs no pydantic"
    code, modules, output = imported("--version", cwd=tmp_path)
    assert code == 0 and output.strip() == f"zdm {zdm.__version__}"
    assert not modules & {*ENGINE, "zdm.plan"}


def test_validate_imports_the_plan_models_only(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PLAN)
    code, modules, output = imported("validate", "p.yaml", cwd=tmp_path)
    assert code == 0 and "ok: plan startup, 1 steps in 1 phases" in output
    assert "zdm.plan" in modules
    assert not modules & {*ENGINE, "pglast", "zdm.lint", "rich", "matplotlib"}


def test_validate_of_a_bad_plan_still_exits_2_with_the_message(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PLAN.replace("add_column", "add_colum"))
    code, modules, output = imported("validate", "p.yaml", cwd=tmp_path)
    assert code == 2 and "invalid plan" in output and "add_colum" in output
    assert "Traceback" not in output
    assert not modules & set(ENGINE)


def test_status_imports_psycopg_but_not_the_engine_or_plan_models(tmp_path: Path, dsn: str) -> None:
    code, modules, output = imported("status", "--dsn", dsn, cwd=tmp_path)
    assert code == 0 and "no runs recorded" in output
    assert "psycopg" in modules
    assert not modules & {
        "zdm.engine.runner",
        "zdm.operations",
        "zdm.plan",
        "structlog",
        "rich",
        "matplotlib",
    }


def test_status_of_a_run_prints_its_steps_without_rich(tmp_path: Path, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY)")
    (tmp_path / "p.yaml").write_text(PLAN)
    ran = subprocess.run(
        [sys.executable, "-m", "zdm", "run", "p.yaml", "--dsn", dsn],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    code, modules, output = imported("status", "--dsn", dsn, cwd=tmp_path)
    assert code == 0 and "startup  run 1  completed" in output
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("step"))
    assert lines[header].split() == ["step", "kind", "status", "attempts", "error"]
    assert lines[header + 1].split() == ["additive[0]", "add_column", "done", "1"]
    assert "rich" not in modules


def test_a_command_that_runs_still_configures_logs_on_stderr(tmp_path: Path, dsn: str) -> None:
    """Logging is set up lazily for quiet commands; the others log JSON on stderr as before."""
    (tmp_path / "p.yaml").write_text(PLAN)
    result = subprocess.run(
        [sys.executable, "-m", "zdm", "--log-format", "json", "validate", "p.yaml", "--dsn", dsn],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "table public.users does not exist" in result.stderr


ZDM = str(Path(sys.executable).with_name("zdm"))


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_script_is_printed(tmp_path: Path, shell: str) -> None:
    # Without a shell among its ancestors (a detached run, CI in a container), typer's shell
    # detection finds none; with detection off, the shell is the option's value, as written.
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1",
    }
    result = subprocess.run(
        [ZDM, "--show-completion", shell], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "_ZDM_COMPLETE" in result.stdout


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    def complete(words: str) -> list[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "_ZDM_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        result = subprocess.run([ZDM], capture_output=True, text=True, env=env, timeout=120)
        return result.stdout.split()

    assert complete("zdm val") == ["validate"]
    assert "--dry-run" in complete("zdm run --dr")


def test_messages_keep_their_text_without_rich() -> None:
    """zdm.console prints the CLI's markup: colours on a terminal, the bare text elsewhere."""
    from zdm.console import render

    text = "[red]invalid plan[/red]\nplan.yaml:3: \\[bad] [22P02] zdm[lint] [/]"
    assert render(text, False) == "invalid plan\nplan.yaml:3: [bad] [22P02] zdm[lint] "
    assert render("[green]ok[/green]: [bold]p[/bold]", True) == (
        "\x1b[32mok\x1b[0m: \x1b[1mp\x1b[0m"
    )


def test_import_of_the_cli_pulls_in_no_heavy_module() -> None:
    """`import zdm.cli` (what every command pays) loads neither psycopg nor pydantic nor rich."""
    probe = "import json, sys, zdm.cli; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = set(json.loads(done.stdout))
    heavy = {
        "psycopg",
        "pydantic",
        "rich",
        "structlog",
        "yaml",
        "zdm.plan",
        "zdm.api",
        "matplotlib",
    }
    assert not modules & heavy, modules & heavy
