"""The `zdm` command: parse, call the api, map errors to exit codes. Nothing else.

Exit codes: 0 done or stopped at a gate, 1 step failed (resumable), 2 invalid plan or usage,
3 another run holds the plan's lock.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, astuple
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from zdm import __version__
from zdm.console import Console, columns
from zdm.failures import EXIT_FAILED, EXIT_OK, EXIT_USAGE, expected
from zdm.lazy import lazy_module

# What a command needs is imported when it runs: `zdm --help` and `zdm validate` do not pay for
# psycopg, the engine or the lint rules (see tests/test_cli_startup.py).
if TYPE_CHECKING:
    from zdm import api
    from zdm.state.overview import (
        BackfillProgress,
        PartitionProgress,
        RunState,
        WorkerProgress,
    )
else:
    api = lazy_module("zdm.api")

app = typer.Typer(
    name="zdm",
    help="Zero-downtime online migrations for PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
# No hard wraps: messages stay greppable.
err = Console(stderr=True)
out = Console()


class LogFormat(StrEnum):
    console = "console"
    json = "json"


class Phase(StrEnum):
    additive = "additive"
    dual_write = "dual_write"
    backfill = "backfill"
    dual_read = "dual_read"
    cleanup = "cleanup"


DsnOpt = Annotated[
    str | None,
    typer.Option(
        "--dsn", help="Connection string; else ZDM_DSN, DATABASE_URL, or libpq's PG* variables."
    ),
]
StateOpt = Annotated[str, typer.Option("--state-schema", help="Schema of zdm's own state tables.")]
PlanArg = Annotated[Path, typer.Argument(help="The plan file (YAML).", show_default=False)]
TargetsOpt = Annotated[
    Path | None, typer.Option("--targets", help="Roll out over the databases this file lists.")
]

T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"zdm {__version__}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Logs on stderr.")
    ] = LogFormat.console,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug shows every SQL statement.")
    ] = "info",
) -> None:
    ctx.obj = (log_format.value, log_level)
    if ctx.invoked_subcommand not in QUIET:
        _configure_logs(ctx)


# Commands that log nothing unless they connect: they configure logging (and import structlog)
# only then, to start fast.
QUIET = frozenset({"validate", "schema", "lint", "convert", "status"})


def _configure_logs(ctx: typer.Context) -> None:
    from zdm.logs import configure

    log_format, log_level = ctx.find_root().obj
    configure(log_format, log_level)


def guarded(fn: Callable[[], T]) -> T:
    """Runs a command body, turning every expected failure into a message and an exit code."""
    try:
        return fn()
    except Exception as e:
        failure = expected(e)
        if failure is None:
            raise
        label, separator, code = failure
        err.print(f"[red]{label}[/red]{separator}{_escape(str(e))}")
        raise typer.Exit(code) from None


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def resolve_dsn(explicit: str | None) -> str:
    """The DSN to use (see session.resolve_dsn); exit 2 with a message when libpq cannot parse it."""
    import re

    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from zdm.engine.session import resolve_dsn as _resolve_dsn

    dsn = _resolve_dsn(explicit)
    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as e:
        # libpq quotes the offending token, which may be (part of) a password: not shown.
        reason = re.sub(r'"([^"]*)"', lambda m: m[0] if m[1] == "=" else '"…"', str(e).strip())
        err.print(f"[red]invalid connection string:[/red] {_escape(reason)}")
        raise typer.Exit(EXIT_USAGE) from None
    return dsn


@app.command()
def run(
    plan: PlanArg,
    dsn: DsnOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would run; change nothing.")
    ] = False,
    until: Annotated[Phase | None, typer.Option("--until", help="Stop after this phase.")] = None,
    cont: Annotated[
        bool, typer.Option("--continue", help="Pass the gate the run waits at.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Resume although the plan file changed.")
    ] = False,
    state_schema: StateOpt = "zdm",
    targets: TargetsOpt = None,
) -> None:
    """Run or resume a plan."""
    if targets is not None and not dry_run:
        raise typer.Exit(_fleet("run", plan, targets, state_schema))
    if dry_run:
        url = resolve_dsn(dsn) if (dsn or _env_dsn()) else None
        text = guarded(lambda: api.dry_run(plan, url, state_schema=state_schema))
        sys.stdout.write(text)
        return
    outcome = guarded(
        lambda: api.run_plan(
            plan,
            resolve_dsn(dsn),
            until=until.value if until else None,
            cont=cont,
            force=force,
            state_schema=state_schema,
        )
    )
    color = _color(outcome.status)
    err.print(f"[{color}]{outcome.status}[/{color}]: {_escape(outcome.message)}")
    raise typer.Exit(outcome.exit_code)


def _env_dsn() -> bool:
    import os

    return any(
        os.environ.get(v) for v in ("ZDM_DSN", "DATABASE_URL", "PGHOST", "PGDATABASE", "PGSERVICE")
    )


@app.command()
def status(
    plan: Annotated[
        str | None, typer.Argument(help="Plan file or name; all plans if omitted.")
    ] = None,
    dsn: DsnOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_schema: StateOpt = "zdm",
    targets: TargetsOpt = None,
) -> None:
    """Show runs: phase, step, backfill progress, rate, ETA, last error."""
    name = _plan_name(plan) if plan else None
    if targets is not None:
        _fleet_status(targets, name, as_json, state_schema)
        return
    runs = guarded(lambda: api.status(resolve_dsn(dsn), name, state_schema=state_schema))
    if as_json:
        sys.stdout.write(json.dumps([r.as_json() for r in runs], default=str, indent=2) + "\n")
        return
    if not runs:
        out.print("no runs recorded" + (f" for plan {name}" if name else ""))
        return
    for r in runs:
        _print_run(r)


def _fleet(verb: str, plan: Path, targets: Path, state_schema: str) -> int:
    from zdm.fleet.cli import fleet_command

    return fleet_command(verb, str(plan), str(targets), state_schema)


def _fleet_status(targets: Path, name: str | None, as_json: bool, state_schema: str) -> None:
    from rich.table import Table as RichTable

    from zdm.fleet.cli import status_rows

    rows = status_rows(str(targets), name, state_schema)
    if rows is None:
        raise typer.Exit(EXIT_USAGE)
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], default=str, indent=2) + "\n")
        return
    table = RichTable("target", "status", "phase", "step", "progress", "last error")
    for r in rows:
        table.add_row(*(_escape(str(v or "-")) for v in astuple(r)))
    out.print(table)


def _plan_name(plan: str) -> str:
    path = Path(plan)
    if path.suffix in (".yaml", ".yml", ".sql") and path.exists():
        return guarded(lambda: api.plan_name(path))
    return plan


def _color(status: str) -> str:
    from zdm.state import RunStatus

    colors: dict[str, str] = {RunStatus.COMPLETED: "green", RunStatus.WAITING: "yellow"}
    return colors.get(status, "red")


def _print_run(r: RunState) -> None:
    owner = f"{r.owner_host}:{r.owner_pid}" + (" (running now)" if r.owner_alive else "")
    out.print(
        f"[bold]{r.plan}[/bold]  run {r.id}  [bold]{r.status}[/bold]"
        + (f" ({r.waiting_for})" if r.waiting_for else "")
    )
    out.print(
        f"  phase {r.phase or '-'}, step {r.step or '-'}; owner {owner}; heartbeat {r.heartbeat}"
    )
    if r.last_error:
        out.print(f"  [red]last error:[/red] {_escape(r.last_error)}")
    errors = r.mapping_errors
    if errors.count:
        out.print(
            f"  [red]mapping errors:[/red] {errors.count} writes kept a column unmapped"
            " (the dual-write trigger's expression raised); first ones:"
        )
        for e in errors.first:
            out.print(
                f"    {e['table_name']} {json.dumps(e['row_key'])} {e['column_name'] or '-'}:"
                f" [{e['sqlstate']}] {_escape(e['message'])}"
            )
    bad = r.bad_rows
    if bad.count:
        out.print(f"  [red]rows the mapping cannot convert:[/red] {bad.count}")
        for e in bad.first:
            key = ", ".join(f"{k}={v}" for k, v in e["row_key"].items())
            out.print(f"    {e['table_name']} {key} ({e['source']}): {_escape(e['message'])}")
    for b in r.backfill_steps:
        workers = f", {b.workers} workers" if b.workers > 1 else ""
        out.print(f"  backfill {b.step}{workers}: {_backfill_line(b)}")
        for p in b.partitions:
            out.print(f"    partition {_escape(p.part)}: {_backfill_line(p)}")
        if b.workers > 1:
            for w in r.backfills:
                if w.ordinal == b.ordinal:
                    part = f" of {_escape(w.part)}" if w.part else ""
                    out.print(f"    worker {w.worker}{part}: {_backfill_line(w)}")
    header, *rows = columns(
        ("step", "kind", "status", "attempts", "error"),
        [(s.key, s.kind, s.status, str(s.attempts), _one_line(s.last_error)) for s in r.steps],
    )
    out.print(f"[bold]{_escape(header)}[/bold]")
    for row in rows:
        out.print(_escape(row))


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _backfill_line(b: BackfillProgress | PartitionProgress | WorkerProgress) -> str:
    """rows done / estimated, rows/s, ETA, batch size, and what the walk waits for."""
    est = b.rows_estimated or 0
    pct = f" ({min(100 * b.rows_done / est, 100):.0f}%)" if est else ""
    rate = f", {b.rows_per_s:,.0f} rows/s" if b.rows_per_s else ""
    eta = f", ETA {_duration(b.eta_s)}" if b.eta_s else ""
    batch = f", batch {b.batch_size:,}" if b.batch_size and not b.done else ""
    thr = f", [yellow]waiting: {_escape(b.throttle)}[/yellow]" if b.throttle else ""
    return f"{b.rows_done:,} / ~{est:,} rows{pct}{rate}{eta}{batch}{thr}" + (
        ", done" if b.done else ""
    )


def _duration(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@app.command()
def validate(
    ctx: typer.Context,
    plan: PlanArg,
    dsn: DsnOpt = None,
    scan: Annotated[
        bool,
        typer.Option(
            "--scan", help="Also evaluate the mappings on every row (read-only, batched)."
        ),
    ] = False,
) -> None:
    """Check a plan file; with a database, also against the live schema."""
    if scan and not (dsn or _env_dsn()):
        err.print("[red]--scan needs a database:[/red] give --dsn or ZDM_DSN")
        raise typer.Exit(EXIT_USAGE)
    url = resolve_dsn(dsn) if (dsn or _env_dsn()) else None
    if url:
        _configure_logs(ctx)
    loaded, problems = guarded(lambda: api.validate(plan, url))
    if scan and url and not problems:
        scanned = guarded(lambda: api.scan(plan, url))
        for s in scanned:
            sys.stdout.write(s.line() + "\n")
        bad = [s for s in scanned if s.bad]
        if bad:
            err.print(
                f"[red]plan {loaded.name}: {sum(s.bad for s in bad)} rows cannot be converted"
                "[/red]; fix them (or the expressions) before `zdm run`"
            )
            raise typer.Exit(EXIT_FAILED)  # findings, as lint's: the plan itself is valid
    if problems:
        err.print(f"[red]plan {loaded.name} does not fit the database[/red]")
        for p in problems:
            err.print(_escape(p))
        raise typer.Exit(EXIT_USAGE)
    steps = loaded.plan.steps()
    where = f" against {_redacted(url)}" if url else ""
    err.print(
        f"[green]ok[/green]: plan {loaded.name}, {len(steps)} steps in "
        f"{len({s.phase for s in steps})} phases{where}"
    )


def _redacted(url: str) -> str:
    from zdm.engine.session import redact

    return redact(url)


@app.command()
def expand(plan: PlanArg, dsn: DsnOpt = None) -> None:
    """Print the plan with its `changes` expanded into the five phases (YAML)."""
    url = resolve_dsn(dsn) if (dsn or _env_dsn()) else None
    sys.stdout.write(guarded(lambda: api.expand(plan, url)))


@app.command()
def schema() -> None:
    """Print the JSON Schema of plan files (for editors)."""
    from zdm.plan import plan_json_schema

    sys.stdout.write(json.dumps(plan_json_schema(), indent=2) + "\n")


@app.command()
def pause(
    plan: Annotated[str, typer.Argument(help="Plan file or name.")],
    dsn: DsnOpt = None,
    state_schema: StateOpt = "zdm",
) -> None:
    """Pause a running backfill after its current batch."""
    _pause(plan, dsn, True, state_schema)


@app.command()
def resume(
    plan: Annotated[str, typer.Argument(help="Plan file or name.")],
    dsn: DsnOpt = None,
    state_schema: StateOpt = "zdm",
) -> None:
    """Resume a paused backfill."""
    _pause(plan, dsn, False, state_schema)


def _pause(plan: str, dsn: str | None, paused: bool, state_schema: str) -> None:
    name = _plan_name(plan)
    run = guarded(lambda: api.pause(resolve_dsn(dsn), name, paused, state_schema=state_schema))
    if run is None:
        err.print(f"[red]no unfinished run of plan {name}[/red]")
        raise typer.Exit(EXIT_USAGE)
    err.print(
        f"{'pause' if paused else 'resume'} requested for plan {name} (run {run.id}, {run.status})"
    )


@app.command()
def seed(
    dsn: DsnOpt = None,
    rows: Annotated[int, typer.Option("--rows", help="How many users.")] = 200_000,
    schema_name: Annotated[
        str, typer.Option("--schema", help="Schema of the users table.")
    ] = "public",
) -> None:
    """Create the example users table (legacy phones in contact jsonb) and fill it."""
    import psycopg

    from zdm.demo.seed import create_schema, seed_users
    from zdm.engine.session import connect

    def go() -> None:
        with connect(resolve_dsn(dsn), "seed") as conn:
            create_schema(conn, schema=schema_name)
            seed_users(conn, rows, schema=schema_name)

    try:
        guarded(go)
    except psycopg.Error as e:
        err.print(f"[red]error:[/red] {_escape(str(e).strip())}")
        raise typer.Exit(EXIT_FAILED) from None
    err.print(f"[green]seeded[/green] {rows:,} users in {schema_name}.users")


@app.command()
def rollback(
    plan: PlanArg,
    dsn: DsnOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would run; change nothing.")
    ] = False,
    state_schema: StateOpt = "zdm",
    targets: TargetsOpt = None,
) -> None:
    """Undo a run's completed steps in reverse order; refuses to pass irreversible ones."""
    if targets is not None and not dry_run:
        raise typer.Exit(_fleet("rollback", plan, targets, state_schema))
    if dry_run:
        text = guarded(
            lambda: api.rollback_dry_run(plan, resolve_dsn(dsn), state_schema=state_schema)
        )
        sys.stdout.write(text)
        return
    outcome = guarded(lambda: api.rollback(plan, resolve_dsn(dsn), state_schema=state_schema))
    color = "green" if outcome.exit_code == 0 else "red"
    err.print(f"[{color}]{outcome.status}[/{color}]: {_escape(outcome.message)}")
    raise typer.Exit(outcome.exit_code)


