"""`zdm report`: the record of a run that a team attaches to its change ticket.

Everything comes from zdm's state tables (runs, steps, backfills, events) and the live catalog,
so the report can be written from any terminal, during or after the run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg
from psycopg import sql

from zdm.engine.session import connect, redact
from zdm.plan import PHASES, PlanError, load_plan
from zdm.state import StepStatus, Store

# Events of zdm.events that the report lists under lock waits and retries.
WAIT_EVENTS = ("lock_retry", "long_holder_wait", "autovacuum_cancelled", "autovacuum_not_cancelled")


FORMATS = ("markdown", "json")

EXIT_OK, EXIT_NO_RUN = 0, 2

DOWNTIME_MEANING = (
    "the longest time one zdm transaction held (or queued for) a lock that blocks the"
    " application's reads or writes: that unit's duration from BEGIN to COMMIT, so the longest"
    " any application statement could have waited behind zdm"
)


def report_command(
    dsn: str, plan: str | None, fmt: str, out: TextIO, *, state_schema: str = "zdm"
) -> int:
    """Writes the report of `plan`'s latest run (else the latest run of any plan) to `out`."""
    if not known_format(fmt):
        return EXIT_NO_RUN
    record = latest_record(dsn, plan, state_schema=state_schema)
    if record is None:
        return EXIT_NO_RUN
    out.write(as_json(record) if fmt == "json" else markdown(record))
    return EXIT_OK


def known_format(fmt: str) -> bool:
    """Whether `fmt` is a report format; says so on stderr when it is not."""
    if fmt in FORMATS:
        return True
    print(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}", file=sys.stderr)
    return False


def latest_record(dsn: str, plan: str | None, *, state_schema: str) -> dict[str, Any] | None:
    """The record of `plan`'s latest run (else of any plan's); None, said on stderr, when no
    run is recorded."""
    with connect(dsn, "report") as conn:
        record = collect(conn, dsn, plan, state_schema=state_schema)
    if record is None:
        what = f"plan {plan}" if plan else "any plan"
        print(f"no run of {what} is recorded in schema {state_schema}", file=sys.stderr)
    return record


def as_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, default=str) + "\n"


# -- collecting ------------------------------------------------------------------------------


