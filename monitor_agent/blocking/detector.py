"""The blocking detector: heartbeat on the hub, watchdog in a native thread.

One episode, two events. The watchdog sleeps until the heartbeat would be
``T`` stale; if it is, the loop is blocked and it emits
:class:`~monitor_agent.events.EventLoopBlocked` once, with the stack and
culprit captured while the block is happening. It then samples the hub
thread's stack every ``sample_interval`` until the heartbeat ticks again, and
emits :class:`~monitor_agent.events.EventLoopUnblocked` with the measured
duration and the aggregated samples. Nothing is emitted in between.

A block the watchdog could not see while it happened (a C call holding the
GIL starves every Python thread, the watchdog included) is still measured: the
heartbeat records the gap, and the watchdog reports it, late, with the stack
faulthandler dumped during it when there was one.

Durations: the block began after the last tick and before the next one was
due, so its start is estimated at ``last tick + interval/2`` (±interval/2) and
it ends at the first tick after it.
"""
from __future__ import annotations

import linecache
import logging
import sys
import time
import weakref
from types import FrameType
from typing import Any, Callable, Dict, List, Tuple

from .. import _native
from .._frames import FrameInfo, culprit_frame, extract_stack, fingerprint, frame_label, is_app_file, trim_stack
from ..events import Culprit, EventLoopBlocked, EventLoopUnblocked, blocked_info
from .culprit import CulpritFinder
from .faultdump import GilWatch
from .heartbeat import Heartbeat
from .ignore import frame_is_ignored
from .ratelimit import SiteRateLimiter
from .tracer import SwitchTracer

__all__ = ["BlockingDetector"]

log = logging.getLogger("monitor_agent.blocking")

# The watchdog woke this much later than planned: it was starved of the GIL.
_STARVED = 0.015
_PROFILE_TOP = 10

SampleKey = Tuple[str, int, str]


class _Episode:
    __slots__ = (
        "culprit",
        "held_gil",
        "last_sample",
        "last_tick",
        "number",
        "report",
        "samples",
        "site",
        "stack",
        "started",
        "suppressed_before",
        "weights",
    )

    def __init__(self, number: int, last_tick: float, started: float) -> None:
        self.number = number
        self.last_tick = last_tick
        self.started = started
        self.culprit = Culprit("unknown")
        self.stack: List[FrameInfo] = []
        self.site = ""
        self.report = False
        self.suppressed_before = 0
        self.samples = 0
        # Seconds attributed to each frame: a sample stands for the time since
        # the previous one, so frames that hold the GIL (and delay the next
        # sample) are not under-counted.
        self.weights: Dict[SampleKey, float] = {}
        self.last_sample = started
        self.held_gil = False


# A greenlet running a C function directly (gevent.spawn(time.sleep, 1)) has no Python frame.
NO_PYTHON_FRAME: SampleKey = ("<C code>", 0, "<no Python frame>")


def _sample_key(frame: FrameType | None) -> SampleKey:
    """The innermost application frame of a live stack (or the innermost frame)."""
    innermost = frame
    while frame is not None:
        code = frame.f_code
        if is_app_file(code.co_filename):
            return (code.co_filename, frame.f_lineno or 0, code.co_name)
        frame = frame.f_back
    if innermost is None:
        return NO_PYTHON_FRAME
    code = innermost.f_code
    return (code.co_filename, innermost.f_lineno or 0, code.co_name)