DirArg = Annotated[
    Path,
    typer.Argument(
        help="Directory of V001__name.yaml / 20250108120000_name.yaml plans and V001__name.sql files.",
        show_default=False,
    ),
]


@app.command()
def migrate(
    directory: DirArg,
    dsn: DsnOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would run; change nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Accept applied files that changed, and files older than applied ones."
        ),
    ] = False,
    cont: Annotated[
        bool, typer.Option("--continue", help="Pass the gate the next migration waits at.")
    ] = False,
    state_schema: StateOpt = "zdm",
    targets: TargetsOpt = None,
) -> None:
    """Apply a directory's plans in version order; skip applied ones, stop at a gate or failure."""
    if targets is not None and not dry_run:
        raise typer.Exit(_fleet("migrate", directory, targets, state_schema))
    if dry_run:
        url = resolve_dsn(dsn) if (dsn or _env_dsn()) else None
        text = guarded(
            lambda: api.migrate_dry_run(directory, url, force=force, state_schema=state_schema)
        )
        sys.stdout.write(text)
        return
    outcome = guarded(
        lambda: api.migrate(
            directory, resolve_dsn(dsn), force=force, cont=cont, state_schema=state_schema
        )
    )
    for file in outcome.applied:
        err.print(f"applied {_escape(file)}")
    color = _color(outcome.status)
    err.print(f"[{color}]{outcome.status}[/{color}]: {_escape(outcome.message)}")
    raise typer.Exit(outcome.exit_code)


