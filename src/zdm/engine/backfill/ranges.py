"""A worker's share of the table, and one batch of it."""

from __future__ import annotations

from dataclasses import dataclass

from zdm.state import BackfillRow


@dataclass
class Range:
    """A worker's share of the table: keys after `last` up to `end` (None: the table's edge)."""

    worker: int
    last: list[str] | None
    end: list[str] | None
    done: bool
    rows_done: int
    rows_estimated: int
    batch_size: int | None

    @classmethod
    def of(cls, row: BackfillRow) -> Range:
        return cls(
            row.worker,
            row.last_key,
            row.end_key,
            row.done,
            row.rows_done,
            row.rows_estimated or 0,
            row.batch_size,
        )


@dataclass
class Batch:
    lower: list[str] | None
    upper: list[str]
    walked: int
    updated: int
    ms: float = 0.0
