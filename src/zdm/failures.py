"""The failures zdm expects, and the exit code each means: one table for the CLI and for a
fleet's per-target runs, so a target reports what `zdm run` on it would exit with."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3

# (module, exception classes, label, separator, exit code). An exception can only come from a
# module already imported, so none is imported just to be checked for (start-up time).
_EXPECTED = (
    ("zdm.plan.errors", ("PlanError",), "invalid plan", "\n", EXIT_USAGE),
    ("zdm.engine.refusals", ("PlanChanged", "RunRefused"), "refused:", " ", EXIT_USAGE),
    ("zdm.engine.pooling", ("PoolerRefused",), "refused:", " ", EXIT_USAGE),
    ("zdm.state.lock", ("LockHeld",), "locked:", " ", EXIT_LOCKED),
    ("zdm.state.lease", ("OwnershipLost",), "locked:", " ", EXIT_LOCKED),
    ("zdm.engine.session", ("ConnectionFailed",), "error:", " ", EXIT_FAILED),
    ("zdm.engine.probe", ("ProbeBlocked",), "error:", " ", EXIT_FAILED),
    ("zdm.report_html", ("ReportExtraMissing", "PageError"), "error:", " ", EXIT_USAGE),
    ("zdm.timeline", ("LatencyFileError",), "error:", " ", EXIT_USAGE),
)


def expected(e: BaseException) -> tuple[str, str, int] | None:
    """(label, separator, exit code) of an expected failure; None for anything else (a bug)."""
    for module, names, label, separator, code in _EXPECTED:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(e, tuple(getattr(loaded, n) for n in names)):
            return label, separator, code
    return None
