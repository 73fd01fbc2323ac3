"""Start-up time of the `zdm` command: wall time (min and median) and CPU time per command.

    .venv/bin/python bench/startup.py [--runs 20] [--dsn postgresql://...] [--before DIR]

The machine is shared: the minimum wall time is the closest to an idle machine, the CPU time
(user + system, of the child) is the least disturbed by other load. A bare `python -c pass` is
the baseline; the issue's target is the baseline + 300 ms for --help, status and validate.

`--before DIR` also times the code in DIR (a `src` directory of another commit, e.g. from
`git archive <commit> src | tar -x -C /tmp/before`), run as `python -m zdm` with PYTHONPATH=DIR
against this checkout's `src` the same way, alternating run by run so that both see the same
load. Byte-code is compiled first in both (`compileall`), as `pip install` does.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN = """\
version: 1
name: startup
phases:
  additive:
    - add_column: {table: users, column: {name: phone, type: text}}
"""
SRC = Path(__file__).resolve().parent.parent / "src"


def once(argv: list[str], env: dict[str, str] | None) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def cells(samples: list[tuple[float, float]]) -> str:
    walls = [w for w, _ in samples]
    cpu = statistics.median(c for _, c in samples)
    return f"{min(walls) * 1000:.0f} | {statistics.median(walls) * 1000:.0f} | {cpu * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dsn", default=os.environ.get("ZDM_DSN"))
    parser.add_argument("--before", type=Path, help="a src directory of the code to compare")
    args = parser.parse_args()
    trees: dict[str, dict[str, str] | None]
    if args.before is None:
        trees = {"": None}
        zdm = [str(Path(sys.executable).with_name("zdm"))]
    else:
        for tree in (args.before, SRC):
            compileall.compile_dir(str(tree / "zdm"), quiet=1)
        trees = {
            "before": {**os.environ, "PYTHONPATH": str(args.before)},
            "after": {**os.environ, "PYTHONPATH": str(SRC)},
        }
        zdm = [sys.executable, "-m", "zdm"]
    with tempfile.TemporaryDirectory() as tmp:
        plan = Path(tmp) / "startup.yaml"
        plan.write_text(PLAN)
        commands = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("zdm --version", [*zdm, "--version"]),
            ("zdm --help", [*zdm, "--help"]),
            ("zdm validate PLAN", [*zdm, "validate", str(plan)]),
        ]
        if args.dsn:
            commands.append(("zdm status", [*zdm, "status", "--dsn", args.dsn]))
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        load = os.getloadavg()[0]
        for _ in range(args.runs):
            for label, argv in commands:
                if label.startswith("python"):
                    samples.setdefault((label, ""), []).append(once(argv, None))
                    continue
                for tree, env in trees.items():
                    samples.setdefault((label, tree), []).append(once(argv, env))
        print(f"load average {load:.1f} → {os.getloadavg()[0]:.1f}, runs={args.runs}")
        print("| command | code | min wall ms | median wall ms | median CPU ms |")
        print("|---|---|---:|---:|---:|")
        for (label, tree), found in samples.items():
            print(f"| `{label}` | {tree or '-'} | {cells(found)} |")


if __name__ == "__main__":
    main()
