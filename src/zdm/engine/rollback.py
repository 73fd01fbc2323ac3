"""`zdm rollback`: undo a run's finished (and half-finished) steps in reverse order.

Every inverse goes through the same executor, so the same lock policy applies. Before touching
anything the whole list is planned: a step whose effect cannot be undone (a drop of data) stops
the rollback up front, and the message names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from zdm.engine.actions import LiveSink, perform
from zdm.engine.dryrun import PrintSink
from zdm.engine.executor import StepFailed
from zdm.engine.partitions import with_partitions
from zdm.engine.runner import Outcome, Runner, RunRefused
from zdm.engine.session import connect, scrub, server_version
from zdm.operations import Context, Irreversible, plan_inverse
from zdm.plan import PlanStep
from zdm.state import Direction, Run, RunStatus, StepRow, StepStatus

UNDO_STATUSES = (StepStatus.DONE, StepStatus.RUNNING, StepStatus.FAILED)


class Rollback(Runner):
    def rollback(self) -> Outcome:
        return self.locked("rollback", self._rollback)

    def _target(self, conn: psycopg.Connection[Any]) -> Run | None:
        if not self.store.exists(conn):
            return None
        run = self.store.unfinished_run(conn, self.loaded.name)
        if run is None:
            latest = self.store.latest_run(conn, self.loaded.name)
            run = latest if latest is not None and latest.status == RunStatus.COMPLETED else None
        return run

    def _undo_list(
        self, rows: list[StepRow], ctx: Context
    ) -> list[tuple[StepRow, PlanStep, list[Any]]]:
        steps = self.plan.steps()
        if len(steps) != len(rows) or any(
            (s.phase, s.index, s.kind) != (r.phase, r.idx, r.kind)
            for s, r in zip(steps, rows, strict=False)
        ):
            raise RunRefused(
                f"the file of plan {self.loaded.name} no longer matches the run's steps; roll back with"
                " the file the run was made with"
            )
        todo = []
        for row, step in reversed(list(zip(rows, steps, strict=True))):
            if row.status not in UNDO_STATUSES or row.adopted:
                continue  # adopted: the object existed before the run; it is not the run's to drop
            try:
                todo.append((row, step, plan_inverse(step.spec, ctx, row.remembered)))
            except Irreversible as e:
                raise RunRefused(
                    f"cannot roll back past step {step.key} {step.kind}: {e}; nothing was undone"
                ) from None
        return todo

    def _rollback(self, work: psycopg.Connection[Any], monitor: psycopg.Connection[Any]) -> Outcome:
        run = self._target(work)
        if run is None:
            raise RunRefused(f"plan {self.loaded.name} has no run to roll back")
        self.store.ensure(work)  # a state schema of an older zdm gains the newest columns
        ctx = Context.of(self.loaded, server_version(work), self.store.schema)
        ctx = with_partitions(ctx, work, self.loaded.plan)
        todo = self._undo_list(self.store.steps(work, run.id), ctx)
        run = self.store.transition(work, run, RunStatus.RUNNING, direction=Direction.ROLLBACK)
        self.log.info("rollback_start", plan=self.loaded.name, run=run.id, steps=len(todo))
        executor, set_current = self.executor(work, monitor, run)
        current: StepRow | None = None
        try:
            for row, step, actions in todo:
                current = row
                set_current(row.ordinal)
                self.log.info("undo_start", step=step.key, kind=step.kind)
                self.store.step_started(work, run.id, row.ordinal)

                def mark(conn: psycopg.Connection[Any], ordinal: int = row.ordinal) -> None:
                    self.store.step_finished(conn, run.id, ordinal, StepStatus.ROLLED_BACK)

                if not perform(actions, LiveSink(executor), mark_done=mark).marked:
                    self.store.step_finished(work, run.id, row.ordinal, StepStatus.ROLLED_BACK)
                self.log.info("undo_done", step=step.key, kind=step.kind)
            self.store.transition(work, run, RunStatus.ROLLED_BACK)
        except StepFailed as e:
            message = scrub(str(e))
            if current is not None:
                self.store.step_failed(work, run.id, current.ordinal, message)
            self.store.transition(work, run, RunStatus.FAILED, error=message)
            return Outcome(
                RunStatus.FAILED,
                f"undoing {current.key if current else '?'} failed: {message}\n"
                "run `zdm rollback` again once the cause is fixed",
                1,
                run.id,
            )
        self.log.info("rollback_done", plan=self.loaded.name, run=run.id)
        return Outcome(
            RunStatus.ROLLED_BACK,
            f"plan {self.loaded.name} rolled back (run {run.id}, {len(todo)} steps undone)",
            0,
            run.id,
        )

    def dry_run_lines(self) -> Iterator[str]:
        """The statements a rollback would run, in a read-only transaction."""
        conn = connect(self.dsn, f"rollback dry-run {self.loaded.name}", autocommit=False)
        try:
            conn.execute("SET TRANSACTION READ ONLY")
            run = self._target(conn)
            if run is None:
                raise RunRefused(f"plan {self.loaded.name} has no run to roll back")
            ctx = Context.of(self.loaded, server_version(conn), self.store.schema)
            ctx = with_partitions(ctx, conn, self.loaded.plan)
            yield f"-- zdm rollback dry-run of plan {self.loaded.name}, run {run.id} ({run.status})"
            for row, step, actions in self._undo_list(self.store.steps(conn, run.id), ctx):
                yield ""
                yield f"-- undo {step.key} {step.kind} (was {row.status})"
                if not actions:
                    yield "-- nothing to undo"
                sink = PrintSink(conn, self.plan.settings, self.store.schema)
                perform(actions, sink)
                yield from sink.lines
        finally:
            conn.rollback()
            conn.close()