class BlockingDetector:
    """Finds, measures and reports blocks of one hub's event loop.

    Args:
        hub: The hub to watch.
        settings: The agent's settings (threshold, intervals, rate limit, grace, modes).
        emit: Where events go (``Agent.emit``).
    """

    def __init__(self, hub: Any, settings: Any, emit: Callable[[Any], None]) -> None:
        self._hub_ref = weakref.ref(hub)
        self.hub_ident: int = hub.thread_ident
        self.threshold: float = settings.max_blocking_time
        self.interval: float = settings.effective_heartbeat_interval
        self.sample_interval: float = settings.sample_interval
        self.grace_until = _native.monotonic() + settings.startup_grace
        self.greenlet_dump: bool = settings.greenlet_dump
        if self.greenlet_dump:
            # format_run_info imports these lazily; import them here, not in the watchdog thread (fork safety).
            import gevent._greenlet_primitives
            import gevent.local
            import gevent.util  # noqa: F401
        self.mode: str = settings.blocking_detection
        self.emit = emit
        self.heartbeat = Heartbeat(self.interval, self.threshold + self.interval / 2)
        self.finder = CulpritFinder(hub)
        self.limiter = SiteRateLimiter(settings.blocking_rate_limit)
        self.gilwatch: GilWatch | None = GilWatch(max(2 * self.threshold, 0.05)) if settings.gil_stacks else None
        self.tracer: SwitchTracer | None = None
        if self.mode == "tracer":
            self.tracer = SwitchTracer(self._set_current)
            self.heartbeat.on_tick = self.tracer.check
        self.episode: _Episode | None = None
        self.paused = False
        # gevent's ignore_current_greenlet_blocking(): the outermost frames of ignored greenlets.
        self.ignored_greenlets: Dict[int, FrameType] = {}
        self._planned_wake = 0.0
        self._started = False
        self.episodes = 0
        self.reported = 0
        self.ignored = 0
        self.in_grace = 0
        self.late = 0
        self.total_blocked = 0.0
        self.max_blocked = 0.0

    def _set_current(self, g: Any) -> None:
        self.finder.current_from_tracer = g

    # -- lifecycle (hub thread) -------------------------------------------------

    def start(self) -> None:
        """Start the heartbeat and the spawn index; call in the hub thread."""
        hub = self._hub_ref()
        if hub is None or self._started:
            return
        self._started = True
        self.heartbeat.start(hub)
        self.finder.start_tracking()
        if self.tracer is not None:
            self.tracer.install()

    def stop(self) -> None:
        """Stop everything. Hub-thread parts are handed to the hub when called from elsewhere.

        An episode still open (the process is exiting while blocked, or
        uninstall() was called from another thread during a block) is closed
        now, so every reported EventLoopBlocked has its EventLoopUnblocked.
        """
        self.paused = True
        episode = self.episode
        if episode is not None:
            self._close(episode, end=_native.monotonic(), open_at_stop=True)
        if self.gilwatch is not None:
            self.gilwatch.stop()
        if not self._started:
            return
        self._started = False
        self.finder.stop_tracking()
        hub = self._hub_ref()
        if _native.get_ident() == self.hub_ident or hub is None or getattr(hub, "loop", None) is None:
            self._stop_in_hub()
        else:
            hub.loop.run_callback_threadsafe(self._stop_in_hub)

    def _stop_in_hub(self) -> None:
        self.heartbeat.stop()
        if self.tracer is not None:
            self.tracer.uninstall()

    def pause(self) -> None:
        """Stop reporting (interpreter shutdown: the loop no longer runs, and that is fine)."""
        self.paused = True

    def before_fork(self) -> None:
        """Called in the forking thread just before ``fork()``."""
        if self.gilwatch is not None:
            self.gilwatch.before_fork()

    def after_fork_in_parent(self) -> None:
        """Called in the parent just after ``fork()``."""
        if self.gilwatch is not None:
            self.gilwatch.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        """The child starts with no open episode and its own faulthandler file."""
        self.episode = None
        self.heartbeat.restart_counting()
        self.heartbeat.lag.reset()
        if self.gilwatch is not None:
            self.gilwatch.after_fork_in_child()

    def ignore_current_greenlet(self, ignore: bool) -> None:
        """gevent's ``ignore_current_greenlet_blocking`` / ``monitor_…`` for the calling greenlet."""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame.f_back is not None:
            frame = frame.f_back
        if frame is None:
            return
        if ignore:
            self.ignored_greenlets[id(frame)] = frame
        else:
            self.ignored_greenlets.pop(id(frame), None)

    # -- watchdog (monitor thread) ----------------------------------------------

    def next_wakeup(self, now: float) -> float:
        """When the watchdog should look next (monotonic seconds)."""
        if self.episode is not None:
            wake = now + self.sample_interval
        elif not self.heartbeat.ticks or self.paused:
            wake = now + self.threshold
        else:
            # The moment the estimated block would reach T; never a busy spin.
            wake = max(self.heartbeat.last + self.interval / 2 + self.threshold, now + self.sample_interval)
        self._planned_wake = wake
        return wake

    def check(self, now: float) -> None:
        """One watchdog step: open, sample or close an episode; report late gaps."""
        starved = self._planned_wake and now - self._planned_wake > _STARVED
        dump = self.gilwatch.collect() if self.gilwatch is not None else None
        if self.gilwatch is not None:
            self.gilwatch.keepalive(now)
        heartbeat = self.heartbeat
        episode = self.episode
        if episode is not None:
            if heartbeat.last != episode.last_tick:
                self._close(episode)
            else:
                self._sample(episode)
                return
        self._report_late_gaps(dump)
        last = heartbeat.last
        if heartbeat.ticks and not self.paused and now - last - self.interval / 2 >= self.threshold:
            self._open(now, last, bool(starved), dump)

    def _top_frame(self) -> FrameType | None:
        return sys._current_frames().get(self.hub_ident)

    def _open(self, now: float, last: float, starved: bool, dump: Any) -> None:
        self.episodes += 1
        episode = _Episode(self.episodes, last, last + self.interval / 2)
        top = self._top_frame()
        try:
            episode.culprit = self.finder.identify(top)
            episode.stack = extract_stack(top)
            episode.held_gil = starved
            if starved and dump:
                held = self._dumped_stack(dump)
                if held:
                    episode.stack = held
            ignored = frame_is_ignored(top, self.ignored_greenlets)
            self._sample(episode, top)
        finally:
            del top
        episode.site = fingerprint(episode.stack)
        self.episode = episode
        if ignored:
            self.ignored += 1
        elif episode.started < self.grace_until:
            self.in_grace += 1
        else:
            episode.report, episode.suppressed_before = self.limiter.allow(episode.site, now)
        if episode.report:
            self.reported += 1
            self.emit(self._event(EventLoopBlocked, episode, now - episode.started, "watchdog"))

    def _dumped_stack(self, dump: Dict[int, Tuple[bool, List[FrameInfo]]]) -> List[FrameInfo]:
        """From a faulthandler dump: the GIL holder's stack, preferring the hub thread's."""
        entry = dump.get(self.hub_ident)
        frames = entry[1] if entry and entry[1] else next((f for held, f in dump.values() if held and f), [])
        for info in frames:
            info["code"] = linecache.getline(info["file"], info["line"]).strip()
        return trim_stack(frames)

    def _sample(self, episode: _Episode, top: FrameType | None = None) -> None:
        if top is None:
            top = self._top_frame()
        key = _sample_key(top)
        del top
        now = _native.monotonic()
        episode.samples += 1
        episode.weights[key] = episode.weights.get(key, 0.0) + max(0.0, now - episode.last_sample)
        episode.last_sample = now

    def _gap_end(self, last_tick: float) -> float | None:
        for start, end in list(self.heartbeat.gaps):
            if start == last_tick:
                self.heartbeat.gaps.remove((start, end))
                return end
        return None

    def _close(self, episode: _Episode, end: float | None = None, open_at_stop: bool = False) -> None:
        self.episode = None
        if end is None:
            end = self._gap_end(episode.last_tick) or self.heartbeat.last
        duration = max(0.0, end - episode.started)
        self._account(duration)
        if episode.report:
            self.emit(self._event(EventLoopUnblocked, episode, duration,
                                  "agent stopped" if open_at_stop else "watchdog"))

    def _report_late_gaps(self, dump: Any) -> None:
        """Report blocks the heartbeat measured but the watchdog never saw open."""
        gaps = self.heartbeat.gaps
        while gaps:
            try:
                start, end = gaps.popleft()
            except IndexError:
                break
            self.episodes += 1
            self.late += 1
            episode = _Episode(self.episodes, start, start + self.interval / 2)
            episode.held_gil = True
            episode.stack = self._dumped_stack(dump) if dump else []
            if episode.stack:
                episode.culprit = Culprit("unknown", name="a call holding the GIL")
            episode.site = fingerprint(episode.stack) if episode.stack else "unknown"
            duration = max(0.0, end - episode.started)
            self._account(duration)
            if self.paused:
                continue
            if episode.started < self.grace_until:
                self.in_grace += 1
                continue
            episode.report, episode.suppressed_before = self.limiter.allow(episode.site, _native.monotonic())
            if episode.report:
                self.reported += 1
                self.emit(self._event(EventLoopBlocked, episode, duration, "heartbeat"))
                self.emit(self._event(EventLoopUnblocked, episode, duration, "heartbeat"))
            dump = None  # one dump explains at most one gap

    def _account(self, duration: float) -> None:
        self.total_blocked += duration
        if duration > self.max_blocked:
            self.max_blocked = duration

    # -- events ------------------------------------------------------------------

    def _profile(self, episode: _Episode) -> List[Dict[str, Any]]:
        total = sum(episode.weights.values()) or 1.0
        ranked = sorted(episode.weights.items(), key=lambda kv: -kv[1])[:_PROFILE_TOP]
        return [{"file": f, "line": n, "function": fn, "code": linecache.getline(f, n).strip(),
                 "app": is_app_file(f), "seconds": round(w, 6), "share": round(w / total, 4)}
                for (f, n, fn), w in ranked]

    def _event(self, cls: Any, episode: _Episode, blocking_time: float, detected_by: str) -> Any:
        culprit = episode.culprit
        frame = culprit_frame(episode.stack)
        verb = "blocked for" if cls is EventLoopBlocked else "unblocked after"
        headline = (f"monitor_agent: event loop {verb} {blocking_time:.3f}s (threshold {self.threshold:.3f}s) "
                    f"by {culprit.describe()} at {frame_label(frame)} [episode {episode.number}]")
        info = blocked_info(headline, episode.stack)
        if self.greenlet_dump and cls is EventLoopBlocked:
            info.extend(self._greenlet_dump())
        kwargs: Dict[str, Any] = dict(
            hub=self._hub_ref(), threshold=self.threshold, episode=episode.number, culprit=culprit,
            stack=episode.stack, started_at=time.time() - (_native.monotonic() - episode.started),
            detected_by=detected_by, suppressed_before=episode.suppressed_before, held_gil=episode.held_gil)
        if cls is EventLoopUnblocked:
            kwargs.update(profile=self._profile(episode), samples=episode.samples)
        return cls(culprit.greenlet, blocking_time, info, **kwargs)

    @staticmethod
    def _greenlet_dump() -> List[str]:
        from gevent.util import format_run_info  # imported by __init__ already when the dump is on

        try:
            return list(format_run_info(greenlet_stacks=True))
        except Exception as exc:  # noqa: BLE001 - the dump is a nicety
            return [f"(greenlet dump failed: {exc})"]

    # -- reporting ----------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Blocks seen, reported, suppressed, ignored; total and longest block; loop lag."""
        result: Dict[str, Any] = {
            "mode": self.mode,
            "threshold": self.threshold,
            "episodes": self.episodes,
            "reported": self.reported,
            "suppressed": self.limiter.suppressed_total,
            "suppressed_pending": self.limiter.pending(),
            "ignored": self.ignored,
            "in_grace": self.in_grace,
            "late": self.late,
            "blocked_now": self.episode is not None,
            "total_blocked": round(self.total_blocked, 6),
            "max_blocked": round(self.max_blocked, 6),
            "heartbeat": {"interval": self.interval, "ticks": self.heartbeat.ticks},
            "loop_lag": self.heartbeat.lag.snapshot(),
        }
        if self.gilwatch is not None:
            result["gil_dumps"] = self.gilwatch.dumps
        if self.tracer is not None:
            result["tracer"] = {"active": self.tracer.active, "reinstalled": self.tracer.reinstalled}
        return result
