"""How fast does zdm backfill, against one plain UPDATE of the same rows?

For each size, one `users` table is seeded (`zdm.demo.seed`), given a `phone` column and the
dual-write trigger of plans/add_phone.yaml, vacuumed and checkpointed; every method then gets
its own file copy of that database on the same server:

- UPDATE: `UPDATE users SET phone = <expression>` (one statement, one transaction), then
  `ALTER TABLE users ALTER COLUMN phone SET NOT NULL` (pgroll's benchmark workload: fill a NULL
  column and make it NOT NULL): the baseline every ratio is against;
- UPDATE WHERE: the same with the exact predicate, `WHERE phone IS DISTINCT FROM <expression>`
  (which evaluates the expression twice a row);
- UPDATE, trigger passed over: the plain UPDATE in a transaction whose `zdm.skip_triggers`
  names the trigger's mapping, so its WHEN clause passes every row over, as it does zdm's
  batches: the same work a row as zdm's batches, in one statement (`--methods
  update-no-trigger`; not among the defaults);
- zdm: `zdm run` of a plan with the dual_write step (which adopts the trigger already there),
  the backfill (`batch_size: auto`, the product's default `batch_time` unless `--batch-time`,
  the mapping taken from the dual_write) and a `set_not_null` step, with 1 worker, then with
  N workers (`zdm-workers-every-row`: N workers, the proof evaluating the predicate on every
  row, as before 2026-12-02). Its time is the whole
  run: the key split, every batch with its checkpoint, the final proof that no row is left (a
  parallel count over the whole table that evaluates the predicate on the rows its batches did
  not write, shown apart as "proof s"; "walk vs UPDATE" leaves it out).

After each UPDATE the first full read of the table is timed apart ("next read s", not counted):
the first reader of a million new row versions sets their hint bits and prunes the old ones,
work zdm's proof does inside the step.

    python bench/backfill.py                      # 100k, 1M and 5M rows, one run each
    python bench/backfill.py --sizes 100k,1M,5M --repeat 3   # medians of 3: ~15 min, quiet host
    python bench/backfill.py --sizes 5M --methods zdm,zdm-workers --setting max_wal_size=4GB
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo
from structlog.testing import capture_logs

from zdm import api
from zdm.ddl import Txn
from zdm.demo.seed import create_schema, phone_expression, seed_users
from zdm.demo.testing import EmbeddedServer
from zdm.engine.backfill import walk
from zdm.operations import Context, plan_step
from zdm.operations.dual_write import mapping_token, skip_setting
from zdm.plan import DualWrite

DUAL_WRITE = DualWrite(table="users", set={"phone": phone_expression()})

SHOWN_SETTINGS = (
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "synchronous_commit",
    "fsync",
    "max_parallel_workers_per_gather",
)


@dataclass
class Result:
    rows: int
    method: str
    seconds: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    proof: list[float] = field(default_factory=list)
    next_read: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / statistics.median(self.seconds)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    for suffix, factor in (("k", 1_000), ("m", 1_000_000)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def template(admin: str, name: str, rows: int) -> None:
    """The seeded table in the state a backfill finds it in: new column, dual-write trigger."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(make_conninfo(admin, dbname=name), autocommit=True) as conn:
        create_schema(conn)
        seed_users(conn, rows)
        conn.execute("ALTER TABLE users ADD COLUMN phone varchar(20)")
        (unit,) = plan_step(DUAL_WRITE, Context())  # the trigger exactly as zdm creates it
        assert isinstance(unit, Txn)
        for statement in unit.statements:
            conn.execute(statement.sql)
        conn.execute("VACUUM ANALYZE users")


