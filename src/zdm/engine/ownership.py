"""Who runs a run: the plan's lock, the run's lease and its heartbeat, the fence before every
unit, and the ride through dropped connections. The runner and the rollback run under it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from zdm.engine.backfill import Control
from zdm.engine.executor import Executor
from zdm.engine.policy import under_deadlock_timeout
from zdm.engine.pooling import keep_client_check, release, require_pinned
from zdm.engine.session import ConnectionLost, connect, connection_lost, scrub
from zdm.plan import LoadedPlan, Plan
from zdm.state import PlanLock, Run, RunStatus, Store
from zdm.state.lease import Lease, OwnershipLost, new_token

LOST = "lost"
"""An Outcome's status when another runner owns the run now."""
HEARTBEAT_S = 5.0
# After a dropped connection: first pause before reconnecting, doubled each time up to the cap.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
# A run that went on this long after reconnecting ended its outage: a later drop starts a new one.
OUTAGE_OVER_S = 60.0


@dataclass(frozen=True)
class Outcome:
    status: str
    """The run's status when the command ended (a RunStatus), or `lost` (another owns it)."""
    message: str
    """One line for the user: what happened, and what to do next."""
    exit_code: int
    """The command's exit code: 0 done or at a gate, 1 failed (resumable), 2 refused, 3 lost."""
    run_id: int | None = None


class Heartbeat(threading.Thread):
    """Renews the run's lease every HEARTBEAT_S; when it cannot (the lease was taken over, or the
    lock connection died and with it the plan's lock), it stops the run as a signal would."""

    def __init__(self, conn: psycopg.Connection[Any], lease: Lease, control: Control) -> None:
        super().__init__(daemon=True, name="zdm-heartbeat")
        self.conn, self.lease, self.control = conn, lease, control
        self.stopped = threading.Event()
        self.lost: str | None = None
        """Why the run was lost, once it was."""
        self.disconnected: str | None = None
        """The error of the lock connection, when the server ended it: the run reconnects."""

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            error: psycopg.Error | None = None
            try:
                renewed = self.lease.renew(self.conn)
            except psycopg.Error as e:
                renewed, error = False, e
            if not renewed and not self.stopped.is_set():
                if error is not None and connection_lost(error):
                    self.disconnected = scrub(str(error).strip()) or type(error).__name__
                    self.control.signal_name = "a dropped connection"
                else:
                    self.lost = self.lease.lost_reason(error)
                    self.control.signal_name = "lost ownership of the run"
                self.control.stop.set()
                return

    def stop(self) -> None:
        self.stopped.set()


class Owned:
    """What a command that runs steps holds while it runs them (`Runner`, `Rollback`)."""

    loaded: LoadedPlan
    plan: Plan
    dsn: str
    store: Store
    log: Any
    control: Control
    started: bool
    lease: Lease | None
    heartbeat: Heartbeat | None
    dropped: Lease | None

    def _reconnecting(self, attempt: Callable[[], Outcome]) -> Outcome:
        """Calls `attempt` again, as `zdm run` would resume, when the server ends a connection of
        the run after it started (a restart, a failover, pg_terminate_backend, a network drop):
        with growing pauses, for up to `reconnect_timeout` from the drop. Each attempt takes the
        plan's lock again (exit 3 if another runner took it meanwhile), finds the step it was in
        from the state tables and continues after the last committed checkpoint. A drop before
        the run started (a wrong address) fails at once."""
        limit_s = self.plan.settings.reconnect_timeout / 1000
        outage_start: float | None = None
        began = time.monotonic()
        drops = 0
        while True:
            try:
                return attempt()
            except Exception as e:
                if not (self.started and limit_s > 0 and connection_lost(e)):
                    raise
                now = time.monotonic()
                if outage_start is None or now - began >= OUTAGE_OVER_S:
                    outage_start, drops = now, 0
                drops += 1
                error = scrub(str(e).strip().replace("\n", " "))
                if now - outage_start > limit_s:
                    self.log.error("reconnect_gave_up", error=error, drops=drops)
                    return Outcome(
                        RunStatus.FAILED,
                        f"the connection to the database was lost and not back within"
                        f" {limit_s:g} s ({error}); the run is resumable: `zdm run` again",
                        1,
                    )
                self.dropped = self.dropped or self.lease
                self.control.stop.clear()  # set by the heartbeat that saw the drop
                self.control.signal_name = None
                pause = min(RECONNECT_FIRST_S * 2 ** (drops - 1), RECONNECT_MAX_S)
                self.log.warning("connection_lost", error=error, drop=drops, reconnect_in_s=pause)
                time.sleep(pause)
                began = time.monotonic()

    def locked(
        self,
        purpose: str,
        body: Callable[[psycopg.Connection[Any], psycopg.Connection[Any]], Outcome],
    ) -> Outcome:
        """Runs `body(work, monitor)` holding the plan's lock on the monitor connection.

        Through a transaction-pooling proxy the lock would not hold: refused before it is taken.
        """
        name = self.loaded.name
        monitor = connect(self.dsn, f"{purpose} {name}")
        lock = PlanLock(monitor, name)
        try:
            require_pinned(monitor, self.dsn, purpose)
            lock.acquire()
            work = connect(self.dsn, f"{purpose} {name}")
            checked = False
            try:
                checked = keep_client_check(work)
                return body(work, monitor)
            finally:
                if self.heartbeat is not None:
                    self.heartbeat.stop()
                    self.heartbeat = None
                release(work, reset_client_check=checked)
                # Released explicitly: the server frees a closed session's locks a moment later,
                # and a command started right after this one must find the plan free.
                with contextlib.suppress(psycopg.Error):
                    lock.release()
        finally:
            monitor.close()

    def executor(
        self, work: psycopg.Connection[Any], monitor: psycopg.Connection[Any], run: Run
    ) -> tuple[Executor, Callable[[int | None], None]]:
        """The executor of a run, recording events against the step set by the returned setter.

        Creating it claims the run (a fresh lease token, renewed by a heartbeat) and fences every
        unit the executor runs: a runner that no longer owns the run stops before the next one.
        """
        current: list[int | None] = [None]
        lease = Lease(self.store.schema, run.id, new_token())
        replaced = lease.claim(monitor)
        if replaced is not None:
            self.log.warning("run_taken_over", run=run.id)
        self.lease = lease
        self.heartbeat = Heartbeat(monitor, lease, self.control)
        self.heartbeat.start()

        def on_event(event: str, **detail: Any) -> None:
            with contextlib.suppress(psycopg.Error):
                self.store.event(monitor, run.id, current[0], event, **detail)

        def set_current(ordinal: int | None) -> None:
            current[0] = ordinal

        def fence() -> None:
            self.fence(lease, monitor)

        executor = Executor(
            work,
            under_deadlock_timeout(self.plan.settings, work),
            monitor=monitor,
            on_event=on_event,
            fence=fence,
        )
        return executor, set_current

    @staticmethod
    def fence(lease: Lease, monitor: psycopg.Connection[Any]) -> None:
        """Stops the run unless it still owns its lease; a connection that the server ended is
        a drop to ride out (`_reconnecting` takes the lock and the lease again), not a loss."""
        try:
            lease.check(monitor)
        except OwnershipLost as e:
            if e.error is not None and connection_lost(e.error):
                raise ConnectionLost(str(e)) from e
            raise

    def lost(self, run: Run, reason: str) -> Outcome:
        """The run is another's now: stop without writing to its state."""
        self.log.error("ownership_lost", run=run.id, reason=reason)
        return Outcome(LOST, f"stopped: {reason}", 3, run.id)
