"""Memory events: one Exceeded per new peak, one Under on recovery, no storm around the line."""
from __future__ import annotations

import json

from monitor_agent.memory import MemoryMonitor

from .helpers import run_python

PROGRAM = """
import json, os, gevent, psutil, monitor_agent
from monitor_agent.events import MemoryUsageThresholdExceeded, MemoryUsageUnderThreshold

got = []
gevent.events.subscribers.append(lambda e: got.append(e) if isinstance(
    e, (MemoryUsageThresholdExceeded, MemoryUsageUnderThreshold)) else None)
MB = 2 ** 20
base = psutil.Process().memory_info().rss
threshold = base + 20 * MB
agent = monitor_agent.install(transports="", max_memory_usage=threshold, memory_monitor_period=0.02)

def settle():
    gevent.sleep(0.3)

settle()
steps = []
hold = [b"x" * (40 * MB)]            # above the threshold: Exceeded
settle(); steps.append("peak1")
hold.append(b"x" * (20 * MB))        # a new peak: Exceeded again
settle(); steps.append("peak2")
del hold[1]                         # back to the first level: still above, not a new peak
settle(); steps.append("down-but-over")
hold.clear()                        # well below the low-water mark: one Under
settle(); steps.append("recovered")
print(json.dumps({
    "threshold": threshold,
    "events": [[type(e).__name__, e.mem_usage, getattr(e, "max_memory_usage", None)] for e in got],
}))
"""


def test_exceeded_per_new_peak_and_one_under() -> None:
    """40 MB over, then 60 MB (new peak), then 40 MB, then baseline: Exceeded, Exceeded, Under."""
    result = run_python(PROGRAM)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    kinds = [k for k, _, _ in out["events"]]
    assert kinds == ["MemoryUsageThresholdExceeded", "MemoryUsageThresholdExceeded", "MemoryUsageUnderThreshold"]
    first, second, under = out["events"]
    assert first[1] > out["threshold"] and second[1] > first[1] + 15 * 2 ** 20
    assert under[1] < out["threshold"] * 0.95
    # Under carries the true peak: the highest reading, at least the last reported one (a rise of
    # less than 1 % of the threshold after it is not reported, but it is the peak).
    assert second[1] <= under[2] < second[1] + 0.01 * out["threshold"]


class _Reading:
    def __init__(self, rss: int) -> None:
        self.rss = rss


def test_no_storm_when_oscillating_around_the_threshold() -> None:
    """Usage wandering between the low-water mark and the threshold sends nothing new.

    The readings are fed to the monitor directly, because a real process cannot
    be made to oscillate by exact amounts on demand; the decision logic is the
    one the subprocess test above drives with real allocations.
    """
    got = []
    readings = iter([1005, 1008, 990, 1000, 960, 1007, 955, 1012, 1016, 951, 949, 1001])
    monitor = MemoryMonitor(1000, low_water=0.95, measure="rss",
                            emit=lambda e: got.append((type(e).__name__, e.mem_usage,
                                                       getattr(e, "max_memory_usage", None))))
    monitor.sample = lambda: _Reading(next(readings))  # type: ignore[method-assign]
    for _ in range(12):
        monitor(None)
    # Threshold 1000, low water 950, a new peak needs +10 (1 %). 1005: Exceeded. 1008, 1007, 1012:
    # not 10 above the last report. 990 … 951: between the marks, nothing. 1016: a new peak.
    # 949: under the low-water mark, one Under carrying the peak. 1001: a new episode.
    assert got == [("MemoryUsageThresholdExceeded", 1005, None), ("MemoryUsageThresholdExceeded", 1016, None),
                   ("MemoryUsageUnderThreshold", 949, 1016), ("MemoryUsageThresholdExceeded", 1001, None)]
