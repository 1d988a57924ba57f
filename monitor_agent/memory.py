"""Memory monitoring: gevent's memory events with sane semantics.

* :class:`~monitor_agent.events.MemoryUsageThresholdExceeded` when usage first
  rises above the threshold, and again only when it sets a new peak (by at
  least 1 % of the threshold, so allocator noise does not count);
* one :class:`~monitor_agent.events.MemoryUsageUnderThreshold` when usage falls
  below the low-water mark (default 95 % of the threshold), carrying the true
  peak; usage wandering between the mark and the threshold sends nothing.

RSS (``memory_info()``) is measured by default: it is one ``/proc`` read.
USS (``memory_full_info()``) reads ``smaps`` and costs milliseconds, so it is
opt-in. The psutil process object is created per pid, so a forked child
measures itself, not its parent.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict

from .events import MemoryUsageThresholdExceeded, MemoryUsageUnderThreshold

__all__ = ["MemoryMonitor"]

# A new peak must beat the previous one by this share of the threshold.
PEAK_STEP = 0.01


class MemoryMonitor:
    """A monitoring function ``(hub) -> None`` that emits memory events.

    Args:
        max_allowed: Threshold in bytes.
        low_water: Share of the threshold usage must fall under to end an episode.
        measure: ``rss`` or ``uss``.
        emit: Called with each event (the agent's dispatcher).
    """

    def __init__(self, max_allowed: int, *, low_water: float, measure: str,
                 emit: Callable[[Any], None]) -> None:
        self.max_allowed = max_allowed
        self.low_water_bytes = int(max_allowed * low_water)
        self.measure = measure
        self.emit = emit
        self.peak = 0  # highest usage seen in the current episode; 0 when not in one
        self.reported_peak = 0  # usage carried by the last Exceeded event of the episode
        self.last_usage: int | None = None
        self.checks = 0
        self._process: Any = None
        self._pid = 0
        # Imported here, in the thread calling install(): an import inside the
        # monitor thread could be cut in half by a fork (the child would keep
        # a half-initialized module, or wait forever for its import lock).
        import psutil

        self._psutil = psutil

    def _get_process(self) -> Any:
        pid = os.getpid()
        if self._process is None or self._pid != pid:
            self._process, self._pid = self._psutil.Process(pid), pid
            self.peak = self.reported_peak = 0  # an episode of the parent is not the child's
        return self._process

    def sample(self) -> Any:
        """Return psutil's memory tuple for this process (RSS or USS flavour)."""
        process = self._get_process()
        return process.memory_full_info() if self.measure == "uss" else process.memory_info()

    def __call__(self, hub: Any) -> None:
        info = self.sample()
        usage = int(getattr(info, "uss", 0) or info.rss) if self.measure == "uss" else int(info.rss)
        self.last_usage = usage
        self.checks += 1
        if usage > self.max_allowed:
            # A rise too small to report still raises the peak that Under carries.
            self.peak = max(self.peak, usage)
            if not self.reported_peak or usage >= self.reported_peak + PEAK_STEP * self.max_allowed:
                self.reported_peak = usage
                self.emit(MemoryUsageThresholdExceeded(usage, self.max_allowed, info))
        elif self.peak and usage < self.low_water_bytes:
            peak, self.peak, self.reported_peak = self.peak, 0, 0
            self.emit(MemoryUsageUnderThreshold(usage, self.max_allowed, info, peak))

    def stats(self) -> Dict[str, Any]:
        """Current figures: last usage, threshold, low-water mark, peak of the open episode."""
        return {"usage": self.last_usage, "max_allowed": self.max_allowed,
                "low_water": self.low_water_bytes, "peak": self.peak or None, "measure": self.measure,
                "checks": self.checks}
