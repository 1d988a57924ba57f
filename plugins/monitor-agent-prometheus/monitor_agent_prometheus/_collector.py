"""The custom collector: reads ``Agent.stats()`` and the per-site counts at scrape time.

Nothing is maintained between scrapes except the per-site episode counts
(:mod:`._sites`): everything else is read from the agent's own counters when
Prometheus asks, which costs a few dict copies per scrape and nothing per event.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Sequence, Tuple

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from monitor_agent import _version
from monitor_agent.events import BLOCKED, MEMORY_EXCEEDED, MEMORY_UNDER, UNBLOCKED

from ._sites import BlockedEpisodes

__all__ = ["LAG_BUCKETS", "AgentCollector", "cumulative_lag_buckets"]

# Seconds: the loop lag of a healthy hub is well under a millisecond.
LAG_BUCKETS: Tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                  0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_EVENT_KINDS = {BLOCKED: "blocked", UNBLOCKED: "unblocked", MEMORY_EXCEEDED: "memory_exceeded",
                MEMORY_UNDER: "memory_under"}


def _bucket_tops(histogram: Any, bounds: Sequence[float]) -> List[int]:
    """For each bound, the last index of the lag histogram's buckets that lies at or below it."""
    tops = []
    for bound in bounds:
        top = histogram.bucket_of(bound)
        if top > 0 and histogram.upper_bound(top) > bound * 1.0000001:
            top -= 1
        tops.append(top)
    return tops