@app.command()
def history(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Also list this directory's migrations not applied yet."),
    ] = None,
    dsn: DsnOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state_schema: StateOpt = "zdm",
) -> None:
    """List the migrations `zdm migrate` applied: version, file, status, run, checksum."""
    rows = guarded(lambda: api.history(resolve_dsn(dsn), directory, state_schema=state_schema))
    if as_json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], default=str, indent=2) + "\n")
        return
    if not rows:
        out.print("no migrations recorded")
        return
    lines = [("version", "file", "status", "run", "applied at", "sha256", "note")]
    for r in rows:
        note = "file changed since applied" if r.changed else ""
        note = "file missing" if r.missing else note
        applied_at = r.applied_at.strftime("%Y-%m-%d %H:%M:%S") if r.applied_at else "-"
        run = str(r.run_id or "-")
        lines.append((r.version, r.file, r.status, run, applied_at, r.sha256[:12], note))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for n, line in enumerate(lines):
        text = "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        out.print(f"[bold]{text}[/bold]" if n == 0 else _escape(text))


@app.command()
def lint(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Plan files (.yaml), .sql files or directories; - reads SQL from stdin."
        ),
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="text (default), json, github or sarif.")
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option("--exclude", "-e", help="A rule not to report (repeat, or comma-separated)."),
    ] = None,
    pg_version: Annotated[
        int | None, typer.Option("--pg-version", help="Major version of the target server.")
    ] = None,
    assume_in_transaction: Annotated[
        bool | None,
        typer.Option(
            "--assume-in-transaction/--no-assume-in-transaction",
            help="Each SQL file runs in one transaction, or statement by statement. Default: "
            "files in one transaction (as migration tools run them), stdin as written.",
            show_default=False,
        ),
    ] = None,
    dsn: Annotated[
        str | None,
        typer.Option(
            "--dsn",
            help="Lint against this live database: current column types, table sizes, version.",
        ),
    ] = None,
) -> None:
    """Static safety checks of plans and .sql migrations (exit 1 on findings).

    Settings may also come from \\[tool.zdm.lint] in pyproject.toml or \\[lint] in .zdm.toml.
    """
    from zdm.lint import LintOptions, run_lint
    from zdm.lint.config import ConfigError, load_config

    try:
        config = load_config(Path.cwd())
    except ConfigError as e:
        err.print(f"zdm lint: {_escape(str(e))}")
        raise typer.Exit(EXIT_USAGE) from None
    names = [*config.exclude, *(exclude or [])]
    stdin = sys.stdin.read() if any(str(p) == "-" for p in paths) else None
    options = LintOptions(
        exclude=frozenset(r.strip() for n in names for r in n.split(",") if r.strip()),
        assume_in_transaction=(
            assume_in_transaction
            if assume_in_transaction is not None
            else config.assume_in_transaction
        ),
        stdin=stdin,
        pg_version=pg_version if pg_version is not None else config.pg_version,
        dsn=resolve_dsn(dsn) if dsn else None,
    )
    chosen = fmt or config.format or "text"
    raise typer.Exit(run_lint([str(p) for p in paths], chosen, sys.stdout, options))


