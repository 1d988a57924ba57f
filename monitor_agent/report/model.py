"""Streaming, memory-bounded aggregation of event envelopes into a report.

:class:`ReportBuilder` is fed one envelope at a time and keeps only
aggregates: per blocking site, per process, the memory episodes with the
highest peaks, and a timeline whose time bins widen (by doubling) whenever it
would hold more than a fixed number of points. Memory use therefore depends on
the number of distinct sites and processes (both capped), not on the number of
events. Every field of ``data`` is treated as untrusted: wrong types are
ignored, never trusted.
"""
from __future__ import annotations

import collections
import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .._frames import FrameInfo, culprit_frame, fingerprint
from ..events import BLOCKED, MEMORY_EXCEEDED, MEMORY_UNDER, UNBLOCKED
from ..wire import finite_number

__all__ = ["BlockSite", "MemoryEpisode", "Process", "ProcessKey", "Report", "ReportBuilder", "Timeline"]

ProcessKey = Tuple[str, int, str]  # (host, pid, service)

MAX_SITES = 5_000
MAX_PROCESSES = 5_000
MAX_PENDING = 10_000
MAX_PROFILE_FRAMES = 64
MAX_FRAMES = 128
MAX_TEXT = 300
MAX_EPISODES_KEPT = 200
MAX_DURATION = 1e9  # seconds (31 years): a longer "block" is a corrupt field, taken as unknown
MAX_BIN_WIDTH = 1e12  # seconds: beyond any real log's span
OTHER_SITE = "(other sites)"
OTHER_PROCESS: ProcessKey = ("(other hosts)", 0, "(other processes)")


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A string field, cut to *limit* characters; '' for anything that is not a string."""
    if not isinstance(value, str):
        return ""
    return value if len(value) <= limit else value[:limit] + "…"


def _duration(value: Any) -> Optional[float]:
    """A plausible duration in seconds, else None."""
    number = finite_number(value)
    return number if number is not None and 0 <= number <= MAX_DURATION else None


def _count(value: Any) -> int:
    number = finite_number(value)
    return int(number) if number is not None and 0 <= number < 2**53 else 0


def _frames(value: Any, limit: int = MAX_FRAMES) -> List[FrameInfo]:
    """Well-formed frames from an untrusted list (innermost *limit* kept)."""
    if not isinstance(value, list):
        return []
    frames: List[FrameInfo] = []
    for item in value[-limit:]:
        if not isinstance(item, dict):
            continue
        line = item.get("line")
        frames.append(FrameInfo(
            file=_text(item.get("file")) or "?",
            line=line if isinstance(line, int) and not isinstance(line, bool) else 0,
            function=_text(item.get("function")) or "?",
            code=_text(item.get("code")),
            app=item.get("app") is True))
    return frames


def _started(data: Mapping[str, Any], ts: float, duration: float) -> float:
    """When the block began: ``started_at`` when it is plausible (just before *ts*), else ``ts - duration``."""
    started = finite_number(data.get("started_at"))
    if started is not None and 0 <= ts - started <= duration + 60:
        return started
    return ts - duration


def short_path(path: str, keep: int = 2) -> str:
    """The last *keep* components of a long path: ``…/examples/crawler.py``."""
    parts = path.replace("\\", "/").split("/")
    if len(path) <= 40 or len(parts) <= keep:
        return path
    return "…/" + "/".join(parts[-keep:])


def frame_text(frame: Optional[Mapping[str, Any]]) -> str:
    """``…/dir/file.py:line function`` for a frame, ``?`` for none."""
    if not frame:
        return "?"
    return f"{short_path(str(frame.get('file', '?')))}:{frame.get('line', 0)} {frame.get('function', '?')}"


@dataclass
class BlockSite:
    """One blocking site: the episodes whose culprit stacks share a fingerprint.

    Attributes:
        key: The fingerprint (as the agent's rate limiter computes it).
        culprit: The culprit frame (innermost application frame) of the first episode seen.
        culprit_kind: ``greenlet``, ``main``, ``callback``, ``loop`` or ``unknown``.
        greenlet: The greenlet name of the first episode seen.
        count: Episodes seen (reported ones; see ``suppressed``).
        total: Sum of their durations, seconds.
        max: The longest, seconds.
        suppressed: Episodes of this site the agent's rate limit did not report.
        unfinished: Episodes whose unblocked event is missing (duration is a lower bound).
        profile: ``file:line function`` -> sampled seconds, over all episodes.
        processes: Distinct processes (counted up to a cap).
    """

    key: str
    culprit: Optional[FrameInfo]
    culprit_kind: str
    greenlet: str
    count: int = 0
    total: float = 0.0
    max: float = 0.0
    suppressed: int = 0
    unfinished: int = 0
    profile: Dict[str, float] = field(default_factory=dict)
    processes: set[ProcessKey] = field(default_factory=set)

    def add_profile(self, entries: List[Tuple[str, float]]) -> None:
        """Add sampled seconds per frame, keeping the dictionary bounded."""
        for label, seconds in entries:
            self.profile[label] = self.profile.get(label, 0.0) + seconds
        if len(self.profile) > 2 * MAX_PROFILE_FRAMES:
            top = heapq.nlargest(MAX_PROFILE_FRAMES, self.profile.items(), key=lambda kv: kv[1])
            self.profile = dict(top)

    def where(self) -> str:
        """Where the site blocks: the culprit frame, or the fingerprint when there is no stack."""
        return frame_text(self.culprit) if self.culprit is not None else self.key

    def who(self) -> str:
        """What was running: ``greenlet 'name'``, or the culprit kind."""
        if self.culprit_kind == "greenlet" and self.greenlet:
            return f"greenlet {self.greenlet!r}"
        return self.culprit_kind

    def top_profile(self, n: int) -> List[Tuple[str, float]]:
        """The *n* frames with the most sampled time, as ``(label, share of the site's samples)``."""
        whole = sum(self.profile.values())
        if whole <= 0:
            return []
        return [(label, seconds / whole)
                for label, seconds in heapq.nlargest(n, self.profile.items(), key=lambda kv: kv[1])]


@dataclass
class Process:
    """Totals for one process (host, pid, service).

    Attributes:
        events: Envelopes seen from it.
        blocks: Blocking episodes; ``blocked`` their total seconds, ``max_block`` the longest.
        memory_peak: Highest memory figure in any memory event, bytes (None: no memory event).
        memory_episodes: Times memory exceeded the threshold.
        first, last: Earliest and latest ``ts``.
    """

    key: ProcessKey
    events: int = 0
    blocks: int = 0
    blocked: float = 0.0
    max_block: float = 0.0
    memory_peak: Optional[int] = None
    memory_episodes: int = 0
    first: float = math.inf
    last: float = -math.inf


@dataclass
class MemoryEpisode:
    """Memory above the threshold, from the first exceeded event to the under-threshold event.

    ``start`` is None when the log has no exceeded event for it, ``end`` is None while it was still open.
    """

    process: ProcessKey
    start: Optional[float]
    end: Optional[float]
    peak: int
    threshold: int

    @property
    def duration(self) -> Optional[float]:
        """Seconds above the threshold, when both ends are known."""
        return self.end - self.start if self.start is not None and self.end is not None else None


class Timeline:
    """Points ``(ts, value)`` per series, binned so that at most *max_points* are kept.

    Each bin keeps its largest value (and that point's time) and, for
    ``keep_min``, its smallest too. When there are too many bins, the bin width
    doubles and neighbouring bins merge, so the memory bound holds for any
    number of points while spikes are never averaged away.
    """

    def __init__(self, max_points: int = 4_000, width: float = 0.001, keep_min: bool = False) -> None:
        self.max_points = max_points
        self.width = width
        self.keep_min = keep_min
        self.origin: Optional[float] = None
        # (series, bin) -> [max_ts, max_value, min_ts, min_value, count]
        self.bins: Dict[Tuple[int, int], List[float]] = {}

    def add(self, series: int, ts: float, value: float) -> None:
        """Record one point."""
        if self.origin is None:
            self.origin = ts
        offset = (ts - self.origin) / self.width
        if not math.isfinite(offset):
            return
        key = (series, math.floor(offset))
        entry = self.bins.get(key)
        if entry is None:
            self.bins[key] = [ts, value, ts, value, 1]
            if len(self.bins) > self.max_points:
                self._widen()
            return
        self._merge(entry, [ts, value, ts, value, 1])

    @staticmethod
    def _merge(entry: List[float], other: List[float]) -> None:
        if other[1] > entry[1]:
            entry[0], entry[1] = other[0], other[1]
        if other[3] < entry[3]:
            entry[2], entry[3] = other[2], other[3]
        entry[4] += other[4]

    def _widen(self) -> None:
        # Bounded by width too: many series of one point each cannot be merged further.
        while len(self.bins) > self.max_points and self.width < MAX_BIN_WIDTH:
            self.width *= 2
            merged: Dict[Tuple[int, int], List[float]] = {}
            for (series, index), entry in self.bins.items():
                key = (series, index // 2)
                if key in merged:
                    self._merge(merged[key], entry)
                else:
                    merged[key] = entry
            self.bins = merged

    def points(self, series: int) -> List[Tuple[float, float]]:
        """The kept points of one series in time order (bin maxima, and minima for ``keep_min``)."""
        out: List[Tuple[float, float]] = []
        for (s, _index), entry in self.bins.items():
            if s != series:
                continue
            out.append((entry[0], entry[1]))
            if self.keep_min and entry[2] != entry[0]:
                out.append((entry[2], entry[3]))
        out.sort()
        return out

    def series(self) -> List[int]:
        """Series that have points."""
        return sorted({s for s, _ in self.bins})


@dataclass
class _Pending:
    site: BlockSite
    duration: float
    started: float
    suppressed: int


@dataclass
class Report:
    """What a report shows: the aggregates, ready to render.

    Attributes:
        sites: Blocking sites, by total blocked time (largest first).
        processes: Processes in order of first appearance; ``process_index`` maps keys to positions.
        memory_episodes: The episodes with the highest peaks, highest first; ``memory_episode_count`` all of them.
        blocks: Timeline of block durations (series = process index).
        memory: Timeline of memory figures (series = process index).
        thresholds: Memory threshold per process index (last seen).
        first, last: Time span of all events.
    """

    sites: List[BlockSite]
    processes: List[Process]
    memory_episodes: List[MemoryEpisode]
    memory_episode_count: int
    blocks: Timeline
    memory: Timeline
    thresholds: Dict[int, int]
    first: Optional[float]
    last: Optional[float]
    events: int
    block_count: int
    sites_folded: bool
    processes_folded: bool


class ReportBuilder:
    """Feeds envelopes into the aggregates; :meth:`report` returns the result."""

    def __init__(self, timeline_points: int = 4_000) -> None:
        self.sites: Dict[str, BlockSite] = {}
        self.processes: Dict[ProcessKey, Process] = {}
        self.process_index: Dict[ProcessKey, int] = {}
        self.pending: collections.OrderedDict[Tuple[ProcessKey, int], _Pending] = collections.OrderedDict()
        self.open_memory: Dict[ProcessKey, MemoryEpisode] = {}
        self.closed_memory: List[Tuple[int, int, MemoryEpisode]] = []  # a min-heap by peak
        self.memory_episode_count = 0
        self.blocks = Timeline(timeline_points)
        self.memory = Timeline(timeline_points, keep_min=True)
        self.thresholds: Dict[int, int] = {}
        self.events = 0
        self.block_count = 0
        self._tiebreak = 0
        self.sites_folded = False
        self.processes_folded = False

    # -- input --------------------------------------------------------------

    def add(self, envelope: Mapping[str, Any]) -> None:
        """Account one valid envelope (as :class:`~monitor_agent.report.reader.LogReader` yields them)."""
        ts = float(envelope["ts"])
        proc = self._process(envelope["source"], ts)
        self.events += 1
        data: Mapping[str, Any] = envelope["data"]
        name = envelope["event"]
        if name == BLOCKED:
            self._blocked(proc, data, ts)
        elif name == UNBLOCKED:
            self._unblocked(proc, data, ts)
        elif name == MEMORY_EXCEEDED:
            self._memory_exceeded(proc, data, ts)
        elif name == MEMORY_UNDER:
            self._memory_under(proc, data, ts)

    def _process(self, source: Mapping[str, Any], ts: float) -> Process:
        key: ProcessKey = (_text(source.get("host"), 120) or "?", int(source["pid"]),
                           _text(source.get("service"), 120) or "?")
        proc = self.processes.get(key)
        if proc is None:
            if len(self.processes) >= MAX_PROCESSES:
                key = OTHER_PROCESS
                self.processes_folded = True
                proc = self.processes.get(key)
            if proc is None:
                proc = self.processes[key] = Process(key)
                self.process_index[key] = len(self.process_index)
        proc.events += 1
        proc.first = min(proc.first, ts)
        proc.last = max(proc.last, ts)
        return proc

    def _site(self, data: Mapping[str, Any]) -> BlockSite:
        stack = _frames(data.get("stack"))
        kind = _text(data.get("culprit"), 40) or "unknown"
        key = fingerprint(stack) if stack else f"no stack: {kind}"
        site = self.sites.get(key)
        if site is None:
            if len(self.sites) >= MAX_SITES:
                self.sites_folded = True
                key = OTHER_SITE
                site = self.sites.get(key)
            if site is None:
                culprit = culprit_frame(stack) if stack and key != OTHER_SITE else None
                site = self.sites[key] = BlockSite(key, culprit, kind, _text(data.get("greenlet"), 120))
        return site

    def _blocked(self, proc: Process, data: Mapping[str, Any], ts: float) -> None:
        duration = _duration(data.get("blocking_time")) or 0.0
        started = _started(data, ts, duration)
        episode = (proc.key, _count(data.get("episode")))
        earlier = self.pending.pop(episode, None)
        if earlier is not None:  # a second block under the same number before the first ended (or no number)
            self._record(proc, earlier, finished=False)
        self.pending[episode] = _Pending(self._site(data), duration, started, _count(data.get("suppressed_before")))
        if len(self.pending) > MAX_PENDING:
            (old_proc, _), oldest = self.pending.popitem(last=False)
            self._record(self.processes[old_proc], oldest, finished=False)

    def _unblocked(self, proc: Process, data: Mapping[str, Any], ts: float) -> None:
        pending = self.pending.pop((proc.key, _count(data.get("episode"))), None)
        duration = _duration(data.get("blocking_time"))
        if duration is None:
            duration = pending.duration if pending else 0.0
        site = pending.site if pending else self._site(data)
        started = pending.started if pending else _started(data, ts, duration)
        suppressed = _count(data.get("suppressed_before")) or (pending.suppressed if pending else 0)
        site.add_profile(self._profile(data.get("profile")))
        self._record(proc, _Pending(site, duration, started, suppressed), finished=True)

    @staticmethod
    def _profile(value: Any) -> List[Tuple[str, float]]:
        if not isinstance(value, list):
            return []
        out: List[Tuple[str, float]] = []
        for item in value[:MAX_PROFILE_FRAMES]:
            if isinstance(item, dict):
                seconds = _duration(item.get("seconds"))
                if seconds:
                    out.append((frame_text(_frames([item])[0]), seconds))
        return out

    def _record(self, proc: Process, episode: _Pending, *, finished: bool) -> None:
        site = episode.site
        site.count += 1
        site.total += episode.duration
        site.max = max(site.max, episode.duration)
        site.suppressed += episode.suppressed
        site.unfinished += 0 if finished else 1
        if len(site.processes) < 1000:
            site.processes.add(proc.key)
        proc.blocks += 1
        proc.blocked += episode.duration
        proc.max_block = max(proc.max_block, episode.duration)
        self.block_count += 1
        self.blocks.add(self.process_index[proc.key], episode.started, episode.duration)

    def _memory_figures(self, proc: Process, data: Mapping[str, Any], ts: float) -> Tuple[int, int]:
        usage = _count(data.get("mem_usage"))
        threshold = _count(data.get("max_allowed"))
        index = self.process_index[proc.key]
        if usage:
            self.memory.add(index, ts, usage)
        if threshold:
            self.thresholds[index] = threshold
        return usage, threshold

    def _memory_exceeded(self, proc: Process, data: Mapping[str, Any], ts: float) -> None:
        usage, threshold = self._memory_figures(proc, data, ts)
        proc.memory_peak = max(proc.memory_peak or 0, usage)
        episode = self.open_memory.get(proc.key)
        if episode is None:
            self.open_memory[proc.key] = MemoryEpisode(proc.key, ts, None, usage, threshold)
            proc.memory_episodes += 1
        else:
            episode.peak = max(episode.peak, usage)

    def _memory_under(self, proc: Process, data: Mapping[str, Any], ts: float) -> None:
        usage, threshold = self._memory_figures(proc, data, ts)
        peak = max(_count(data.get("max_memory_usage")), usage)
        proc.memory_peak = max(proc.memory_peak or 0, peak)
        episode = self.open_memory.pop(proc.key, None)
        if episode is None:  # the log starts inside the episode
            episode = MemoryEpisode(proc.key, None, ts, peak, threshold)
            proc.memory_episodes += 1
        episode.end = ts
        episode.peak = max(episode.peak, peak)
        self._keep_episode(episode)

    def _keep_episode(self, episode: MemoryEpisode) -> None:
        self.memory_episode_count += 1
        self._tiebreak += 1
        item = (episode.peak, -self._tiebreak, episode)
        if len(self.closed_memory) < MAX_EPISODES_KEPT:
            heapq.heappush(self.closed_memory, item)  # type: ignore[misc]
        elif item[:2] > self.closed_memory[0][:2]:
            heapq.heapreplace(self.closed_memory, item)  # type: ignore[misc]

    # -- output -------------------------------------------------------------

    def report(self) -> Report:
        """Close what is still open (unfinished blocks, ongoing memory episodes) and return the report."""
        while self.pending:
            (proc_key, _), episode = self.pending.popitem(last=False)
            self._record(self.processes[proc_key], episode, finished=False)
        for memory_episode in self.open_memory.values():
            self._keep_episode(memory_episode)
        self.open_memory.clear()
        sites = sorted(self.sites.values(), key=lambda s: (-s.total, -s.count, s.key))
        episodes = [e for _, _, e in sorted(self.closed_memory, key=lambda item: item[:2], reverse=True)]
        procs = list(self.processes.values())
        first = min((p.first for p in procs), default=None)
        last = max((p.last for p in procs), default=None)
        return Report(sites=sites, processes=procs, memory_episodes=episodes,
                      memory_episode_count=self.memory_episode_count, blocks=self.blocks, memory=self.memory,
                      thresholds=dict(self.thresholds), first=first, last=last, events=self.events,
                      block_count=self.block_count, sites_folded=self.sites_folded,
                      processes_folded=self.processes_folded)
