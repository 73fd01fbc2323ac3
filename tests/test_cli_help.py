"""What `zdm … --help` shows is what the help texts say: rich reads `[word]` as markup and drops
it, so a bracket the user must see (`zdm[report]`, `[tool.zdm.lint]`) is written `\\[`."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from zdm.cli import app

COMMAND: Any = typer.main.get_command(app)
NAMES = sorted(COMMAND.commands)
# An opening bracket rich would take for a markup tag: `[name]`, `[name=…]`, `[/name]`.
MARKUP = re.compile(r"(?<!\\)\[/?[A-Za-z][\w.=#-]*\]")


def texts(command: Any) -> list[str]:
    found = [command.help or ""]
    found += [getattr(p, "help", None) or "" for p in command.params]
    return found


@pytest.mark.parametrize("name", NAMES)
def test_no_bracket_of_a_help_text_is_taken_for_markup(name: str) -> None:
    wrong = [m.group() for text in texts(COMMAND.commands[name]) for m in MARKUP.finditer(text)]
    assert not wrong, f"zdm {name}: write {wrong} as \\[…] or rich drops it from --help"


def test_escaped_brackets_are_shown() -> None:
    runner = CliRunner()
    shown = {
        "lint": "[tool.zdm.lint] in pyproject.toml or [lint] in .zdm.toml",
        "report": "(zdm[report])",
        "demo": "(zdm[report])",
    }
    for name, text in shown.items():
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}, terminal_width=400)
        assert result.exit_code == 0, result.output
        assert text in " ".join(result.output.split()), (name, result.output)