@app.command()
def convert(
    sql_file: Annotated[
        Path,
        typer.Argument(
            help="A .sql migration, a pgroll migration (.json/.yaml) or a folder of pgroll "
            "migrations to turn into zdm plans; - reads stdin."
        ),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the plan here.")
    ] = None,
) -> None:
    """Write a five-phase zdm plan that makes the same change as a .sql file or a pgroll
    migration, safely; a folder of pgroll migrations becomes a folder of numbered plans."""
    from zdm.lint.convert import convert_command

    stdin = sys.stdin.read() if str(sql_file) == "-" else None
    raise typer.Exit(convert_command(sql_file, output, sys.stdout, stdin))


@app.command()
def demo(
    rows: Annotated[int, typer.Option("--rows", help="Users in the example table.")] = 200_000,
    compare_naive: Annotated[
        bool,
        typer.Option("--compare-naive", help="Also make the change the naive way, and compare."),
    ] = False,
    threads: Annotated[int, typer.Option("--threads", help="Application traffic threads.")] = 4,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Also write the report as a page with the latency chart (zdm\\[report])."
        ),
    ] = None,
) -> None:
    """Start an embedded PostgreSQL, seed users, run plans/add_phone.yaml under live traffic, report."""
    from zdm.demo.run import demo_command

    raise typer.Exit(
        guarded(
            lambda: demo_command(
                rows=rows, compare_naive=compare_naive, threads=threads, out=sys.stdout, html=html
            )
        )
    )