def collect(
    conn: psycopg.Connection[Any],
    dsn: str,
    plan: str | None = None,
    *,
    run_id: int | None = None,
    state_schema: str = "zdm",
) -> dict[str, Any] | None:
    """The record of one run as JSON-ready data; None when there is no such run."""
    store = Store(state_schema)
    if not store.exists(conn):
        return None
    if run_id is not None:
        run = store.get_run(conn, run_id)
    else:
        names = [plan] if plan else store.all_plans(conn)[:1]
        latest = [store.latest_run(conn, n) for n in names]
        found = [r for r in latest if r is not None]
        if not found:
            return None
        run = found[0]
    steps = store.steps(conn, run.id)
    events = store.events(conn, run.id)
    backfills = store.backfills(conn, run.id)
    key_of = {s.ordinal: s.key for s in steps}
    specs, description = _plan_file(run.plan_path, run.plan_sha256)

    statements = [
        {
            "step": key_of.get(e["ordinal"]),
            "unit": e["detail"].get("unit"),
            "lock": e["detail"].get("lock"),
            "blocks_app": bool(e["detail"].get("blocks_app")),
            "ms": e["detail"].get("ms"),
            "held_ms": e["detail"].get("held_ms", e["detail"].get("ms")),
            "attempts": e["detail"].get("attempts", 1),
            "sql": e["detail"].get("sql", []),
            "finished_at": _iso(e["at"]),
        }
        for e in events
        if e["event"] == "unit_done"
    ]
    waits = [
        {
            "step": key_of.get(e["ordinal"]),
            "event": e["event"],
            "at": _iso(e["at"]),
            **e["detail"],
        }
        for e in events
        if e["event"] in WAIT_EVENTS
    ]
    verifies = [
        {"step": key_of.get(e["ordinal"]), **e["detail"]} for e in events if e["event"] == "verify"
    ]
    # What each unit proved or built, as the executor recorded it from the unit's statements.
    units = [(key_of.get(e["ordinal"]), e["detail"]) for e in events if e["event"] == "unit_done"]
    return {
        "generated_at": _iso(datetime.now(UTC)),
        "database": _database(conn, dsn),
        "plan": {
            "name": run.plan,
            "path": run.plan_path,
            "sha256": run.plan_sha256,
            "file_now": _file_state(run.plan_path, run.plan_sha256),
            "description": description,
        },
        "run": {
            "id": run.id,
            "direction": run.direction,
            "status": run.status,
            "waiting_for": run.waiting_for,
            "owner": f"{run.owner_host}:{run.owner_pid}",
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "duration_s": _seconds(run.started_at, run.finished_at or run.updated_at),
            "last_error": run.last_error,
        },
        "phases": _phases(steps, specs),
        "statements": statements,
        "lock_waits": waits,
        "backfills": [
            {
                "step": key_of.get(b.ordinal),
                "partition": b.part or None,
                "worker": b.worker,
                "rows_done": b.rows_done,
                "rows_updated": b.rows_updated,
                "rows_estimated": b.rows_estimated,
                "batches": b.batches,
                "last_batch_size": b.batch_size,
                "seconds": _seconds(b.started_at, b.updated_at),
                "rows_per_s": _rate(b.rows_done, _seconds(b.started_at, b.updated_at)),
                "done": b.done or _step_done(steps, b.ordinal),
            }
            for b in backfills
        ],
        "integrity": {
            "verify": verifies,
            "backfills_proven_complete": list(
                dict.fromkeys(
                    key_of.get(b.ordinal)
                    for b in backfills
                    if b.done or _step_done(steps, b.ordinal)
                )
            ),
            "constraints_validated": _validated_constraints(conn, units),
            "indexes_built": _indexes(conn, units),
        },
        "downtime": _downtime(statements),
    }


def _plan_file(path: str | None, sha256: str) -> tuple[dict[str, Any], str | None]:
    """Each step's fields by key, and the description, when the plan file is still unchanged."""
    if not path or _file_state(path, sha256) != "unchanged":
        return {}, None
    try:
        loaded = load_plan(path)
    except PlanError:
        return {}, None
    specs = {
        s.key: s.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        for s in loaded.steps()
    }
    return specs, (loaded.plan.description or "").strip() or None


def _file_state(path: str | None, sha256: str) -> str:
    if not path:
        return "unknown"
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "missing"
    return "unchanged" if hashlib.sha256(data).hexdigest() == sha256 else "changed"


def _database(conn: psycopg.Connection[Any], dsn: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT current_database(), current_setting('server_version'),"
        " current_setting('server_version_num')::int"
    ).fetchone()
    assert row is not None
    return {
        "dsn": redact(dsn) or "(libpq PG* environment)",
        "name": row[0],
        "server_version": row[1],
        "server_version_num": row[2],
    }


