"""The events the agent publishes.

They are gevent's own event classes (or subclasses of them), so existing
``zope.event`` / ``gevent.events.subscribers`` code receives them unchanged,
plus :class:`EventLoopUnblocked`, which gevent does not have. Every event is
emitted in the agent's monitor thread: a subscriber must not use the gevent API
(it would create a second hub in that thread) and should return quickly.

Each event also knows its wire form: :attr:`event_name` (gemstone-compatible) and
:meth:`wire_data`, the ``data`` object of the envelope.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Sequence

import gevent.events as gevent_events
from zope.interface import Attribute, implementer

from ._frames import FrameInfo, format_stack

__all__ = [
    "BLOCKED",
    "MEMORY_EXCEEDED",
    "MEMORY_UNDER",
    "UNBLOCKED",
    "EventLoopBlocked",
    "EventLoopUnblocked",
    "IEventLoopUnblocked",
    "MemoryUsageThresholdExceeded",
    "MemoryUsageUnderThreshold",
]

BLOCKED = "gevent.event_loop_blocked"
UNBLOCKED = "gevent.event_loop_unblocked"
MEMORY_EXCEEDED = "gevent.memory_threshold_exceeded"
MEMORY_UNDER = "gevent.memory_under_threshold"


class Culprit:
    """Who was running on the hub thread when the loop blocked.

    Attributes:
        kind: ``greenlet`` (a spawned greenlet), ``main`` (the hub thread's main
            greenlet), ``callback`` (a hub callback: timer, ``run_callback``,
            ``rawlink``), ``loop`` (the hub was inside the event loop with no
            Python code running: the process was not scheduled, e.g. CPU
            starvation or SIGSTOP, or a C-level watcher ran) or ``unknown``
            (a block seen only after it ended, with no stack).
        greenlet: The greenlet object, when it could be identified, else ``None``.
        name: ``Greenlet.name`` for gevent greenlets, else a short description.
        spawned_at: Where a gevent ``Greenlet`` was spawned (gevent's
            ``spawning_stack``, when spawn-tree tracking is on), innermost last.
    """

    __slots__ = ("greenlet", "kind", "name", "spawned_at")

    def __init__(self, kind: str, greenlet: Any = None, name: str | None = None,
                 spawned_at: List[FrameInfo] | None = None) -> None:
        self.kind = kind
        self.greenlet = greenlet
        self.name = name
        self.spawned_at = spawned_at

    def describe(self) -> str:
        """A short label such as ``greenlet 'fetcher-3'`` or ``hub callback``."""
        if self.kind == "callback":
            return "a hub callback"
        if self.kind == "main":
            return "the main greenlet"
        if self.kind == "loop":
            return "the event loop itself (no Python code was running)"
        if self.kind == "unknown":
            return self.name or "unknown code"
        return f"greenlet {self.name!r}" if self.name else f"a {self.kind} greenlet"

    def __repr__(self) -> str:
        return f"<Culprit {self.describe()}>"


class _BlockingEvent(gevent_events.EventLoopBlocked):  # type: ignore[misc]
    """Fields shared by the blocked and unblocked events."""

    event_name: ClassVar[str]

    def __init__(self, greenlet: Any, blocking_time: float, info: List[str], *, hub: Any = None,
                 threshold: float, episode: int, culprit: Culprit, stack: List[FrameInfo],
                 started_at: float, detected_by: str, suppressed_before: int = 0,
                 held_gil: bool = False) -> None:
        super().__init__(greenlet, blocking_time, info, hub=hub)
        self.threshold = threshold
        self.episode = episode
        self.culprit = culprit
        self.stack = stack
        self.started_at = started_at
        self.detected_by = detected_by
        self.suppressed_before = suppressed_before
        self.held_gil = held_gil

    def wire_data(self) -> Dict[str, Any]:
        """The envelope ``data`` for this event."""
        data: Dict[str, Any] = {
            "blocking_time": round(self.blocking_time, 6),
            "threshold": self.threshold,
            "episode": self.episode,
            "started_at": self.started_at,
            "culprit": self.culprit.kind,
            "greenlet": self.culprit.name,
            "detected_by": self.detected_by,
            "held_gil": self.held_gil,
            "stack": [dict(f) for f in self.stack],
        }
        if self.culprit.spawned_at:
            data["spawned_at"] = [dict(f) for f in self.culprit.spawned_at]
        if self.suppressed_before:
            data["suppressed_before"] = self.suppressed_before
        return data


class EventLoopBlocked(_BlockingEvent):
    """The event loop has been blocked for longer than the threshold.

    Emitted once per blocking episode, in the monitor thread, while the loop is
    still blocked (or, for a C call that held the GIL, as soon as it returned).

    Attributes:
        greenlet: The greenlet that was running (``None`` if it could not be
            identified, e.g. a hub callback or a raw greenlet).
        blocking_time: Seconds the loop had been blocked when this was emitted.
        info: Human-readable lines: a headline and the culprit stack.
        hub: The hub being monitored.
        threshold: The configured threshold T, in seconds.
        episode: Number of this episode in the process; the matching
            :class:`EventLoopUnblocked` carries the same number.
        culprit: A :class:`Culprit` describing what was running.
        stack: The hub thread's stack when detected, outermost first, as dicts
            with ``file``, ``line``, ``function``, ``code`` and ``app`` (true for
            application code, false for the standard library and installed packages).
        started_at: Epoch seconds when the block began (estimated to within half a heartbeat).
        detected_by: ``watchdog`` (seen while blocked) or ``heartbeat`` (seen
            afterwards). On :class:`EventLoopUnblocked` it is ``agent stopped``
            when the agent was uninstalled (or the process exited) during the
            block: the duration then runs up to that moment.
        suppressed_before: Reports of this blocking site suppressed by the rate
            limit since its previous report.
        held_gil: True when the watchdog itself was starved: a C call held the
            GIL (or the whole process was not scheduled), so the block was
            measured when it ended; the stack then comes from faulthandler's
            dump, when ``MONITOR_AGENT_GIL_STACKS`` is on.
    """

    event_name = BLOCKED


class IEventLoopUnblocked(gevent_events.IEventLoopBlocked):  # type: ignore[misc]
    """The event loop runs again after a reported block. Emitted in the monitor thread."""

    blocking_time = Attribute("The measured total duration of the block, in seconds.")
    profile = Attribute("Where the time went: frames sampled during the block, most frequent first.")


@implementer(IEventLoopUnblocked)
class EventLoopUnblocked(_BlockingEvent):
    """The event loop is running again after an :class:`EventLoopBlocked`.

    Emitted once per episode, in the monitor thread, as soon as the loop's
    heartbeat ticks again. Same fields as :class:`EventLoopBlocked`, except:

    Attributes:
        blocking_time: The measured total duration of the block, in seconds.
        profile: A list of ``{"file", "line", "function", "code", "app",
            "seconds", "share"}`` dicts: the innermost application frame of each
            stack sample taken during the block, weighted by the time each
            sample stands for, most time first.
        samples: How many stack samples were taken.
    """

    event_name = UNBLOCKED

    def __init__(self, greenlet: Any, blocking_time: float, info: List[str], *,
                 profile: List[Dict[str, Any]], samples: int, **kwargs: Any) -> None:
        super().__init__(greenlet, blocking_time, info, **kwargs)
        self.profile = profile
        self.samples = samples

    def wire_data(self) -> Dict[str, Any]:
        data = super().wire_data()
        data["profile"] = self.profile
        data["samples"] = self.samples
        return data


def _memory_info_dict(memory_info: Any) -> Dict[str, int]:
    asdict = getattr(memory_info, "_asdict", None)
    return {k: int(v) for k, v in asdict().items()} if asdict else {}


class MemoryUsageThresholdExceeded(gevent_events.MemoryUsageThresholdExceeded):  # type: ignore[misc]
    """Memory usage crossed the threshold, or set a new peak above it.

    Emitted in the monitor thread: once when usage first exceeds
    ``max_allowed``, then again only for each new peak (by at least 1 % of the
    threshold) until usage falls back under the low-water mark.

    Attributes:
        mem_usage: Bytes in use (RSS, or USS when ``MONITOR_AGENT_MEMORY_MEASURE=uss``).
        max_allowed: The threshold, in bytes.
        memory_info: psutil's named tuple the figure came from.
    """

    event_name: ClassVar[str] = MEMORY_EXCEEDED

    def wire_data(self) -> Dict[str, Any]:
        """The envelope ``data`` for this event."""
        return {"mem_usage": int(self.mem_usage), "max_allowed": int(self.max_allowed),
                "memory_info": _memory_info_dict(self.memory_info)}


class MemoryUsageUnderThreshold(gevent_events.MemoryUsageUnderThreshold):  # type: ignore[misc]
    """Memory usage fell below the low-water mark after exceeding the threshold.

    Emitted once per episode, in the monitor thread.

    Attributes:
        mem_usage: Bytes in use now.
        max_allowed: The threshold, in bytes.
        memory_info: psutil's named tuple the figure came from.
        max_memory_usage: The highest usage seen during the episode.
    """

    event_name: ClassVar[str] = MEMORY_UNDER

    def wire_data(self) -> Dict[str, Any]:
        """The envelope ``data`` for this event."""
        return {"mem_usage": int(self.mem_usage), "max_allowed": int(self.max_allowed),
                "max_memory_usage": int(self.max_memory_usage),
                "memory_info": _memory_info_dict(self.memory_info)}


def blocked_info(headline: str, stack: Sequence[FrameInfo]) -> List[str]:
    """gevent-style ``info`` lines: a headline, then the stack as a traceback."""
    return [headline, *format_stack(stack)]
