"""The CLI's messages: a few colours in rich's markup, without importing rich to print a line.

`zdm validate` and `zdm status` print a line or two; importing rich for that costs a fifth of
their start-up (docs/benchmarks.md). Text takes the markup the CLI writes — ``[red]…[/red]``,
``[green]``, ``[yellow]``, ``[bold]``, ``[/]``, and ``\\[`` for a literal bracket — rendered as
ANSI colours on a terminal and dropped elsewhere (pipes, files, tests, ``NO_COLOR``); anything
else (a rich Table) is handed to rich, imported then.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO

_CODES = {"red": "\x1b[31m", "green": "\x1b[32m", "yellow": "\x1b[33m", "bold": "\x1b[1m"}
_RESET = "\x1b[0m"
_MARKUP = re.compile(r"\\\[|\[(/?)(red|green|yellow|bold)\]|\[/\]")


def render(text: str, colour: bool) -> str:
    """The text with its markup turned into ANSI codes (or removed) and ``\\[`` into ``[``."""

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "\\[":
            return "["
        if not colour:
            return ""
        closing, name = m.group(1), m.group(2)
        return _RESET if closing or name is None else _CODES[name]

    return _MARKUP.sub(one, text)


def _wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class Console:
    """Writes to sys.stdout or sys.stderr as they are when it prints (tests swap them)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr

    def print(self, message: object = "") -> None:
        stream = sys.stderr if self.stderr else sys.stdout
        if isinstance(message, str):
            stream.write(render(message, _wants_colour(stream)) + "\n")
            stream.flush()
            return
        from rich.console import Console as RichConsole

        RichConsole(file=stream, highlight=False, soft_wrap=True).print(message)


def columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart, the header first; long cells are not wrapped."""
    table = [list(header), *map(list, rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
