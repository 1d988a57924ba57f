"""The hub-attached monitor thread.

:class:`MonitorThread` implements gevent's ``IPeriodicMonitorThread`` and is set
as ``hub.periodic_monitoring_thread``, so gevent starts no monitor of its own
and gevent's callers (the threadpool's ``ignore_current_greenlet_blocking()``)
talk to it. It is made of native threads only:

* the *periodic* thread runs the registered monitoring functions (memory,
  plugins) on a drift-free schedule, each isolated: one that raises is logged
  once with its name and counted, and the others keep running;
* the *watchdog* thread, when blocking detection is on, runs the blocking
  detector on its own tight schedule, so a slow plugin function cannot delay
  the detection of a blocked loop.

Neither uses the gevent API. Both stop when the hub is destroyed or
garbage-collected, or on :meth:`kill`, and both are started again in a forked
child (``_on_fork``, which ``gevent.hub.reinit`` calls, and the agent's
``os.register_at_fork`` hook).
"""
from __future__ import annotations

import logging
import math
import os
import weakref
from typing import Any, Callable, Dict, List, Protocol

from gevent.events import IPeriodicMonitorThread
from zope.interface import implementer

from . import _native
from ._logonce import LogOnce

__all__ = ["MonitorThread", "MonitoringFunction", "Watchdog"]

log = logging.getLogger("monitor_agent.monitor")

MonitoringFunction = Callable[[Any], Any]


class Watchdog(Protocol):
    """What the watchdog thread drives (the blocking detector implements it)."""

    def next_wakeup(self, now: float) -> float:
        """The monotonic time at which :meth:`check` should run next."""

    def check(self, now: float) -> None:
        """Look at the hub; called from the watchdog thread. Must not raise."""


def _name_of(function: MonitoringFunction) -> str:
    module = getattr(function, "__module__", None) or ""
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{qualname}" if module else qualname


class _Entry:
    __slots__ = ("errors", "function", "max_duration", "name", "next_due", "period", "runs")

    def __init__(self, function: MonitoringFunction, period: float, now: float) -> None:
        self.function = function
        self.period = period
        self.next_due = now
        self.name = _name_of(function)
        self.runs = 0
        self.errors = 0
        self.max_duration = 0.0


