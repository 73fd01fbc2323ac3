"""What cli.py calls for `--targets`; imported lazily so `zdm --help` never imports dbos.

Rollout settings come from the environment, keeping the shared CLI small:
ZDM_FLEET_STATE (DBOS's state directory, default .zdm-fleet), ZDM_FLEET_WAVE (wave size, 5),
ZDM_FLEET_CONCURRENCY (targets at once, 4), ZDM_FLEET_PER_HOST (at once on one host, 2),
ZDM_FLEET_ERROR_RATE (share of launched targets that may fail and waves still go on, 0).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from zdm.failures import EXIT_USAGE
from zdm.fleet.targets import TargetsError

if TYPE_CHECKING:
    from zdm.fleet.status import TargetStatus


def _setting(name: str, default: str, kind: type[int] | type[float]) -> int | float:
    raw = os.environ.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise TargetsError(f"{name}={raw!r}: not a number") from None
    if value < 0 or (kind is int and value < 1) or (kind is float and value > 1):
        raise TargetsError(f"{name}={raw!r}: out of range")
    return value


def fleet_command(verb: str, plan: str, targets: str, state_schema: str) -> int:
    try:
        from zdm.fleet.rollout import FleetOptions, run_fleet
    except ImportError:
        sys.stderr.write("error: --targets needs the fleet extra: pip install 'zdm[fleet]'\n")
        return EXIT_USAGE
    try:
        opts = FleetOptions(
            verb=verb,
            plan=plan,
            targets=targets,
            state_schema=state_schema,
            state_dir=os.environ.get("ZDM_FLEET_STATE", ".zdm-fleet"),
            wave_size=int(_setting("ZDM_FLEET_WAVE", "5", int)),
            concurrency=int(_setting("ZDM_FLEET_CONCURRENCY", "4", int)),
            per_host=int(_setting("ZDM_FLEET_PER_HOST", "2", int)),
            error_rate=float(_setting("ZDM_FLEET_ERROR_RATE", "0", float)),
        )
        return run_fleet(opts)
    except TargetsError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE


def status_rows(targets: str, plan: str | None, state_schema: str) -> list[TargetStatus] | None:
    from zdm.fleet.status import fleet_status

    try:
        return fleet_status(targets, plan, state_schema)
    except TargetsError as e:
        sys.stderr.write(f"error: {e}\n")
        return None
