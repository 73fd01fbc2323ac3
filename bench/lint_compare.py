"""zdm lint against squawk on the same labelled corpus (tests/lint/lint_corpus.py).

For each tool: how many dangerous migrations it flags (caught), how many it lets through
(missed), and how many safe migrations it flags anyway (false alarms). A migration counts as
flagged when the tool reports anything about the file itself. zdm lint also reads each case's
history file (an earlier migration, as a directory of migrations would have); squawk gets the
same files. squawk is run twice: with its default rules, and without its style rules (IF NOT
EXISTS, bigint/text/timestamptz preferences, statement_timeout), which say nothing about locks.

    pip install squawk-cli      # the squawk binary, from PyPI
    python bench/lint_compare.py [--verbose]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "lint"))

from lint_corpus import CASES, Case  # noqa: E402

from zdm.lint import lint_paths  # noqa: E402

SQUAWK_STYLE_RULES = (
    "prefer-robust-stmts",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-text-field",
    "prefer-timestamptz",
    "ban-char-field",
    "require-statement-timeout",
)


@dataclass
class Score:
    tool: str
    flagged: dict[str, bool]

    def row(self, cases: Iterable[Case]) -> tuple[str, str, int, str]:
        cases = list(cases)
        dangerous = [c for c in cases if c.dangerous]
        safe = [c for c in cases if not c.dangerous]
        caught = sum(self.flagged[c.name] for c in dangerous)
        alarms = sum(self.flagged[c.name] for c in safe)
        return (
            self.tool,
            f"{caught}/{len(dangerous)}",
            len(dangerous) - caught,
            f"{alarms}/{len(safe)}",
        )


def write_cases(root: Path) -> dict[str, tuple[Path, Path | None]]:
    """Each case in its own folder: V002__case.sql, after V001__history.sql when it has one."""
    files: dict[str, tuple[Path, Path | None]] = {}
    for case in CASES:
        folder = root / case.name
        folder.mkdir()
        history = None
        if case.history:
            history = folder / "V001__history.sql"
            history.write_text(case.history)
        path = folder / "V002__case.sql"
        path.write_text(case.sql)
        files[case.name] = (path, history)
    return files


def run_zdm(files: dict[str, tuple[Path, Path | None]]) -> tuple[Score, dict[str, list[str]]]:
    flagged: dict[str, bool] = {}
    rules: dict[str, list[str]] = {}
    for name, (path, _) in files.items():
        findings, errors, _ = lint_paths([str(path.parent)])
        if errors:
            raise SystemExit(f"zdm lint failed on {name}: {errors[0]}")
        mine = sorted({f.rule for f in findings if f.file == str(path)})
        flagged[name], rules[name] = bool(mine), mine
    return Score("zdm lint", flagged), rules


def run_squawk(
    squawk: str, files: dict[str, tuple[Path, Path | None]], exclude: tuple[str, ...]
) -> tuple[dict[str, bool], dict[str, list[str]]]:
    paths = [str(p) for pair in files.values() for p in pair if p is not None]
    command = [squawk, "--reporter", "json", *paths]
    if exclude:
        command.insert(1, "--exclude=" + ",".join(exclude))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"squawk failed ({done.returncode}): {done.stderr.strip()}")
    reports = json.loads(done.stdout or "[]")
    by_file: dict[str, set[str]] = {}
    for report in reports:
        by_file.setdefault(report["file"], set()).add(report["rule_name"])
    flagged = {name: bool(by_file.get(str(path))) for name, (path, _) in files.items()}
    rules = {name: sorted(by_file.get(str(path), ())) for name, (path, _) in files.items()}
    return flagged, rules


def table(rows: list[tuple[str, str, int, str]]) -> str:
    header = ("tool", "caught", "missed", "false alarms")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(
            str(v).ljust(w) if i == 0 else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verbose", action="store_true", help="list each tool's misses and false alarms"
    )
    args = parser.parse_args()
    dangerous = sum(c.dangerous for c in CASES)
    print(
        f"corpus: {len(CASES)} migrations, {dangerous} dangerous, {len(CASES) - dangerous} safe\n"
    )
    with tempfile.TemporaryDirectory(prefix="zdm-lint-bench-") as tmp:
        files = write_cases(Path(tmp))
        zdm, zdm_rules = run_zdm(files)
        scores = [(zdm, zdm_rules)]
        squawk = shutil.which("squawk")
        if squawk is None:
            print(
                "squawk is not installed here (pip install squawk-cli); only zdm lint is scored\n"
            )
        else:
            version = subprocess.run(
                [squawk, "--version"], capture_output=True, text=True
            ).stdout.strip()
            for label, exclude in (
                (version, ()),
                (f"{version}, style rules off", SQUAWK_STYLE_RULES),
            ):
                flagged, rules = run_squawk(squawk, files, exclude)
                scores.append((Score(label, flagged), rules))
    print(table([score.row(CASES) for score, _ in scores]))
    if args.verbose:
        for score, rules in scores:
            missed = [c.name for c in CASES if c.dangerous and not score.flagged[c.name]]
            alarms = [
                f"{c.name} ({', '.join(rules[c.name])})"
                for c in CASES
                if not c.dangerous and score.flagged[c.name]
            ]
            print(
                f"\n{score.tool}\n  missed: {', '.join(missed) or '-'}\n  false alarms: {', '.join(alarms) or '-'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