@contextmanager
def copy_of(admin: str, source: str, name: str) -> Iterator[str]:
    """A file copy of database `source`, checkpointed so no trial pays for another's writes."""
    with psycopg.connect(admin, autocommit=True) as conn:
        version = conn.info.server_version
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        strategy = sql.SQL(" STRATEGY FILE_COPY") if version >= 150000 else sql.SQL("")
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(
                sql.Identifier(name), sql.Identifier(source), strategy
            )
        )
        conn.execute("CHECKPOINT")
    try:
        yield make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def plain_update(
    dsn: str, rows: int, *, where: bool = False, trigger: bool = True, not_null: bool = True
) -> tuple[float, float]:
    """Seconds of the UPDATE, and of the first full read after it, which is not counted: that
    reader sets the hint bits of a million new row versions and prunes the old ones (zdm's
    proof is that first reader of the rows it wrote, and its seconds include it).
    Without `trigger`, the dual-write trigger passes the UPDATE over, as it does zdm's batches."""
    expr = sql.SQL(phone_expression())
    query = sql.SQL("UPDATE users SET phone = {}").format(expr)
    if where:
        query += sql.SQL(" WHERE phone IS DISTINCT FROM ({})").format(expr)
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        with conn.transaction():
            if not trigger:
                conn.execute(skip_setting([mapping_token(DUAL_WRITE.set, DUAL_WRITE.reverse)]))
            updated = conn.execute(query).rowcount
        if not_null:
            conn.execute("ALTER TABLE users ALTER COLUMN phone SET NOT NULL")
        seconds = time.monotonic() - started
        started = time.monotonic()
        conn.execute("SELECT count(*) FROM users").fetchone()
        next_read = time.monotonic() - started
    assert updated == rows, updated
    return seconds, next_read


def zdm_backfill(
    dsn: str, rows: int, workers: int, batch_time: str | None, work: Path, *, not_null: bool = True
) -> dict[str, Any]:
    plan = work / f"bench_backfill_{workers}.yaml"
    options: dict[str, Any] = {"table": "users", "batch_size": "auto", "workers": workers}
    if batch_time is not None:
        options["batch_time"] = batch_time
    cleanup = [{"set_not_null": {"table": "users", "column": "phone"}}] if not_null else []
    plan.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "name": plan.stem,
                "phases": {
                    # Already there (the template made it): the step adopts it, and the backfill
                    # takes its mapping, as in plans/add_phone.yaml.
                    "dual_write": [{"dual_write": DUAL_WRITE.model_dump(exclude_none=True)}],
                    "backfill": [{"backfill": options}],
                    **({"cleanup": cleanup} if cleanup else {}),
                },
            }
        )
    )
    with capture_logs() as logs:
        started = time.monotonic()
        outcome = api.run_plan(plan, dsn)
        seconds = time.monotonic() - started
    assert outcome.status == "completed", outcome.message
    walked = next(e for e in logs if e["event"] == "backfill_walked")
    proof = sum(e["ms"] for e in logs if e["event"] == "backfill_proof") / 1000
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM users WHERE phone IS DISTINCT FROM ({})").format(
                sql.SQL(phone_expression())
            )
        ).fetchone()
    assert row is not None and row[0] == 0, "the backfill left rows behind"
    assert walked["rows_walked"] == rows, walked
    return {
        "seconds": seconds,
        "p50": walked["batch_ms_p50"],
        "p99": walked["batch_ms_p99"],
        "batches": walked["batches"],
        "proof": proof,
        "done": sorted(
            (e["seconds"], e["rows_walked"]) for e in logs if e["event"] == "backfill_worker_done"
        ),
    }


@contextmanager
def every_row_proof(on: bool) -> Iterator[None]:
    """The proof as it was before it took the rows its batches wrote as done: the predicate on
    every row (what a walk with a `where`, a trigger or a STABLE expression still gets)."""
    saved = walk.construction_doubt
    if on:
        walk.construction_doubt = lambda *_a, **_k: "the benchmark asks for every row"
    try:
        yield
    finally:
        walk.construction_doubt = saved


