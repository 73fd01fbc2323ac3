"""What `zdm status` and `zdm history` show, as typed results: the CLI, the fleet and the
framework helpers read their attributes; `as_json` gives the `--json` form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from zdm.state.migrations import MigrationRow
from zdm.state.store import BackfillRow, Run, StepRow


@dataclass(frozen=True)
class WorkerProgress(BackfillRow):
    """One backfill worker's checkpoint row, with its recent rate and the ETA it gives."""

    step: str | None = None
    rows_per_s: float | None = None
    """Recent rate (pauses included); None for a finished worker or a run nobody runs now."""
    eta_s: int | None = None


def _totals(workers: list[WorkerProgress]) -> dict[str, Any]:
    """The progress of walks in parallel: a step's workers, or one partition's."""
    rates = [w.rows_per_s for w in workers if w.rows_per_s]
    etas = [w.eta_s for w in workers if w.eta_s is not None and not w.done]
    sizes = [w.batch_size for w in workers if w.batch_size and not w.done]
    return {
        "ordinal": workers[0].ordinal,
        "step": workers[0].step,
        "workers": len(workers),
        "workers_done": sum(1 for w in workers if w.done),
        "rows_done": sum(w.rows_done for w in workers),
        "rows_updated": sum(w.rows_updated for w in workers),
        "rows_estimated": sum(w.rows_estimated or 0 for w in workers),
        "rows_per_s": round(sum(rates), 1) if rates else None,
        "eta_s": max(etas) if etas else None,
        "batch_size": round(sum(sizes) / len(sizes)) if sizes else None,
        "batches": sum(w.batches for w in workers),
        "throttle": next((w.throttle for w in workers if w.throttle), None),
        "done": all(w.done for w in workers),
    }


@dataclass(frozen=True)
class Progress:
    """Walks in parallel, summed: a step's workers, or one partition's."""

    ordinal: int
    step: str | None
    workers: int
    workers_done: int
    rows_done: int
    rows_updated: int
    rows_estimated: int
    rows_per_s: float | None
    eta_s: int | None
    batch_size: int | None
    batches: int
    throttle: str | None
    done: bool


@dataclass(frozen=True)
class PartitionProgress(Progress):
    """One partition's walk of a backfill of a partitioned table (each walks on its own)."""

    part: str = ""


@dataclass(frozen=True)
class BackfillProgress(Progress):
    """A backfill step's progress over all its workers (they walk in parallel) and, for a
    partitioned table, over each partition's walk."""

    partitions: list[PartitionProgress] = field(default_factory=list)

    @classmethod
    def of(cls, workers: list[WorkerProgress]) -> BackfillProgress:
        parts: dict[str, list[WorkerProgress]] = {}
        for w in workers:
            parts.setdefault(w.part, []).append(w)
        partitions = (
            []
            if "" in parts
            else [PartitionProgress(part=part, **_totals(ws)) for part, ws in parts.items()]
        )
        return cls(
            **{**_totals(workers), "workers": max(len(ws) for ws in parts.values())},
            partitions=partitions,
        )


@dataclass(frozen=True)
class ErrorSample:
    """How many rows a mapping failed on, and the first few (rows of `mapping_errors`)."""

    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class RunState(Run):
    """A plan's latest run as `zdm status` shows it."""

    owner_alive: bool = False
    """The run's owner holds the plan's lock now."""
    steps: list[StepRow] = field(default_factory=list)
    backfills: list[WorkerProgress] = field(default_factory=list)
    step: str | None = None
    """`phase[i] kind` of the step an unfinished run is in."""
    backfill_steps: list[BackfillProgress] = field(default_factory=list)
    mapping_errors: ErrorSample = field(default_factory=ErrorSample)
    """Writes whose dual-write mapping raised (recorded by the trigger)."""
    bad_rows: ErrorSample = field(default_factory=ErrorSample)
    """Rows the mapping cannot convert, found by an unfinished run's backfill or scan."""

    def as_json(self) -> dict[str, Any]:
        """The `zdm status --json` form (its keys and their order are a stable format)."""
        return {
            **{f: getattr(self, f) for f in Run.__dataclass_fields__},
            "owner_alive": self.owner_alive,
            "steps": [{**asdict(s), "key": s.key} for s in self.steps],
            "backfills": [asdict(w) for w in self.backfills],
            "step": self.step,
            "backfill_steps": [asdict(b) for b in self.backfill_steps],
            "mapping_errors": asdict(self.mapping_errors),
            "bad_rows": asdict(self.bad_rows),
        }


@dataclass(frozen=True)
class MigrationEntry:
    """One version of `zdm history`: a recorded migration or, given the directory, a file."""

    version: str
    name: str
    file: str
    plan: str
    status: str
    """applied, a run's status (rolled_back, failed…), pending or invalid."""
    run_id: int | None
    applied_at: datetime | None
    sha256: str
    changed: bool
    """The file changed since it was applied."""
    missing: bool
    """The directory has no file of this version any more."""

    @classmethod
    def recorded(cls, row: MigrationRow, *, changed: bool, missing: bool) -> MigrationEntry:
        return cls(
            row.version,
            row.name,
            row.file,
            row.plan,
            row.status,
            row.run_id,
            row.applied_at,
            row.sha256,
            changed,
            missing,
        )

    @classmethod
    def unapplied(
        cls,
        version: str,
        name: str,
        file: str,
        plan: str,
        status: str,
        run_id: int | None,
        sha256: str,
    ) -> MigrationEntry:
        """A file of the directory that no run applied (yet)."""
        return cls(version, name, file, plan, status, run_id, None, sha256, False, False)
