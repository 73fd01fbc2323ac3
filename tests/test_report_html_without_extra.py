"""The core install (no `zdm[report]`): `--html` says which extra to install, in one line.

The CLI runs in a real subprocess whose `import matplotlib` fails (a sitecustomize module on
PYTHONPATH puts a finder first on sys.meta_path), as it does after `pip install zdm`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from zdm_helpers import ADD_PHONE, clean_env, module_hider, output_of, seed, zdm

HINT = "pip install 'zdm[report]'"


def without_matplotlib(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    shim = module_hider(tmp_path, "matplotlib")
    path = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "zdm", *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env({"PYTHONPATH": path}),
        timeout=120,
        check=False,
    )


def test_the_shim_really_hides_matplotlib(tmp_path: Path) -> None:
    done = without_matplotlib(tmp_path, "--version")
    assert done.returncode == 0
    probe = subprocess.run(
        [sys.executable, "-c", "import matplotlib"],
        capture_output=True,
        text=True,
        env=clean_env({"PYTHONPATH": str(tmp_path / "shim")}),
        check=False,
    )
    assert probe.returncode != 0 and "No module named 'matplotlib'" in probe.stderr


@pytest.mark.parametrize("command", ["report", "demo"])
def test_html_without_the_extra_is_exit_2_naming_it(tmp_path: Path, dsn: str, command: str) -> None:
    page = tmp_path / "page.html"
    args = ["report", "--dsn", dsn] if command == "report" else ["demo", "--rows", "10"]
    done = without_matplotlib(tmp_path, *args, "--html", page)
    assert done.returncode == 2, output_of(done)
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert HINT in line and "Traceback" not in done.stderr
    assert not page.exists()


def test_the_text_report_needs_no_extra(tmp_path: Path, dsn: str) -> None:
    seed(dsn, 100)
    assert zdm("run", ADD_PHONE, "--dsn", dsn).returncode == 0
    done = without_matplotlib(tmp_path, "report", "--dsn", dsn)
    assert done.returncode == 0, output_of(done)
    assert done.stdout.startswith("# Migration record: plan `add_phone`")
