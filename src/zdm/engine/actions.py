"""The one loop that takes a step's actions through a sink: run, rollback and dry-run share it.

A step plans to a list of actions (`Txn`, `Check`, `BackfillJob`). The live sink executes them
through the executor, the step's done-mark committing with its last transaction; the dry-run
sink prints them. Which one is the only difference between `zdm run` and `zdm run --dry-run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg

from zdm.ddl import Action, BackfillJob, Check, Txn
from zdm.engine.backfill import backfill_followers
from zdm.engine.executor import Executor
from zdm.operations import Context
from zdm.plan import PlanStep
from zdm.state import StepStatus

OnCommit = Callable[[psycopg.Connection[Any]], None]
Followers = Sequence[tuple[int, BackfillJob]]
"""Backfill steps walked in the same pass over the table as the step's own (ordinal, job)."""


class Sink(Protocol):
    def txn(self, txn: Txn, on_commit: OnCommit | None) -> bool:
        """Runs (or shows) a transaction; whether it ran rather than finding its effect there."""
        ...

    def check(self, check: Check) -> None: ...

    def backfill(self, job: BackfillJob, followers: Followers) -> None: ...


@dataclass(frozen=True)
class Performed:
    ran: bool
    """Some action acted: the step's effect was not all there before."""
    marked: bool
    """The step was marked done with its last transaction."""


def perform(
    actions: Sequence[Action],
    sink: Sink,
    *,
    mark_done: OnCommit | None = None,
    followers: Followers = (),
) -> Performed:
    """Takes each action through `sink`; `mark_done` commits with the last transaction."""
    marked = False
    ran = False

    def on_commit(conn: psycopg.Connection[Any]) -> None:
        nonlocal marked
        assert mark_done is not None
        mark_done(conn)
        marked = True

    for i, action in enumerate(actions):
        last = i == len(actions) - 1
        if isinstance(action, Txn):
            commit = on_commit if last and mark_done is not None else None
            ran = sink.txn(action, commit) or ran
        elif isinstance(action, Check):
            ran = True
            sink.check(action)
        elif isinstance(action, BackfillJob):
            ran = True
            sink.backfill(action, followers)
    return Performed(ran, marked)


class LiveSink:
    """Executes: transactions and checks through the executor, a backfill through `walk`."""

    def __init__(
        self, executor: Executor, walk: Callable[[BackfillJob, Followers], None] | None = None
    ) -> None:
        self.executor = executor
        self.walk = walk

    def txn(self, txn: Txn, on_commit: OnCommit | None) -> bool:
        return self.executor.run(txn, on_commit=on_commit)

    def check(self, check: Check) -> None:
        self.executor.check(check)

    def backfill(self, job: BackfillJob, followers: Followers) -> None:
        if self.walk is None:
            raise AssertionError(f"{job.label}: no backfill walks here")
        self.walk(job, followers)


def followers_of(
    steps: Sequence[PlanStep], statuses: Sequence[str], ordinal: int, ctx: Context
) -> list[tuple[int, BackfillJob]]:
    """The backfill steps after `ordinal` that its walk does in the same pass (none once it is
    done): how run and dry-run group backfills."""
    if statuses[ordinal] == StepStatus.DONE:
        return []
    return backfill_followers(steps, statuses, ordinal, ctx)
