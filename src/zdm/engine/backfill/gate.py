"""What the supervisor and the workers share: the gate a throttle or `zdm pause` closes, the
stop flags; and the run's status while `zdm pause` holds the walk."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from zdm.engine.backfill.signals import Control


class Gate:
    """What the supervisor and the workers share: the gate, the stop flags, the statistics."""

    def __init__(self, control: Control) -> None:
        self.control = control
        self.abort = threading.Event()
        self.wake = threading.Event()
        self._cond = threading.Condition()
        self.reason: str | None = None
        self.batch_ms: list[float] = []

    def stopping(self) -> bool:
        return self.control.stop.is_set() or self.abort.is_set()

    def hold(self, reason: str | None) -> None:
        """Closes the gate with a reason (workers wait before their next batch), or opens it."""
        with self._cond:
            self.reason = reason
            self._cond.notify_all()

    def pass_gate(self) -> bool:
        """Waits while the gate is closed; False when the walk must stop instead."""
        with self._cond:
            while self.reason is not None and not self.stopping():
                self._cond.wait(0.05)
        return not self.stopping()

    def sleep(self, seconds: float) -> bool:
        """Sleeps between batches; False when the walk must stop instead."""
        deadline = time.monotonic() + seconds
        while not self.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            self.control.stop.wait(min(left, 0.05))
        return False


OnPause = Callable[[bool], None]