def cumulative_lag_buckets(histogram: Any, bounds: Sequence[float] = LAG_BUCKETS,
                           ) -> Tuple[List[Tuple[str, float]], float]:
    """Prometheus buckets from the agent's log-linear lag histogram.

    The agent's buckets are ~2 % wide, so each fixed bound is exact to within
    one of them. The counts are copied once, so the buckets, ``+Inf`` and the
    count agree even while the hub thread records more lags.

    Returns:
        ``([(le, cumulative count), …, ("+Inf", count)], sum)``.
    """
    counts = list(histogram.counts)
    total = float(histogram.total)
    result: List[Tuple[str, float]] = []
    seen, start = 0, 0
    for bound, top in zip(bounds, _bucket_tops(histogram, bounds), strict=True):
        seen += sum(counts[start: top + 1])
        start = max(start, top + 1)
        result.append((repr(float(bound)), float(seen)))
    result.append(("+Inf", float(sum(counts))))
    return result, total


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class AgentCollector(Collector):
    """Every ``monitor_agent_*`` metric of one agent.

    Args:
        agent: The installed :class:`monitor_agent.agent.Agent`.
        episodes: The per-site counts fed by the event subscriber.
    """

    def __init__(self, agent: Any, episodes: BlockedEpisodes) -> None:
        self.agent = agent
        self.episodes = episodes

    def collect(self) -> Iterator[Metric]:
        """Build the metric families from the agent's counters, now."""
        stats = self.agent.stats()
        yield from self._info(stats)
        yield from self._events(stats)
        yield from self._transports(stats["transports"])
        yield from self._blocking(stats.get("blocking"))
        yield from self._sites()
        yield from self._memory(stats.get("memory"), stats["events"]["by_name"])

    def _info(self, stats: Dict[str, Any]) -> Iterator[Metric]:
        info = InfoMetricFamily("monitor_agent", "The monitor_agent in this process (always 1).")
        info.add_metric([], {"service": str(stats["service"]), "pid": str(stats["pid"]),
                             "version": _version.__version__})
        yield info
        yield _gauge("monitor_agent_uptime_seconds", "Seconds since the agent was installed.", stats["uptime"])

    def _events(self, stats: Dict[str, Any]) -> Iterator[Metric]:
        events = stats["events"]
        emitted = CounterMetricFamily("monitor_agent_events_emitted", "Events the agent emitted, by event name.",
                                      labels=["event"])
        for name, count in sorted(events["by_name"].items()):
            emitted.add_metric([name], count)
        yield emitted
        yield _counter("monitor_agent_subscriber_errors", "Exceptions raised by gevent.events subscribers.",
                       events["subscriber_errors"])
        yield _counter("monitor_agent_dispatch_errors", "Events the agent could not dispatch.",
                       events["dispatch_errors"])

    def _transports(self, transports: Dict[str, Dict[str, Any]]) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "monitor_agent_events", "Events handed to each transport, by outcome: sent, failed "
            "(refused by the transport) or dropped_<reason> (queue_full, shutdown).",
            labels=["transport", "outcome"])
        submitted = CounterMetricFamily("monitor_agent_transport_submitted_events",
                                        "Events queued for each transport.", labels=["transport"])
        retries = CounterMetricFamily("monitor_agent_transport_retries",
                                      "Retries after a passing transport outage.", labels=["transport"])
        queued = GaugeMetricFamily("monitor_agent_transport_queued_events",
                                   "Events waiting in each transport's queue or in flight.", labels=["transport"])
        for name, t in sorted(transports.items()):  # name = transport.describe(): password redacted
            outcomes.add_metric([name, "sent"], t["sent"])
            outcomes.add_metric([name, "failed"], t["failed"])
            for reason, count in sorted(t["dropped"].items()):
                outcomes.add_metric([name, f"dropped_{reason}"], count)
            submitted.add_metric([name], t["submitted"])
            retries.add_metric([name], t["retries"])
            queued.add_metric([name], t["queued"] + t["in_flight"])
        yield from (outcomes, submitted, retries, queued)

    def _blocking(self, blocking: Dict[str, Any] | None) -> Iterator[Metric]:
        if blocking is None:  # blocking detection is off
            return
        yield _gauge("monitor_agent_blocking_threshold_seconds", "The blocking threshold T.", blocking["threshold"])
        yield _gauge("monitor_agent_loop_blocked", "1 while the event loop is blocked past the threshold.",
                     1.0 if blocking["blocked_now"] else 0.0)
        detected = CounterMetricFamily(
            "monitor_agent_blocking_detected_episodes", "Every blocking episode the detector saw, by what "
            "became of it: reported, suppressed (rate limit), ignored (ignore_blocking), in_grace (start-up).",
            labels=["outcome"])
        for outcome in ("reported", "suppressed", "ignored", "in_grace"):
            detected.add_metric([outcome], blocking[outcome])
        yield detected
        yield _counter("monitor_agent_blocked_time_seconds", "Total time the loop was blocked past the threshold.",
                       blocking["total_blocked"])
        yield _gauge("monitor_agent_blocked_max_seconds", "The longest block so far.", blocking["max_blocked"])
        detector = getattr(self.agent, "detector", None)
        lag = getattr(getattr(detector, "heartbeat", None), "lag", None)
        if lag is not None:
            buckets, total = cumulative_lag_buckets(lag)
            histogram = HistogramMetricFamily(
                "monitor_agent_loop_lag_seconds", "How late the loop's heartbeat timer fired, per tick.")
            histogram.add_metric([], buckets, total)
            yield histogram

    def _sites(self) -> Iterator[Metric]:
        snapshot = self.episodes.snapshot()
        episodes = CounterMetricFamily(
            "monitor_agent_blocked_episodes", "Reported blocking episodes, by culprit site "
            f"(the first {self.episodes.max_sites} sites seen; later ones as site=\"other\").", labels=["site"])
        durations = HistogramMetricFamily(
            "monitor_agent_blocked_duration_seconds", "Measured duration of reported blocking episodes.",
            labels=["site"])
        for site, h in sorted(snapshot.items()):
            episodes.add_metric([site], h.count)
            cumulative, buckets = 0, []
            for bound, count in zip(self.episodes.bounds, h.buckets, strict=False):  # +Inf comes last
                cumulative += count
                buckets.append((repr(float(bound)), float(cumulative)))
            buckets.append(("+Inf", float(h.count)))
            durations.add_metric([site], buckets, h.total)
        yield episodes
        yield durations

    def _memory(self, memory: Dict[str, Any] | None, by_name: Dict[str, int]) -> Iterator[Metric]:
        threshold_events = CounterMetricFamily(
            "monitor_agent_memory_threshold_events", "Memory threshold events: exceeded (crossed or a new "
            "peak), under (back below the low-water mark).", labels=["kind"])
        threshold_events.add_metric(["exceeded"], by_name.get(MEMORY_EXCEEDED, 0))
        threshold_events.add_metric(["under"], by_name.get(MEMORY_UNDER, 0))
        yield threshold_events
        if memory is None:  # no MONITOR_AGENT_MAX_MEMORY_USAGE: process_resident_memory_bytes still tells
            return
        if memory.get("usage") is not None:
            yield _gauge("monitor_agent_memory_usage_bytes",
                         f"Memory in use at the last check ({memory['measure']}).", memory["usage"])
        yield _gauge("monitor_agent_memory_threshold_bytes", "MONITOR_AGENT_MAX_MEMORY_USAGE, in bytes.",
                     memory["max_allowed"])
        if memory.get("low_water") is not None:
            yield _gauge("monitor_agent_memory_low_water_bytes", "Usage under which an episode ends.",
                         memory["low_water"])
        yield _gauge("monitor_agent_memory_over_threshold", "1 during a memory episode (usage above the "
                     "threshold, not yet back under the low-water mark).", 1.0 if memory.get("peak") else 0.0)
