"""The opt-in ``tracer`` mode: ``greenlet.settrace`` tells exactly which greenlet runs.

It costs every greenlet switch a Python call (~20 % of switch-heavy
throughput, like gevent's monitor), so it is off unless
``MONITOR_AGENT_BLOCKING_DETECTION=tracer``. Detection itself still comes from
the heartbeat; the tracer only names the culprit, including raw greenlets the
spawn index cannot see.

It chains to the trace function that was installed before it. If a later
tracer replaces it without chaining, the heartbeat notices (our function stops
being called across a probe switch), re-installs itself chained to the
newcomer and counts it. On uninstall it removes only itself: if another tracer
sits on top and chains to it, it stays in the chain as a pass-through.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import greenlet

from .._logonce import LogOnce

__all__ = ["SwitchTracer"]

log = logging.getLogger("monitor_agent.blocking")

TraceFunction = Callable[[str, Any], Any]


class SwitchTracer:
    """Records the target of every switch in the hub thread.

    Args:
        on_switch: Called with the greenlet switched to (the culprit finder's setter).
    """

    def __init__(self, on_switch: Callable[[Any], None]) -> None:
        self.on_switch = on_switch
        self.previous: TraceFunction | None = None
        self.active = False
        self.calls = 0
        self.reinstalled = 0
        self._faults = LogOnce(log)
        # One bound-method object, so identity checks against greenlet.gettrace() work.
        self._trace_function: TraceFunction = self._trace

    def install(self) -> None:
        """Install in the calling (hub) thread, chaining to the current tracer."""
        self.previous = greenlet.settrace(self._trace_function)
        self.active = True

    def _trace(self, event: str, args: Any) -> None:
        self.calls += 1
        if self.active and event in ("switch", "throw"):
            self.on_switch(args[1])
        previous = self.previous
        if previous is not None:
            previous(event, args)

    def check(self) -> None:
        """Called on the hub thread by the heartbeat: re-install if replaced without chaining."""
        if not self.active:
            return
        current = greenlet.gettrace()
        if current is self._trace_function:
            return
        before = self.calls
        greenlet.greenlet(lambda: None).switch()  # a probe: does a switch still reach us?
        if self.calls != before:
            return  # the newcomer chains to us
        self.reinstalled += 1
        self._faults.warn("replaced", "greenlet.settrace(%r) replaced the monitor_agent tracer without "
                          "chaining to it; re-installed on top of it (counted in stats)", current)
        self.previous = current
        greenlet.settrace(self._trace_function)

    def uninstall(self) -> None:
        """Remove only this tracer from the hub thread's chain."""
        if not self.active:
            return
        self.active = False
        if greenlet.gettrace() is self._trace_function:
            greenlet.settrace(self.previous)
        # else: someone chained on top of us; we stay in their chain as a pass-through.
