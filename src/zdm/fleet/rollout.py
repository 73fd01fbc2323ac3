"""A rollout: the canary, then waves, as a DBOS workflow whose state survives a killed orchestrator.

The workflow and its queue hold only redacted labels and indexes into the targets file; each
target's DSN (with any password) is re-read inside the step that uses it, so DBOS never stores it.
Each target's own progress stays in its own `zdm` schema, behind its plan lock.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSConfig, Queue, SetEnqueueOptions, SetWorkflowID

from zdm.engine.session import scrub
from zdm.failures import EXIT_FAILED, EXIT_LOCKED, EXIT_USAGE, expected
from zdm.fleet.targets import load_targets

QUEUE = "zdm_fleet"
VERBS = ("run", "rollback", "migrate")
_queues: dict[str, Queue] = {}


@dataclass(frozen=True)
class FleetOptions:
    verb: str
    plan: str
    """The plan file (a directory of plans for migrate)."""
    targets: str
    state_dir: str
    wave_size: int = 5
    concurrency: int = 4
    per_host: int = 2
    error_rate: float = 0.0
    """The share of launched targets that may fail before no new wave is launched."""
    state_schema: str = "zdm"


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@DBOS.step()
def target_labels(targets: str) -> list[list[str]]:
    return [[t.label, t.host] for t in load_targets(targets)]


@DBOS.step(retries_allowed=False)
def apply_target(
    verb: str, plan: str, targets: str, index: int, state_schema: str
) -> dict[str, Any]:
    from zdm import api

    target = load_targets(targets)[index]
    try:
        if verb == "rollback":
            outcome: Any = api.rollback(plan, target.dsn, state_schema=state_schema)
        elif verb == "migrate":
            outcome = api.migrate(plan, target.dsn, state_schema=state_schema)
        else:
            outcome = api.run_plan(plan, target.dsn, state_schema=state_schema)
        status, code, message = outcome.status, outcome.exit_code, outcome.message
    except Exception as e:
        # As `zdm run` on that target would exit; anything unexpected is a failure there.
        code = failure[2] if (failure := expected(e)) else EXIT_FAILED
        status = {EXIT_USAGE: "refused", EXIT_LOCKED: "locked"}.get(code, "failed")
        message = f"{type(e).__name__}: {e}"
    return {"target": target.label, "status": status, "exit_code": code, "message": scrub(message)}


@DBOS.workflow()
def target_workflow(
    verb: str, plan: str, targets: str, index: int, state_schema: str
) -> dict[str, Any]:
    return apply_target(verb, plan, targets, index, state_schema)


@DBOS.workflow()
def rollout(opts: dict[str, Any]) -> dict[str, Any]:
    """Canary first; then waves; no new wave once failures pass the allowed rate."""
    labels = target_labels(opts["targets"])
    queue = _queues[QUEUE]
    results: list[dict[str, Any]] = []
    waves = [[0]] + [
        list(range(i, min(i + opts["wave_size"], len(labels))))
        for i in range(1, len(labels), opts["wave_size"])
    ]
    for n, wave in enumerate(waves):
        name = "canary" if n == 0 else f"wave {n}"
        say(f"{name}: launching {', '.join(labels[i][0] for i in wave)}")
        handles = []
        for i in wave:
            with SetEnqueueOptions(queue_partition_key=labels[i][1]):
                handles.append(
                    queue.enqueue(
                        target_workflow,
                        opts["verb"],
                        opts["plan"],
                        opts["targets"],
                        i,
                        opts["state_schema"],
                    )
                )
        for h in handles:
            r = h.get_result()
            why = "" if r["exit_code"] == 0 else f": {r['message'].strip().splitlines()[-1]}"
            say(f"{name}: {r['target']}: {r['status']} (exit {r['exit_code']}){why}")
            results.append(r)
        failed = [r for r in results if r["exit_code"] not in (0,)]
        allowed = 0 if n == 0 else opts["error_rate"] * len(results)
        if failed and len(failed) > allowed:
            left = sum(len(w) for w in waves[n + 1 :])
            say(f"stopped after {name}: {len(failed)} failed; {left} targets not launched")
            return {"status": "stopped", "results": results, "not_launched": left}
    return {"status": "completed", "results": results, "not_launched": 0}


def rollout_id(opts: FleetOptions, attempt: int) -> str:
    key = f"{opts.verb}\0{Path(opts.plan).resolve()}\0{Path(opts.targets).resolve()}"
    return f"zdm-{opts.verb}-{hashlib.sha256(key.encode()).hexdigest()[:12]}-{attempt}"


def launch(opts: FleetOptions) -> None:
    """DBOS in this process: a SQLite system database in the state directory, in this process."""
    state = Path(opts.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    config: DBOSConfig = {
        "name": "zdm-fleet",
        "log_level": "WARNING",
        "system_database_url": f"sqlite:///{state.resolve() / 'dbos.sqlite'}",
    }
    DBOS(config=config)
    DBOS.launch()
    _queues[QUEUE] = DBOS.register_queue(
        QUEUE,
        global_concurrency=opts.concurrency,
        # DBOS refuses a host limit above the global one; the global one binds first anyway.
        partition_concurrency=min(opts.per_host, opts.concurrency),
        polling_interval_sec=0.2,
    )


def run_fleet(opts: FleetOptions) -> int:
    """Starts the rollout, or resumes the one a killed orchestrator left; an exit code."""
    load_targets(opts.targets)
    launch(opts)
    try:
        attempt = 1
        while True:
            wid = rollout_id(opts, attempt)
            st = DBOS.get_workflow_status(wid)
            if st is None or st.status in ("PENDING", "ENQUEUED"):
                break
            attempt += 1  # a finished rollout (stopped or done): a new attempt skips done targets
        if st is not None:
            # DBOS.launch() recovers the workflow a killed orchestrator left; wait for it.
            say(f"resuming rollout {wid}")
            result: dict[str, Any] = DBOS.retrieve_workflow(wid).get_result()
        else:
            with SetWorkflowID(wid):
                result = DBOS.start_workflow(rollout, _opts_dict(opts)).get_result()
    finally:
        DBOS.destroy()
    say(f"rollout {wid}: {result['status']}")
    return 0 if result["status"] == "completed" else 1


def _opts_dict(opts: FleetOptions) -> dict[str, Any]:
    return {k: getattr(opts, k) for k in opts.__dataclass_fields__}