def _phases(steps: list[Any], specs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for phase in PHASES:
        mine = [s for s in steps if s.phase == phase]
        if not mine:
            continue
        starts = [s.started_at for s in mine if s.started_at is not None]
        ends = [s.finished_at for s in mine if s.finished_at is not None]
        done = all(s.status == StepStatus.DONE for s in mine)
        out.append(
            {
                "phase": phase,
                "started_at": _iso(min(starts)) if starts else None,
                "finished_at": _iso(max(ends)) if ends and done else None,
                "duration_s": _seconds(min(starts), max(ends))
                if starts and ends and done
                else None,
                "steps": [
                    {
                        "key": s.key,
                        "kind": s.kind,
                        "status": s.status,
                        "attempts": s.attempts,
                        "started_at": _iso(s.started_at),
                        "finished_at": _iso(s.finished_at),
                        "duration_s": _seconds(s.started_at, s.finished_at),
                        "fields": specs.get(s.key),
                        "last_error": s.last_error,
                    }
                    for s in mine
                ],
            }
        )
    return out


def _step_done(steps: list[Any], ordinal: int) -> bool:
    return any(s.ordinal == ordinal and s.status == StepStatus.DONE for s in steps)


def _validated_constraints(
    conn: psycopg.Connection[Any], units: list[tuple[str | None, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Constraints a VALIDATE proved against every row, and whether they still stand."""
    found = []
    for step, detail in units:
        for schema, table, name in detail.get("validated", []):
            qualified = sql.Identifier(schema, table).as_string(conn)
            row = conn.execute(
                "SELECT convalidated FROM pg_constraint"
                " WHERE conname = %s AND conrelid = to_regclass(%s)",
                [name, qualified],
            ).fetchone()
            now = "absent" if row is None else ("validated" if row[0] else "NOT VALID")
            found.append({"constraint": name, "table": qualified, "step": step, "now": now})
    return found


def _indexes(
    conn: psycopg.Connection[Any], units: list[tuple[str | None, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Indexes a concurrent build made, and whether they are valid now."""
    found = []
    for step, detail in units:
        for schema, name in detail.get("indexes", []):
            row = conn.execute(
                "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                [sql.Identifier(schema, name).as_string(conn)],
            ).fetchone()
            now = "absent" if row is None else ("valid" if row[0] else "INVALID")
            found.append({"index": name, "step": step, "now": now})
    return found


def _downtime(statements: list[dict[str, Any]]) -> dict[str, Any]:
    blocking = [s for s in statements if s["blocks_app"]]
    worst = max(blocking, key=lambda s: s["held_ms"] or 0, default=None)
    return {
        "max_ms": worst["held_ms"] if worst else 0,
        "unit": worst["unit"] if worst else None,
        "lock": worst["lock"] if worst else None,
        "step": worst["step"] if worst else None,
        "blocking_units": len(blocking),
        "total_ms": sum(s["held_ms"] or 0 for s in blocking),
        "meaning": DOWNTIME_MEANING,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") if value is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _rate(rows: int, seconds: float | None) -> float | None:
    return round(rows / seconds) if seconds and rows else None


# -- markdown --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _fields(fields: Any) -> str:
    if not fields:
        return ""
    return ", ".join(f"{k}: {json.dumps(v)}" for k, v in fields.items())


def markdown(r: dict[str, Any]) -> str:
    db, plan, run, down = r["database"], r["plan"], r["run"], r["downtime"]
    lines = [
        f"# Migration record: plan `{plan['name']}`, run {run['id']}",
        "",
        f"- **Database:** `{db['name']}` on PostgreSQL {db['server_version']} (`{db['dsn']}`)",
        f"- **Plan file:** `{plan['path']}` (now {plan['file_now']})",
        f"- **Plan sha256:** `{plan['sha256']}`",
        f"- **Run:** {run['direction']}, **{run['status']}**"
        + (f" ({run['waiting_for']})" if run["waiting_for"] else "")
        + f", by {run['owner']}, {run['started_at']} → {run['finished_at'] or '(unfinished)'}"
        f" ({_dur(run['duration_s'])})",
    ]
    if plan["description"]:
        lines.append(f"- **Description:** {plan['description']}")
    if run["last_error"]:
        lines.append(f"- **Last error:** {_cell(run['last_error'])}")
    lines += [
        f"- **Measured downtime:** {down['max_ms']} ms"
        + (f" — `{down['unit']}` ({down['lock']}, step {down['step']})" if down["unit"] else "")
        + f"; {down['blocking_units']} application-blocking units, {down['total_ms']} ms in all",
        "",
        f"> Measured downtime is {down['meaning']}.",
        "",
        "## Strategy and durations",
        "",
    ]
    rows: list[list[Any]] = []
    for ph in r["phases"]:
        rows.append([f"**{ph['phase']}**", "", "", "", _dur(ph["duration_s"])])
        for s in ph["steps"]:
            rows.append(
                [s["key"], s["kind"], _fields(s["fields"]), s["status"], _dur(s["duration_s"])]
            )
    lines += _table(["phase / step", "kind", "fields", "status", "duration"], rows)

    lines += ["## Statements run", ""]
    lines += _table(
        ["step", "unit", "lock", "blocks app", "held", "attempts", "SQL"],
        [
            [
                s["step"],
                s["unit"],
                s["lock"],
                "yes" if s["blocks_app"] else "no",
                f"{s['held_ms']} ms",
                s["attempts"],
                "<br>".join(f"`{q}`" for q in s["sql"]),
            ]
            for s in r["statements"]
        ],
    )
    lines += ["## Lock waits and retries", ""]
    if r["lock_waits"]:
        lines += _table(
            ["at", "step", "unit", "what", "who was in the way"],
            [
                [
                    w["at"],
                    w["step"],
                    w.get("unit"),
                    _wait_what(w),
                    _sessions(w.get("blockers") or w.get("holders") or [w.get("holder") or {}]),
                ]
                for w in r["lock_waits"]
            ],
        )
    else:
        lines += ["None: every lock was granted at the first attempt.", ""]
    lines += ["## Rows backfilled", ""]
    if r["backfills"]:
        lines += _table(
            [
                "step",
                "rows walked",
                "rows updated",
                "estimated",
                "batches",
                "time",
                "rows/s",
                "done",
            ],
            [
                [
                    f"{b['step']} {b['partition']}" if b.get("partition") else b["step"],
                    f"{b['rows_done']:,}",
                    f"{b['rows_updated']:,}",
                    f"{b['rows_estimated']:,}" if b["rows_estimated"] is not None else "-",
                    b["batches"],
                    _dur(b["seconds"]),
                    f"{b['rows_per_s']:,}" if b["rows_per_s"] else "-",
                    "yes" if b["done"] else "no",
                ]
                for b in r["backfills"]
            ],
        )
    else:
        lines += ["No backfill.", ""]
    lines += ["## Integrity checks", ""]
    integ = r["integrity"]
    checks: list[list[Any]] = []
    for v in integ["verify"]:
        checks.append(
            [
                v["step"],
                f"verify: {v.get('label')}",
                f"`{v.get('sql')}` returned {v.get('value')!r}, expected {v.get('expect')!r}",
                "pass" if v.get("ok") else "FAIL",
            ]
        )
    for key in integ["backfills_proven_complete"]:
        checks.append(
            [key, "backfill complete", "no row still matches the backfill predicate", "pass"]
        )
    for c in integ["constraints_validated"]:
        checks.append(
            [
                c["step"],
                f"constraint {c['constraint']}",
                f"VALIDATE on {c['table']}; now {c['now']}",
                "pass",
            ]
        )
    for i in integ["indexes_built"]:
        checks.append(
            [
                i["step"],
                f"index {i['index']}",
                f"built concurrently; now {i['now']}",
                "pass" if i["now"] == "valid" else i["now"],
            ]
        )
    if checks:
        lines += _table(["step", "check", "detail", "result"], checks)
    else:
        lines += ["None recorded.", ""]
    lines.append(f"_Generated {r['generated_at']} by `zdm report`._")
    return "\n".join(lines) + "\n"


def _wait_what(w: dict[str, Any]) -> str:
    if w["event"] == "lock_retry":
        return f"retry after attempt {w.get('attempt')} ({w.get('error')})"
    if w["event"] == "autovacuum_cancelled":
        return "cancelled an autovacuum in the way (it comes back later)"
    if w["event"] == "autovacuum_not_cancelled":
        return f"could not cancel an autovacuum in the way ({w.get('error')}); waited for it"
    return "waited for a long transaction (without queueing)"


def _sessions(sessions: list[dict[str, Any]]) -> str:
    return (
        "; ".join(
            f"pid {s.get('pid')} {s.get('mode')} ({s.get('application') or '?'}, {s.get('state')},"
            f" transaction {s.get('xact_ms')} ms): `{s.get('query')}`"
            for s in sessions
        )
        or "(gone before it could be named)"
    )