def fmt_rows(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


def table(results: Sequence[Result]) -> str:
    head = (
        "rows",
        "method",
        "seconds",
        "rows/s",
        "vs UPDATE",
        "walk vs UPDATE",
        "proof s",
        "next read s",
        "batches",
        "p50 ms",
        "p99 ms",
    )
    lines = []
    baseline: dict[int, float] = {}
    for r in results:
        if r.method == "UPDATE":
            baseline[r.rows] = r.rate
        ratio = f"{r.rate / baseline[r.rows]:.2f}x" if r.rows in baseline else "-"
        walk = "-"
        if r.proof and r.rows in baseline:
            walked = r.rows / statistics.median(
                s - p for s, p in zip(r.seconds, r.proof, strict=True)
            )
            walk = f"{walked / baseline[r.rows]:.2f}x"
        lines.append(
            (
                fmt_rows(r.rows),
                r.method,
                f"{statistics.median(r.seconds):.1f}",
                f"{r.rate:,.0f}",
                ratio,
                walk,
                f"{statistics.median(r.proof):.1f}" if r.proof else "-",
                f"{statistics.median(r.next_read):.1f}" if r.next_read else "-",
                str(round(statistics.median(r.batches))) if r.batches else "1",
                f"{statistics.median(r.p50):.0f}" if r.p50 else "-",
                f"{statistics.median(r.p99):.0f}" if r.p99 else "-",
            )
        )
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]

    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    out = [row(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [row(cells) for cells in lines]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1M,5M", help="comma-separated row counts")
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel run")
    parser.add_argument(
        "--batch-time", help="batch_time of the plan (default: the product's default, 50ms)"
    )
    parser.add_argument(
        "--no-not-null",
        action="store_true",
        help="leave out the SET NOT NULL after the UPDATE and the set_not_null step after zdm's",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each method (median)")
    parser.add_argument(
        "--methods",
        default="update,update-where,zdm,zdm-workers",
        help="which of update, update-where, update-no-trigger, zdm (1 worker), zdm-workers,"
        " zdm-workers-every-row to run",
    )
    parser.add_argument("--dsn", help="a server to use instead of an embedded one (superuser)")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a reloadable server setting of the embedded server, e.g. max_wal_size=4GB",
    )
    args = parser.parse_args(argv)
    settings = dict(s.split("=", 1) for s in args.setting)
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    with (
        contextmanager(lambda: server(args.dsn, settings))() as admin,
        tempfile.TemporaryDirectory() as tmp,
    ):
        with psycopg.connect(admin) as conn:
            shown = ", ".join(
                f"{name}={conn.execute(sql.SQL('SHOW {}').format(sql.Identifier(name))).fetchone()[0]}"  # type: ignore[index]
                for name in SHOWN_SETTINGS
            )
            print(f"PostgreSQL {conn.info.server_version}; {shown}", file=sys.stderr)
        results: list[Result] = []
        for rows in sizes:
            print(f"seeding {rows:,} rows...", file=sys.stderr)
            template(admin, "bench_backfill_tpl", rows)
            names = {
                "update": "UPDATE",
                "update-where": "UPDATE WHERE",
                "update-no-trigger": "UPDATE, trigger passed over",
                "zdm": "zdm, 1 worker",
                "zdm-workers": f"zdm, {args.workers} workers",
                "zdm-workers-every-row": f"zdm, {args.workers} workers, proof on every row",
            }
            methods = [names[m.strip()] for m in args.methods.split(",")]
            found = {m: Result(rows, m) for m in methods}
            for i in range(args.repeat):
                # Each repeat starts with the next method: what runs first after the seeding (or
                # right after another method's writes) is not always the same one.
                for m in methods[i % len(methods) :] + methods[: i % len(methods)]:
                    with copy_of(admin, "bench_backfill_tpl", "bench_backfill_run") as dsn:
                        if m.startswith("UPDATE"):
                            seconds, next_read = plain_update(
                                dsn,
                                rows,
                                where=m == "UPDATE WHERE",
                                trigger="trigger" not in m,
                                not_null=not args.no_not_null,
                            )
                            found[m].seconds.append(seconds)
                            found[m].next_read.append(next_read)
                            detail = f", next read {next_read:.1f}s"
                        else:
                            n = 1 if m.endswith("1 worker") else args.workers
                            with every_row_proof(m.endswith("every row")):
                                got = zdm_backfill(
                                    dsn,
                                    rows,
                                    n,
                                    args.batch_time,
                                    Path(tmp),
                                    not_null=not args.no_not_null,
                                )
                            found[m].seconds.append(got["seconds"])
                            found[m].p50.append(got["p50"])
                            found[m].p99.append(got["p99"])
                            found[m].batches.append(got["batches"])
                            found[m].proof.append(got["proof"])
                            detail = (
                                f", proof {got['proof']:.1f}s, workers done after"
                                " " + ", ".join(f"{s:.1f}s ({n:,} rows)" for s, n in got["done"])
                            )
                    r = found[m]
                    print(
                        f"  {fmt_rows(rows)} {m} (run {i + 1}): {r.seconds[-1]:.1f}s,"
                        f" {rows / r.seconds[-1]:,.0f} rows/s{detail}",
                        file=sys.stderr,
                    )
            results += found.values()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute("DROP DATABASE bench_backfill_tpl")
        print(table(results))
    return 0


def server(dsn: str | None, settings: dict[str, str]) -> Iterator[str]:
    if dsn:
        yield dsn
        return
    with EmbeddedServer(settings=settings) as embedded:
        yield embedded.dsn


if __name__ == "__main__":
    sys.exit(main())
