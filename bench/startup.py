"""Start-up time of the `zdm` command: wall time (min and median) and CPU time per command.

    .venv/bin/python bench/startup.py [--runs 20] [--dsn postgresql://...]

The machine is shared: the minimum wall time is the closest to an idle machine, the CPU time
(user + system, of the child) is the least disturbed by other load. A bare `python -c pass` is
the baseline; the issue's target is the baseline + 300 ms for --help, status and validate.
"""

from __future__ import annotations

import argparse
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


def measure(argv: list[str], runs: int) -> tuple[float, float, float]:
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls) * 1000, statistics.median(walls) * 1000, statistics.mean(cpus) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dsn", default=os.environ.get("ZDM_DSN"))
    args = parser.parse_args()
    zdm = [str(Path(sys.executable).with_name("zdm"))]
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
        print(f"| command | min wall ms | median wall ms | CPU ms | runs={args.runs} |")
        print("|---|---:|---:|---:|---|")
        for label, argv in commands:
            low, median, cpu = measure(argv, args.runs)
            print(f"| `{label}` | {low:.0f} | {median:.0f} | {cpu:.0f} | |")


if __name__ == "__main__":
    main()
