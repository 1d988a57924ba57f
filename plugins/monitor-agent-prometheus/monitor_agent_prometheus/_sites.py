"""Counting reported blocking episodes by culprit site, from the monitor thread.

:class:`BlockedEpisodes` is a ``gevent.events`` subscriber. The agent calls it
in its native monitor thread, so it does O(1) work under a native lock and
never touches the gevent API. Sites get their own label value in the order
they are first seen, up to ``max_sites``; every later site is counted under
``site="other"``, so the number of series stays bounded for the life of the
process (Prometheus counters must not change labels once exported).
"""
from __future__ import annotations

import bisect
import os
from typing import Any, Dict, List, Sequence, Tuple

from monitor_agent import _native
from monitor_agent._frames import culprit_frame
from monitor_agent.events import EventLoopUnblocked

__all__ = ["DURATION_BUCKETS", "OTHER", "BlockedEpisodes", "SiteHistogram", "site_label"]

OTHER = "other"
# Seconds. Episodes are at least the threshold (0.1 s by default) long.
DURATION_BUCKETS: Tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def site_label(event: Any) -> str:
    """A short, stable name for where the loop was blocked: ``pkg/file.py:function``.

    The culprit frame (innermost application frame) of the event's stack,
    with the file shortened to its last two path parts. Without a stack, the
    culprit's kind (``loop``, ``callback``, ``unknown``).
    """
    frame = culprit_frame(getattr(event, "stack", None) or [])
    if frame is None:
        culprit = getattr(event, "culprit", None)
        return str(getattr(culprit, "kind", None) or "unknown")
    parts = str(frame["file"]).replace(os.sep, "/").split("/")
    return f"{'/'.join(parts[-2:])}:{frame['function']}"


class SiteHistogram:
    """Non-cumulative bucket counts, count and sum of one site's durations."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self, size: int) -> None:
        self.buckets: List[int] = [0] * size
        self.count = 0
        self.total = 0.0

    def copy(self) -> "SiteHistogram":
        """An independent copy (taken under the owner's lock)."""
        other = SiteHistogram(len(self.buckets))
        other.buckets, other.count, other.total = list(self.buckets), self.count, self.total
        return other


class BlockedEpisodes:
    """Per-site counts and duration histograms of reported blocking episodes.

    Args:
        max_sites: Site label values before ``other`` takes over.
        bounds: Upper bounds (seconds) of the duration histogram's buckets.
    """

    def __init__(self, max_sites: int, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.max_sites = max_sites
        self.bounds = tuple(bounds)
        self.reset()

    def reset(self) -> None:
        """Forget everything and make a fresh lock (a forked child starts its own counts)."""
        self._lock = _native.allocate_lock()
        self._sites: Dict[str, SiteHistogram] = {}
        self.events = 0

    def __call__(self, event: Any) -> None:
        """The subscriber: count an :class:`EventLoopUnblocked`; ignore anything else."""
        if not isinstance(event, EventLoopUnblocked):
            return
        duration = max(0.0, float(event.blocking_time))
        label = site_label(event)
        index = bisect.bisect_left(self.bounds, duration)
        with self._lock:
            self.events += 1
            histogram = self._sites.get(label)
            if histogram is None:
                if len(self._sites) >= self.max_sites + (OTHER in self._sites):
                    label = OTHER
                histogram = self._sites.get(label)
                if histogram is None:
                    histogram = self._sites[label] = SiteHistogram(len(self.bounds) + 1)
            histogram.buckets[index] += 1
            histogram.count += 1
            histogram.total += duration

    def snapshot(self) -> Dict[str, SiteHistogram]:
        """A consistent copy of every site's histogram."""
        with self._lock:
            return {site: h.copy() for site, h in self._sites.items()}
