"""The loop heartbeat: a libev timer on the hub that stamps the time it last ran.

It is the only work the agent does on the hub thread in normal operation: one
short Python callback every ``interval`` seconds (5 ms by default), whatever the
number of greenlet switches. The timer is ``unref``'d, so it never keeps the
loop alive on its own. Each tick records how late it was (loop lag) in a
fixed-memory histogram, and a gap longer than the detection threshold is
queued for the watchdog, which uses it to measure blocks it could not see
while they happened (a C call holding the GIL).
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Tuple

from .. import _native
from .histogram import LagHistogram

__all__ = ["Heartbeat"]

Gap = Tuple[float, float]


class Heartbeat:
    """Stamps :attr:`last` from the hub thread every *interval* seconds.

    Args:
        interval: Timer period in seconds.
        gap_threshold: Gaps between ticks longer than this are queued in :attr:`gaps`.
    """

    def __init__(self, interval: float, gap_threshold: float) -> None:
        self.interval = interval
        self.gap_threshold = gap_threshold
        self.last = 0.0
        self.ticks = 0
        self.gaps: Deque[Gap] = collections.deque(maxlen=256)
        self.lag = LagHistogram()
        self.on_tick: Callable[[], None] | None = None
        self._timer: Any = None

    def start(self, hub: Any) -> None:
        """Start ticking; must be called in the hub's thread."""
        if self._timer is not None:
            return
        timer = hub.loop.timer(self.interval, self.interval)
        timer.ref = False
        timer.start(self._tick)
        self._timer = timer
        # The loop is running now (start() is called from it): count this as
        # the first tick, so a block in this very iteration is seen too.
        self.last = _native.monotonic()
        self.ticks = 1

    def _tick(self) -> None:
        now = _native.monotonic()
        previous, self.last = self.last, now
        self.ticks += 1
        if self.ticks > 1:
            gap = now - previous
            self.lag.record(gap - self.interval)
            if gap > self.gap_threshold:
                self.gaps.append((previous, now))
        hook = self.on_tick
        if hook is not None:
            hook()

    def restart_counting(self) -> None:
        """Forget gaps and restart the clock (in a forked child)."""
        self.last = _native.monotonic()
        self.gaps.clear()

    def stop(self) -> None:
        """Stop the timer; must be called in the hub's thread (see ``BlockingDetector.stop``)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.stop()
            timer.close()
