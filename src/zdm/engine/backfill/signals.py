"""SIGINT and SIGTERM stop a backfill after its current batch, resumable."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Any


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived: the current batch committed and the run stops, resumable."""


@dataclass
class Control:
    """Stop requests from signals, checked between batches."""

    stop: threading.Event = field(default_factory=threading.Event)
    signal_name: str | None = None
    previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            self.stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, handler)

    def restore(self) -> None:
        """Gives a library caller its own handlers back when the run ends."""
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous.clear()
