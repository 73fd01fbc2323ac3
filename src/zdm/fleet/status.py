"""`zdm status --targets`: one row a target, read from each target's own zdm schema."""

from __future__ import annotations

from typing import Any

from zdm.engine.session import scrub
from zdm.fleet.targets import load_targets


def fleet_status(targets: str, plan: str | None, state_schema: str = "zdm") -> list[dict[str, Any]]:
    from zdm import api

    rows = []
    for t in load_targets(targets):
        try:
            runs = api.status(t.dsn, plan, state_schema=state_schema)
        except Exception as e:
            rows.append(
                {
                    "target": t.label,
                    "status": "unreachable",
                    "phase": None,
                    "step": None,
                    "progress": None,
                    "last_error": scrub(str(e)),
                }
            )
            continue
        if not runs:
            rows.append(
                {
                    "target": t.label,
                    "status": "not started",
                    "phase": None,
                    "step": None,
                    "progress": None,
                    "last_error": None,
                }
            )
            continue
        for r in runs:
            done = sum(1 for s in r["steps"] if s["status"] == "done")
            progress = f"{done}/{len(r['steps'])} steps"
            for b in r.get("backfill_steps", []):
                if not b["done"]:
                    progress += f", {b['step']} {b['rows_done']}/{b['rows_estimated']} rows"
            rows.append(
                {
                    "target": t.label,
                    "status": r["status"],
                    "phase": r["phase"],
                    "step": r["step"],
                    "progress": progress,
                    "last_error": scrub(r["last_error"]) if r["last_error"] else None,
                }
            )
    return rows
