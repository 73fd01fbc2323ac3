"""A run of a plan as a persisted state machine: resume, gates, --until, failure, interruption."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
import structlog

from zdm.ddl import BackfillJob
from zdm.engine.actions import Followers, LiveSink, followers_of, perform
from zdm.engine.backfill import Backfiller, Control, Interrupted
from zdm.engine.executor import Executor, StepFailed
from zdm.engine.ownership import LOST as LOST  # re-exported
from zdm.engine.ownership import Heartbeat, Owned
from zdm.engine.ownership import Outcome as Outcome
from zdm.engine.partitions import (
    partition_refusals,
    read_partitions,
    step_tables,
    with_partitions,
)
from zdm.engine.probe import expression_issues, pending_keys
from zdm.engine.refusals import PlanChanged as PlanChanged  # re-exported
from zdm.engine.refusals import RunRefused as RunRefused
from zdm.engine.session import (
    ConnectionLost,
    scrub,
    server_version,
)
from zdm.operations import Context, plan_memo, plan_step
from zdm.plan import PHASES, LoadedPlan, PlanError, PlanStep, StepSpec
from zdm.state import Direction, NewStep, Run, RunStatus, StepStatus, Store
from zdm.state.lease import Lease, OwnershipLost


def fingerprint(spec: StepSpec) -> str:
    data = {spec.kind: spec.model_dump(mode="json", by_alias=True, exclude_none=True)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def new_steps(steps: list[PlanStep]) -> list[NewStep]:
    return [NewStep(s.phase, s.index, s.kind, fingerprint(s.spec)) for s in steps]


def step_differences(rows: list[Any], steps: list[NewStep]) -> list[str]:
    """Human-readable list of the steps that differ between a run's rows and a plan's steps."""
    diffs = []
    for i in range(max(len(rows), len(steps))):
        old = rows[i] if i < len(rows) else None
        new = steps[i] if i < len(steps) else None
        if old is None and new is not None:
            diffs.append(f"{new.phase}[{new.idx}] {new.kind}: added")
        elif new is None and old is not None:
            diffs.append(f"{old.phase}[{old.idx}] {old.kind}: removed")
        elif (
            old is not None
            and new is not None
            and (
                (old.phase, old.idx, old.kind, old.fingerprint)
                != (new.phase, new.idx, new.kind, new.fingerprint)
            )
        ):
            what = (
                "changed"
                if (old.phase, old.idx, old.kind) == (new.phase, new.idx, new.kind)
                else (f"was {old.phase}[{old.idx}] {old.kind}")
            )
            diffs.append(f"{new.phase}[{new.idx}] {new.kind}: {what}")
    return diffs


class Runner(Owned):
    def __init__(
        self, loaded: LoadedPlan, dsn: str, *, state_schema: str = "zdm", log: Any = None
    ) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self.dsn = dsn
        self.store = Store(state_schema)
        self.log = log or structlog.get_logger("zdm")
        self.control = Control()
        self.started = False  # the run got under way: a dropped connection is then ridden out
        self.gate_passed = False  # this command passed a gate: a reconnect passes no other
        self.lease: Lease | None = None
        self.heartbeat: Heartbeat | None = None
        self.dropped: Lease | None = None
        """The lease this runner held when its connection dropped, until it is back at work."""

    def run(self, *, until: str | None = None, cont: bool = False, force: bool = False) -> Outcome:
        """Runs or resumes the plan; rides through dropped connections (see `_reconnecting`)."""
        self.started = self.gate_passed = False
        return self._reconnecting(
            lambda: self.locked(
                "run",
                lambda work, monitor: self._run(
                    work, monitor, until=until, cont=cont and not self.gate_passed, force=force
                ),
            )
        )

    def _run(
        self,
        work: psycopg.Connection[Any],
        monitor: psycopg.Connection[Any],
        *,
        until: str | None,
        cont: bool,
        force: bool,
    ) -> Outcome:
        self.store.ensure(work)
        if self.dropped is not None:
            # Back after a drop, holding the plan's lock again: if another runner claimed the
            # run meanwhile, the run is its own, whatever state it left it in.
            if self.dropped.taken_over(work):
                self.log.error("run_taken_over_while_disconnected", run=self.dropped.run_id)
                return Outcome(
                    LOST,
                    f"stopped: another runner took run {self.dropped.run_id} over while this one"
                    " was reconnecting",
                    3,
                    self.dropped.run_id,
                )
            self.dropped = None
        steps = self.plan.steps()
        # Before anything is created: a wrong name or type in an expression is the plan's fault.
        pending = pending_keys(work, self.store, self.loaded.name)
        issues = expression_issues(work, self.loaded, pending)
        # What PostgreSQL cannot do on a partitioned table (a unique key without the partition
        # key): refused before anything is created, too.
        issues += partition_refusals(work, self.loaded, pending)
        if issues:
            raise PlanError(issues)
        run_or_outcome = self._start_or_resume(work, steps, force)
        if isinstance(run_or_outcome, Outcome):
            return run_or_outcome
        run = self.store.transition(work, run_or_outcome, RunStatus.RUNNING)
        ctx = Context.of(self.loaded, server_version(work), self.store.schema)
        self.started = True
        self.log.info(
            "run_start",
            plan=self.loaded.name,
            run=run.id,
            steps=len(steps),
            server=work.info.server_version,
        )
        executor, set_current = self.executor(work, monitor, run)
        lease = self.lease
        assert lease is not None
        self.control.install()
        current: int | None = None
        try:
            rows = self.store.steps(work, run.id)
            gate_passed = False
            phase = None
            absorbed: set[int] = set()  # backfills walked in the same pass as an earlier one
            for ordinal, (step, row) in enumerate(zip(steps, rows, strict=True)):
                current = ordinal
                set_current(ordinal)
                if row.status == StepStatus.DONE or ordinal in absorbed:
                    continue
                if self.control.stop.is_set():
                    raise Interrupted(self.control.signal_name or "stop")
                self.fence(lease, monitor)
                if until is not None and PHASES.index(step.phase) > PHASES.index(until):
                    self.store.transition(
                        work, run, RunStatus.WAITING, waiting_for=f"--until {until}"
                    )
                    return Outcome(
                        RunStatus.WAITING,
                        f"stopped after phase {until} (--until); `zdm run` continues",
                        0,
                        run.id,
                    )
                if step.phase != phase:
                    phase = step.phase
                    if phase in self.plan.gates and phase not in run.gates_passed:
                        if not cont or gate_passed:
                            self.store.transition(
                                work,
                                run,
                                RunStatus.WAITING,
                                phase=phase,
                                waiting_for=f"gate before {phase}",
                            )
                            self.log.info("gate_waiting", phase=phase)
                            return Outcome(
                                RunStatus.WAITING,
                                f"waiting at the gate before phase {phase}: check the application, then"
                                f" run `zdm run {self.loaded.path} --continue`",
                                0,
                                run.id,
                            )
                        self.store.pass_gate(work, run, phase)
                        gate_passed = self.gate_passed = True
                        self.log.info("gate_passed", phase=phase)
                    self.store.set_phase(work, run, phase)
                    self.log.info("phase_start", phase=phase)
                ctx = with_partitions(ctx, work, self.plan)
                followers = followers_of(steps, [r.status for r in rows], ordinal, ctx)
                absorbed.update(o for o, _ in followers)
                self._step(work, executor, ctx, run, ordinal, step, followers)
            self.store.transition(work, run, RunStatus.COMPLETED)
            self.log.info("run_completed", plan=self.loaded.name, run=run.id)
            return Outcome(
                RunStatus.COMPLETED, f"plan {self.loaded.name} completed (run {run.id})", 0, run.id
            )
        except OwnershipLost as e:
            return self.lost(run, str(e))
        except StepFailed as e:
            if self.heartbeat is not None and self.heartbeat.lost:
                return self.lost(run, self.heartbeat.lost)
            message = scrub(str(e))
            self.log.error(
                "step_failed",
                step=steps[current].key if current is not None else None,
                error=message,
            )
            if current is not None:
                self.store.step_failed(work, run.id, current, message)
            self.store.transition(work, run, RunStatus.FAILED, error=message)
            return Outcome(
                RunStatus.FAILED,
                f"step {steps[current].key if current is not None else '?'} failed: "
                f"{message}\nthe run is resumable: fix the cause and run `zdm run` again",
                1,
                run.id,
            )
        except Interrupted as e:
            if self.heartbeat is not None and self.heartbeat.disconnected:
                raise ConnectionLost(self.heartbeat.disconnected) from e
            if self.heartbeat is not None and self.heartbeat.lost:
                return self.lost(run, self.heartbeat.lost)
            if current is not None:
                self.store.step_failed(work, run.id, current, f"interrupted by {e}")
            self.store.transition(work, run, RunStatus.PAUSED, waiting_for=f"interrupted by {e}")
            self.log.warning("run_interrupted", signal=str(e))
            return Outcome(
                RunStatus.PAUSED,
                f"stopped by {e} after the current batch; `zdm run` resumes",
                1,
                run.id,
            )
        finally:
            self.control.restore()

    def _start_or_resume(
        self, work: psycopg.Connection[Any], steps: list[PlanStep], force: bool
    ) -> Run | Outcome:
        name, sha = self.loaded.name, self.loaded.sha256
        wanted = new_steps(steps)
        run = self.store.unfinished_run(work, name)
        if run is None:
            latest = self.store.latest_run(work, name)
            if (
                latest is not None
                and latest.status == RunStatus.COMPLETED
                and latest.direction == Direction.FORWARD
            ):
                if latest.plan_sha256 == sha:
                    return Outcome(
                        RunStatus.COMPLETED,
                        f"plan {name} is already completed (run {latest.id}); nothing to do",
                        0,
                        latest.id,
                    )
                if not force:
                    raise PlanChanged(
                        f"plan {name} was completed by run {latest.id} and its file has changed since;"
                        " give a new change its own plan, or pass --force to run this one again"
                    )
            return self.store.create_run(work, name, sha, str(self.loaded.path.resolve()), wanted)
        if run.direction == Direction.ROLLBACK:
            raise RunRefused(
                f"a rollback of plan {name} is unfinished (run {run.id}); finish it with"
                " `zdm rollback`"
            )
        if run.plan_sha256 != sha:
            diffs = step_differences(self.store.steps(work, run.id), wanted)
            if not force:
                listing = "\n  ".join(diffs) or "(only formatting or comments changed)"
                raise PlanChanged(
                    f"the file of plan {name} changed after run {run.id} started; steps that differ:\n"
                    f"  {listing}\npass --force to resume with the new file"
                )
            self.log.warning("plan_changed_forced", run=run.id, differences=diffs)
            self.store.replace_steps(work, run, wanted, sha)
        elif self.loaded.source is not None:
            # Changes expand against the live catalog: the same file may expand differently
            # (an index added to a column being copied), and the run's steps must still match.
            diffs = step_differences(self.store.steps(work, run.id), wanted)
            if diffs:
                raise PlanChanged(
                    f"the changes of plan {name} expand differently from when run {run.id}"
                    " started (the live schema changed); steps that differ:\n  "
                    + "\n  ".join(diffs)
                    + "\nput the schema back as it was (the differing steps say what changed), then"
                    " resume or roll back"
                )
        self.log.info("run_resume", run=run.id, status=run.status, phase=run.phase)
        return run

    def _step(
        self,
        work: psycopg.Connection[Any],
        executor: Executor,
        ctx: Context,
        run: Run,
        ordinal: int,
        step: PlanStep,
        followers: Followers = (),
    ) -> None:
        actions = plan_step(step.spec, ctx)
        attempt = self.store.step_started(work, run.id, ordinal, remember=plan_memo(step.spec, ctx))
        tables = step_tables(step.spec, ctx.schema)
        trees = {t: ctx.partitions[t] for t in tables if t in ctx.partitions}
        self.log.info("step_start", step=step.key, kind=step.kind, attempt=attempt)

        def walk(job: BackfillJob, followers: Followers) -> None:
            for o, _ in followers:
                self.store.step_started(work, run.id, o)
            Backfiller(
                executor,
                self.store.for_part(job.part) if job.part else self.store,
                run.id,
                ordinal,
                job,
                self.control,
                on_pause=self.run_paused(work, run.id),
                dsn=self.dsn,
                also=followers,
            ).run()
            for o, _ in followers:
                self.store.step_finished(work, run.id, o)

        ran = marked = False
        while True:
            done = perform(
                actions,
                LiveSink(executor, walk),
                # A partitioned table's step is marked done after the re-check below.
                mark_done=None if trees else lambda c: self.store.step_finished(c, run.id, ordinal),
                followers=followers,
            )
            ran, marked = ran or done.ran, done.marked
            if not trees:
                break
            # A partition attached or created meanwhile (pg_partman, the application) gets what
            # the others got before the step counts as done: planned again, units already done
            # skipped by their catalog probes.
            fresh = read_partitions(work, trees)
            if fresh == trees:
                break
            self.log.info("partitions_changed", step=step.key, tables=[str(t) for t in fresh])
            trees = fresh
            ctx = replace(ctx, partitions={**ctx.partitions, **fresh})
            actions = plan_step(step.spec, ctx)
        if not ran and actions and attempt == 1:
            # Every unit found its effect already there on the step's first attempt: the object
            # existed before this run, so the run adopts it and rollback must leave it alone.
            self.log.warning("step_adopted_existing", step=step.key, kind=step.kind)
            self.store.step_finished(work, run.id, ordinal, StepStatus.DONE, adopted=True)
        elif not marked:
            self.store.step_finished(work, run.id, ordinal)
        self.log.info("step_done", step=step.key, kind=step.kind)

    def run_paused(self, conn: psycopg.Connection[Any], run_id: int) -> Callable[[bool], None]:
        """What a backfill calls when `zdm pause` holds its walk (True) or lets it go on: the
        run shows `paused`, then `running` again. The runner alone moves the run's status."""

        def set_paused(paused: bool) -> None:
            run = self.store.get_run(conn, run_id)
            if paused:
                self.store.transition(conn, run, RunStatus.PAUSED, waiting_for="zdm pause")
            else:
                self.store.transition(conn, run, RunStatus.RUNNING)

        return set_paused