@implementer(IPeriodicMonitorThread)
class MonitorThread:
    """gevent's ``IPeriodicMonitorThread``, built on native threads.

    Args:
        hub: The hub to monitor; held weakly.
        watchdog: The blocking detector to drive in its own thread, if any.
    """

    # The longest the periodic thread sleeps with nothing scheduled.
    inactive_sleep_time = 1.0

    def __init__(self, hub: Any, watchdog: Watchdog | None = None) -> None:
        self._hub_ref = weakref.ref(hub, self._on_hub_gc)
        self.hub_thread_ident: int = hub.thread_ident
        self.watchdog = watchdog
        self._entries: List[_Entry] = []
        self._errors = LogOnce(log)
        self._ignore_callbacks: List[Callable[[bool], None]] = []
        self.should_run = False
        self.pid = os.getpid()
        self.monitor_thread_ident: int | None = None
        self.watchdog_thread_ident: int | None = None
        self._new_thread_state()

    def _new_thread_state(self) -> None:
        self._wakeup = _native.Wakeup()
        self._watchdog_wakeup = _native.Wakeup()
        self._periodic_done = _native.allocate_lock()
        self._watchdog_done = _native.allocate_lock()

    @property
    def hub(self) -> Any:
        """The monitored hub, or None once it is gone."""
        return self._hub_ref()

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start the native threads (idempotent)."""
        if self.should_run:
            return
        self.should_run = True
        self._periodic_done.acquire()
        self.monitor_thread_ident = _native.spawn("ma:periodic", self._run_periodic)
        if self.watchdog is not None:
            self._watchdog_done.acquire()
            self.watchdog_thread_ident = _native.spawn("ma:watchdog", self._run_watchdog)

    def kill(self) -> None:
        """Stop the threads (gevent's name; ``hub.destroy()`` calls it). Returns at once."""
        self.should_run = False
        self._wakeup.set()
        self._watchdog_wakeup.set()

    def join(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds for the threads to finish after :meth:`kill`."""
        deadline = _native.monotonic() + timeout
        ok = True
        for done in (self._periodic_done, self._watchdog_done):
            if done.locked():
                ok = bool(done.acquire(True, max(0.0, deadline - _native.monotonic()))) and ok
                if ok:
                    done.release()
        return ok

    def _on_hub_gc(self, _ref: Any) -> None:
        self.kill()

    def _on_fork(self) -> None:
        """Restart in a forked child (called by ``gevent.hub.reinit`` and the agent's fork hook)."""
        pid = os.getpid()
        if pid == self.pid:
            return
        self.pid = pid
        was_running = self.should_run
        self.should_run = False
        self._new_thread_state()
        if was_running and self.hub is not None:
            self.start()

    @property
    def running(self) -> bool:
        """Whether the periodic thread is alive in this process."""
        return self.should_run and self._periodic_done.locked() and self.pid == os.getpid()

    # -- IPeriodicMonitorThread ---------------------------------------------

    def add_monitoring_function(self, function: MonitoringFunction, period: float | None) -> None:
        """Call ``function(hub)`` about every *period* seconds in the monitor thread.

        Args:
            function: Called with the hub; must not use the gevent API.
            period: Seconds; ``None`` removes the function; an existing function's
                period is updated.

        Raises:
            ValueError: *function* is not callable, or *period* is not a positive number.
        """
        if not callable(function):
            raise ValueError("function must be callable")
        if period is None:
            self._entries = [e for e in self._entries if e.function != function]
            return
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not math.isfinite(period) \
                or period <= 0:
            raise ValueError("Period must be positive.")
        now = _native.monotonic()
        entries = list(self._entries)
        for entry in entries:
            if entry.function == function:
                entry.period = float(period)
                entry.next_due = min(entry.next_due, now + period)
                break
        else:
            entries.append(_Entry(function, float(period), now))
        self._entries = entries
        self._wakeup.set()

    def monitoring_functions(self) -> List[Any]:
        """``(function, period)`` pairs currently scheduled (gevent has this method too)."""
        return [(e.function, e.period) for e in self._entries]

    def ignore_current_greenlet_blocking(self) -> None:
        """Do not report blocks by the calling greenlet until :meth:`monitor_current_greenlet_blocking`.

        gevent's threadpool calls this in its worker threads; only calls made
        from the monitored hub's thread have an effect.
        """
        self._notify_ignore(True)

    def monitor_current_greenlet_blocking(self) -> None:
        """Undo :meth:`ignore_current_greenlet_blocking` for the calling greenlet."""
        self._notify_ignore(False)

    def on_ignore(self, callback: Callable[[bool], None]) -> None:
        """Register who implements the two methods above (the blocking detector)."""
        self._ignore_callbacks.append(callback)

    def _notify_ignore(self, ignore: bool) -> None:
        if _native.get_ident() != self.hub_thread_ident:
            return
        for callback in self._ignore_callbacks:
            callback(ignore)

    # -- the threads ----------------------------------------------------------

    def _run_periodic(self) -> None:
        try:
            while self.should_run:
                hub = self.hub
                if hub is None:
                    self.kill()
                    break
                now = _native.monotonic()
                for entry in self._entries:
                    if entry.next_due <= now and self.should_run:
                        self._run_entry(entry, hub, now)
                del hub  # do not keep the hub alive while sleeping
                wake = min((e.next_due for e in self._entries), default=now + self.inactive_sleep_time)
                self._wakeup.wait(min(wake - _native.monotonic(), self.inactive_sleep_time))
        except BaseException:  # noqa: BLE001 - only interpreter shutdown gets here
            pass
        finally:
            self._periodic_done.release()

    def _run_entry(self, entry: _Entry, hub: Any, now: float) -> None:
        # Keep the schedule anchored (no drift); skip runs that are already
        # past rather than bunching them up after a slow one.
        entry.next_due += entry.period
        if entry.next_due <= now:
            entry.next_due = now + entry.period
        started = _native.monotonic()
        try:
            entry.function(hub)
        except Exception as exc:  # noqa: BLE001 - one failing function must not end the loop
            entry.errors += 1
            self._errors.warn(entry.function, "monitoring function %s raised %s: %s (logged once; it keeps "
                              "being called)", entry.name, type(exc).__name__, exc, exc_info=True)
        finally:
            entry.runs += 1
            entry.max_duration = max(entry.max_duration, _native.monotonic() - started)

    def _run_watchdog(self) -> None:
        watchdog = self.watchdog
        assert watchdog is not None
        try:
            while self.should_run:
                if self.hub is None:
                    self.kill()
                    break
                try:
                    watchdog.check(_native.monotonic())
                    delay = watchdog.next_wakeup(_native.monotonic()) - _native.monotonic()
                except Exception as exc:  # noqa: BLE001 - the detector must not take the thread down
                    self._errors.warn("watchdog", "blocking detector raised %s: %s", type(exc).__name__, exc,
                                      exc_info=True)
                    delay = 0.1
                self._watchdog_wakeup.wait(delay)
        except BaseException:  # noqa: BLE001 - only interpreter shutdown gets here
            pass
        finally:
            self._watchdog_done.release()

    # -- reporting ------------------------------------------------------------

    def stats(self) -> Dict[str, Dict[str, Any]]:
        """Per monitoring function: runs, errors, slowest run in seconds."""
        return {e.name: {"period": e.period, "runs": e.runs, "errors": e.errors,
                         "max_duration": round(e.max_duration, 6)} for e in self._entries}

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} at {hex(id(self))} pid={self.pid} running={self.should_run} "
                f"functions={len(self._entries)}>")
