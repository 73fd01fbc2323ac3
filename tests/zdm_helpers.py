"""Shared helpers of the behavioural tests: the real `zdm` process, plans, seeding, catalog checks.

The behavioural tests drive zdm the way users do — as a process with arguments, environment,
stdout, stderr and an exit code — against a real PostgreSQL, and read the real catalog.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.rows import dict_row

from zdm.demo.seed import create_schema, seed_users

ROOT = Path(__file__).resolve().parent.parent
ADD_PHONE = ROOT / "plans" / "add_phone.yaml"
ZDM = [sys.executable, "-m", "zdm"]
PHONE_EXPR = "regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"
# Variables through which a DSN could reach zdm behind a test's back.
DSN_VARS = ("ZDM_DSN", "DATABASE_URL")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any connection settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in DSN_VARS and not k.startswith("PG")}
    env.update(extra or {})
    return env


def zdm(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Runs the real `zdm` command to its end; stdout and stderr kept apart."""
    return subprocess.run(
        [*ZDM, *map(str, args)],
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


class Background:
    """A `zdm` process running in the background; its output goes to files (no pipe can fill)."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None) -> None:
        self.out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by wait()
        self.err = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by wait()
        self.args = args
        self.proc = subprocess.Popen(
            [*ZDM, *args], stdout=self.out, stderr=self.err, text=True, env=clean_env(env)
        )
        self.pid = self.proc.pid

    def wait(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Waits for the end; the process's output, as `zdm()` returns it."""
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.out.seek(0)
        self.err.seek(0)
        done = subprocess.CompletedProcess(self.args, code, self.out.read(), self.err.read())
        self.out.close()
        self.err.close()
        return done

    def kill(self) -> subprocess.CompletedProcess[str]:
        """SIGKILL: no handler runs, nothing is cleaned up; the server finds out by itself."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        done = self.wait(30)
        assert done.returncode == -signal.SIGKILL, output_of(done)
        return done


def start_zdm(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Background:
    """Starts the real `zdm` command in the background."""
    return Background([str(a) for a in args], env)


def events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log events (`--log-format json`) found on a process's stderr."""
    found = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def named(evts: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in evts if e.get("event") == name]


def add_phone(**changes: Any) -> dict[str, Any]:
    """plans/add_phone.yaml as data; `backfill`/`settings`/`gates`/… keys override its parts."""
    plan: dict[str, Any] = yaml.safe_load(ADD_PHONE.read_text())
    backfill = changes.pop("backfill", None)
    if backfill:
        plan["phases"]["backfill"][0]["backfill"].update(backfill)
    settings = changes.pop("settings", None)
    if settings:
        plan["settings"].update(settings)
    plan.update(changes)
    return plan


def write_plan(path: Path, plan: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(plan), sort_keys=False))
    return path


def seed(dsn: str, rows: int) -> None:
    """The example users table with `rows` rows (legacy phones in contact)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_schema(conn)
        seed_users(conn, rows)


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def zdm_backends(conn: psycopg.Connection[Any], pid: int) -> list[tuple[int, str, str]]:
    """(backend pid, state, query) of the sessions opened by zdm process `pid` (by app name)."""
    return conn.execute(
        "SELECT pid, coalesce(state, ''), coalesce(query, '') FROM pg_stat_activity"
        " WHERE application_name LIKE 'zdm %%' AND application_name LIKE %s",
        [f"%:{pid})"],
    ).fetchall()


def wait_for(
    predicate: Any,
    timeout: float,
    what: str,
    interval: float = 0.005,
    alive: Background | None = None,
) -> Any:
    """Polls `predicate()` until it returns something truthy; fails the test after `timeout`.

    With `alive`, fails at once (with the process's output) when that process has ended.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.proc.poll() is not None:
            raise AssertionError(f"zdm ended while waiting for {what}:\n{output_of(alive.wait())}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_gone(conn: psycopg.Connection[Any], pid: int, timeout: float = 30) -> None:
    """Waits until the server has noticed that zdm process `pid` is dead (its sessions ended)."""
    wait_for(lambda: not zdm_backends(conn, pid), timeout, f"the sessions of zdm pid {pid} to end")


def mismatched_phones(conn: psycopg.Connection[Any]) -> int:
    """Rows whose phone is not the normalised legacy phone of their contact."""
    return int(
        scalar(conn, f"SELECT count(*) FROM users WHERE phone IS DISTINCT FROM ({PHONE_EXPR})")
    )


def final_catalog_problems(conn: psycopg.Connection[Any], server_version: int) -> list[str]:
    """What is wrong with the catalog after a completed add_phone run (empty when all is well)."""
    problems = []
    notnull = scalar(
        conn,
        "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass"
        " AND attname = 'phone' AND NOT attisdropped",
    )
    if notnull is not True:
        problems.append(f"phone attnotnull is {notnull}")
    valid = scalar(
        conn,
        "SELECT indisvalid AND indisready FROM pg_index"
        " WHERE indexrelid = to_regclass('public.idx_users_phone')",
    )
    if valid is not True:
        problems.append(f"idx_users_phone valid: {valid}")
    invalid = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'users'::regclass"
        " AND NOT (indisvalid AND indisready)"
    ).fetchall()
    if invalid:
        problems.append(f"invalid indexes left: {invalid}")
    constraints = dict(
        conn.execute(
            "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'users'::regclass"
        ).fetchall()
    )
    if constraints.get("check_phone_format") is not True:
        problems.append(f"check_phone_format validated: {constraints.get('check_phone_format')}")
    unvalidated = sorted(n for n, v in constraints.items() if not v)
    if unvalidated:
        problems.append(f"constraints left NOT VALID: {unvalidated}")
    helpers = sorted(n for n in constraints if "zdm" in n)
    if helpers:
        problems.append(f"helper constraints left: {helpers}")
    if server_version >= 180000 and constraints.get("users_phone_not_null") is not True:
        problems.append("PG18 not-null constraint users_phone_not_null is not validated")
    triggers = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal"
    ).fetchall()
    if triggers:
        problems.append(f"triggers left: {triggers}")
    functions = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n"
        " ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.proname LIKE 'zdm%%'"
    ).fetchall()
    if functions:
        problems.append(f"zdm functions left: {functions}")
    return problems


def run_row(conn: psycopg.Connection[Any], plan: str = "add_phone") -> dict[str, Any]:
    """The latest zdm.runs row of `plan`, with its steps by key."""
    with conn.cursor(row_factory=dict_row) as cur:
        run = cur.execute(
            "SELECT * FROM zdm.runs WHERE plan = %s ORDER BY id DESC LIMIT 1", [plan]
        ).fetchone()
        assert run is not None, f"no run of {plan}"
        steps = cur.execute(
            "SELECT phase || '[' || idx || ']' AS key, * FROM zdm.steps WHERE run_id = %s"
            " ORDER BY ordinal",
            [run["id"]],
        ).fetchall()
    run["steps"] = {s["key"]: s for s in steps}
    return run


def output_of(proc: subprocess.CompletedProcess[str]) -> str:
    """Everything a process printed, for assertion messages."""
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


_HIDE = """\
import sys


class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name == {module!r} or name.startswith({module!r} + "."):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Hide())
"""


def module_hider(tmp_path: Path, module: str) -> Path:
    """A directory whose sitecustomize makes `import module` fail, as in an install without
    the extra that brings it: put it first on PYTHONPATH."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(_HIDE.format(module=module))
    return shim