@app.command()
def report(
    plan: Annotated[
        str | None, typer.Argument(help="Plan file or name; the latest run if omitted.")
    ] = None,
    dsn: DsnOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    state_schema: StateOpt = "zdm",
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write a self-contained page: the application's latency over time, the"
            " phases and the units that held blocking locks, beside the report (zdm\\[report]).",
        ),
    ] = None,
    latency: Annotated[
        Path | None,
        typer.Option(
            "--latency",
            help="The application's latency during the run: CSV timestamp,latency_ms or JSON.",
        ),
    ] = None,
    naive: Annotated[
        Path | None,
        typer.Option(
            "--compare-naive",
            help="A latency file of the same change made the naive way, drawn on the same scales.",
        ),
    ] = None,
) -> None:
    """The record of a run to attach to a change ticket."""
    if html is None and (latency is not None or naive is not None):
        err.print("[red]--latency and --compare-naive draw on the page:[/red] give --html FILE")
        raise typer.Exit(EXIT_USAGE)
    name = _plan_name(plan) if plan else None
    if html is not None:
        from zdm.report_html import report_page_command

        raise typer.Exit(
            guarded(
                lambda: report_page_command(
                    resolve_dsn(dsn),
                    name,
                    fmt,
                    sys.stdout,
                    page_path=html,
                    latency=latency,
                    naive=naive,
                    state_schema=state_schema,
                )
            )
        )
    from zdm.report import report_command

    raise typer.Exit(
        guarded(
            lambda: report_command(
                resolve_dsn(dsn), name, fmt, sys.stdout, state_schema=state_schema
            )
        )
    )


def main() -> None:
    app()
