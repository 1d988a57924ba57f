"""The agent: ``install()``, ``uninstall()`` and the object that ties the parts together.

::

    app greenlets ── hub loop ── heartbeat timer (blocking detector)
    monitor threads (native): watchdog + periodic functions (memory, plugins)
          │ Agent.emit(event)
          ├─ gevent.events.subscribers (zope.event), each isolated
          └─ envelope ─► Publisher queue per transport ─► publisher thread ─► log / jsonl / brokers

One agent per process. It monitors the hub of the thread that called
``install()``; it survives forks (the child gets fresh threads, queues and
connections) and is flushed at interpreter exit.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any, Callable, Dict, List

import gevent
import gevent.events as gevent_events
from gevent._hub_local import get_hub_if_exists

from . import _native, wire
from ._entrypoints import group_has_entries
from ._logonce import LogOnce
from ._redact import redact_url
from .errors import ConfigError
from .memory import MemoryMonitor
from .monitor import MonitorThread
from .plugins import PluginRegistry
from .settings import Settings
from .transports.base import BaseEventTransport
from .transports.publisher import Publisher

__all__ = ["Agent", "get_agent", "install", "uninstall"]

log = logging.getLogger("monitor_agent")

_install_lock = _native.allocate_lock()
_agent: "Agent" | None = None
_hooks_registered = False


class Agent:
    """A running agent. Made by :func:`install`; do not construct directly.

    Attributes:
        settings: The effective :class:`~monitor_agent.settings.Settings`.
        hub: The monitored hub.
        monitor: The hub-attached :class:`~monitor_agent.monitor.MonitorThread`
            (also ``hub.periodic_monitoring_thread``).
        transports: The transports events are published to.
        memory: The memory monitor, when a threshold is set.
        detector: The blocking detector, unless detection is off.
        plugins: The entry points found, with their states.
    """

    def __init__(self, settings: Settings, hub: Any, transports: List[BaseEventTransport],
                 plugins: PluginRegistry) -> None:
        self.settings = settings
        self.hub = hub
        self.plugins = plugins
        self.pid = os.getpid()
        self.installed_at = _native.monotonic()
        self.transports = transports
        self._publishers = [Publisher(t, settings.queue_size) for t in transports]
        for transport in transports:
            transport.set_hub(hub)
        self._faults = LogOnce(log)
        self.events_emitted = 0
        self.events_by_name: Dict[str, int] = {}
        self.subscriber_errors = 0
        self.dispatch_errors = 0
        self.started = False  # threads running (set on the hub's first loop iteration)
        self.stopped = False
        self._stop_callbacks: List[Callable[[], Any]] = []

        self.detector: Any = None
        if settings.blocking_detection != "off":
            from .blocking import BlockingDetector

            self.detector = BlockingDetector(hub, settings, emit=self.emit)
        self.monitor = MonitorThread(hub, watchdog=self.detector)
        if self.detector is not None:
            self.monitor.on_ignore(self.detector.ignore_current_greenlet)

        self.memory: MemoryMonitor | None = None
        if settings.max_memory_usage:
            self.memory = MemoryMonitor(settings.max_memory_usage, low_water=settings.memory_low_water,
                                        measure=settings.memory_measure, emit=self.emit)

    # -- lifecycle ----------------------------------------------------------

    def _start(self) -> None:
        """Attach to the hub (at install); threads and heartbeat wait for the hub's first loop iteration."""
        previous = self.hub.periodic_monitoring_thread
        if previous is not None and previous is not self.monitor:
            # gevent's own monitor (GEVENT_MONITOR_THREAD_ENABLE=1): one is enough.
            log.info("replacing gevent's periodic monitoring thread %r", previous)
            previous.kill()
        self.hub.periodic_monitoring_thread = self.monitor
        if self.memory is not None:
            self.monitor.add_monitoring_function(self.memory, self.settings.memory_monitor_period)
        self._announce_monitor()
        # Like gevent's own monitor, the threads start when the hub first runs:
        # a process that never runs its hub (a gunicorn master) stays quiet.
        self.hub.loop.run_callback(self._on_hub_running)
        self._register_shutdown_pause()

    def _announce_monitor(self) -> None:
        """Notify PeriodicMonitorThreadStartedEvent, as gevent does when it starts its own monitor.

        It goes through gevent's ``notify_and_call_entry_points`` whenever a
        gevent plugin is installed in its entry-point group; without one, that
        function would only notify subscribers, so ``_notify`` does it without
        importing ``importlib.metadata`` (30 ms of start-up).
        """
        event = gevent_events.PeriodicMonitorThreadStartedEvent(self.monitor)
        try:
            if group_has_entries(event.ENTRY_POINT_NAME):
                gevent_events.notify_and_call_entry_points(event)
            else:
                self._notify(event)
        except Exception:  # a gevent plugin's fault is its own
            log.warning("a subscriber or gevent plugin failed on PeriodicMonitorThreadStartedEvent", exc_info=True)

    def _on_hub_running(self) -> None:
        """Start threads and the heartbeat; runs in the hub thread on its first loop iteration."""
        if self.stopped or self.pid != os.getpid() or self.started:
            return
        self.started = True
        for publisher in self._publishers:
            publisher.start()
        if self.detector is not None:
            self.detector.start()
        self.monitor.start()

    def _register_shutdown_pause(self) -> None:
        # At interpreter shutdown the loop stops running on purpose (joining
        # threads, atexit handlers); that is not a block worth reporting.
        register = getattr(threading, "_register_atexit", None)
        if register is None or self.detector is None:
            return
        try:
            register(self.detector.pause)
        except RuntimeError:  # shutdown already under way
            pass

    def on_stop(self, callback: Callable[[], Any]) -> None:
        """Call *callback()* when this agent stops (``uninstall()`` or exit), before transports are flushed.

        For plugins that hold resources of their own (a listening port, a
        thread). Callbacks run in the order they were added; one that raises is
        logged and the others still run.
        """
        self._stop_callbacks.append(callback)

    def _stop(self, timeout: float) -> bool:
        """Stop threads, detach from the hub, flush transports within *timeout*."""
        self.stopped = True
        deadline = _native.monotonic() + timeout
        for callback in self._stop_callbacks:
            try:
                callback()
            except Exception:  # a plugin's fault must not stop the shutdown
                log.warning("stop callback %r raised", callback, exc_info=True)
        self.monitor.kill()
        if self.detector is not None:
            self.detector.stop()
        if getattr(self.hub, "periodic_monitoring_thread", None) is self.monitor:
            self.hub.periodic_monitoring_thread = None
        delivered = True
        for publisher in self._publishers:
            delivered = publisher.close(max(0.0, deadline - _native.monotonic())) and delivered
        self.monitor.join(max(0.0, min(0.5, deadline - _native.monotonic())))
        return delivered

    def _after_fork_in_child(self) -> None:
        """Make the child's agent its own: new pid, threads, queues, connections."""
        self.pid = os.getpid()
        wire.reset_after_fork()
        self.events_emitted = 0
        self.events_by_name = {}
        self._faults.clear()
        if self.detector is not None:
            self.detector.after_fork_in_child()  # always: it owns locks taken by the before-fork hook
        if not self.started:
            return  # still waiting for the hub's first loop iteration; the child inherits that callback
        for publisher in self._publishers:
            publisher.after_fork_in_child()
        self.monitor._on_fork()

    # -- events ---------------------------------------------------------------

    def emit(self, event: Any) -> None:
        """Publish *event* to zope.event subscribers and, if it has a wire form, to every transport.

        Safe from any thread, O(1) per transport, never raises.
        """
        try:
            name = getattr(event, "event_name", type(event).__name__)
            self.events_emitted += 1
            self.events_by_name[name] = self.events_by_name.get(name, 0) + 1
            self._notify(event)
            if self._publishers and hasattr(event, "wire_data"):
                envelope = wire.build_envelope(name, event.wire_data(), service=self.settings.service,
                                               max_size=self.settings.max_event_size)
                for publisher in self._publishers:
                    publisher.submit(name, envelope)
        except Exception as exc:  # noqa: BLE001 - never raise into whoever emitted
            self.dispatch_errors += 1
            self._faults.warn(("dispatch", type(exc)), "could not dispatch %r: %s", event, exc, exc_info=True)

    def _notify(self, event: Any) -> None:
        # gevent.events.notify is zope.event.notify, which stops at the first
        # subscriber that raises; call each one ourselves so they are isolated.
        for subscriber in list(gevent_events.subscribers):
            try:
                subscriber(event)
            except Exception as exc:  # noqa: BLE001
                self.subscriber_errors += 1
                self._faults.warn(("subscriber", subscriber), "event subscriber %r raised %s: %s (logged once)",
                                  subscriber, type(exc).__name__, exc, exc_info=True)
            self._check_no_hub_here(subscriber)

    def _check_no_hub_here(self, culprit: Any) -> None:
        """A subscriber that used the gevent API made a hub in our native thread; remove it."""
        if _native.get_ident() == self.monitor.hub_thread_ident:
            return
        stray = get_hub_if_exists()
        if stray is None:
            return
        self._faults.warn(("gevent-api", culprit), "event subscriber %r used the gevent API in the monitor "
                          "thread (events are delivered outside the hub); its hub was destroyed", culprit)
        try:
            stray.destroy(destroy_loop=True)
        except Exception:  # noqa: BLE001
            pass

    # -- reporting -------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """Counters: events emitted, per-transport sent/dropped/failed, blocks, loop lag, memory.

        Per transport, ``submitted == sent + failed + sum(dropped) + queued + in_flight``.
        """
        return {
            "pid": self.pid,
            "service": self.settings.service,
            "uptime": round(_native.monotonic() - self.installed_at, 3),
            "events": {"emitted": self.events_emitted, "by_name": dict(self.events_by_name),
                       "subscriber_errors": self.subscriber_errors, "dispatch_errors": self.dispatch_errors},
            "transports": {p.name: p.stats() for p in self._publishers},
            "monitor": {"running": self.monitor.running, "functions": self.monitor.stats()},
            "blocking": self.detector.stats() if self.detector is not None else None,
            "memory": self.memory.stats() if self.memory is not None else None,
            "plugins": {f"{r.group}:{r.name}": r.state for r in self.plugins.records},
        }

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every transport's queue is empty (default: the flush timeout)."""
        timeout = self.settings.flush_timeout if timeout is None else timeout
        deadline = _native.monotonic() + timeout
        return all([p.flush(max(0.0, deadline - _native.monotonic())) for p in self._publishers])

    def __repr__(self) -> str:
        urls = ",".join(t.describe() for t in self.transports)
        return f"<Agent pid={self.pid} service={self.settings.service!r} transports={urls!r}>"


def build_transports(settings: Settings, registry: PluginRegistry) -> List[BaseEventTransport]:
    """Make the transports the settings name (each factory validates its URL).

    Raises:
        ConfigError: A scheme is unknown, disabled or cannot load, or a URL is bad.
    """
    variable = settings.sources["transports"]
    if variable == "default":
        variable = Settings.transports.env
    built: List[BaseEventTransport] = []
    try:
        for url in settings.transports:
            shown = redact_url(url)
            scheme = url.split(":", 1)[0].lower()
            factory = registry.transport_factory(scheme, variable=variable, url=shown)
            try:
                transport = factory(url)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - any factory failure is a configuration error
                raise ConfigError(variable, shown, f"{exc}") from None
            if not isinstance(transport, BaseEventTransport):
                raise ConfigError(variable, shown, f"the factory for {scheme!r} returned {type(transport).__name__}, "
                                  "not a BaseEventTransport")
            built.append(transport)
    except BaseException:
        for transport in built:
            transport.close()
        raise
    return built


def _register_process_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
    atexit.register(_at_exit)


# The agent whose before-fork hook ran, so the after-fork hooks undo exactly that.
_forking: "Agent" | None = None


def _before_fork() -> None:
    global _forking
    agent = _agent
    if agent is not None and agent.pid == os.getpid() and agent.detector is not None:
        agent.detector.before_fork()
        _forking = agent


def _after_fork_in_parent() -> None:
    global _forking
    agent, _forking = _forking, None
    if agent is not None:
        agent.detector.after_fork_in_parent()


def _after_fork_in_child() -> None:
    global _forking
    _forking = None
    agent = _agent
    if agent is not None and agent.pid != os.getpid():
        try:
            agent._after_fork_in_child()
        except Exception:  # never break the child
            log.warning("monitor_agent could not restart in the forked child", exc_info=True)


def _at_exit() -> None:
    agent = _agent
    if agent is not None and agent.pid == os.getpid():
        uninstall()


def get_agent() -> Agent | None:
    """The installed agent, or None."""
    return _agent


def install(**settings: Any) -> Agent | None:
    """Install the agent in this process (idempotent). Call once at start-up.

    Call it in the thread that runs the hub, before or after
    ``gevent.monkey.patch_all()``. Keyword settings (named as in
    :class:`~monitor_agent.settings.Settings`, e.g. ``max_blocking_time=0.05``)
    override the ``MONITOR_AGENT_*`` environment variables.

    Returns:
        The :class:`Agent` (the same one on every call), or ``None`` when
        ``MONITOR_AGENT_ENABLED`` is false.

    Raises:
        ConfigError: A setting is bad; the message names the variable, the value
            and the accepted form. Nothing is left running.
        TypeError: A keyword names no setting.
    """
    global _agent
    resolved = Settings.load(settings)
    if not resolved.enabled:
        return None
    with _install_lock:
        if _agent is not None:
            if settings:
                log.debug("monitor_agent is already installed; install(%s) ignored", ", ".join(settings))
            return _agent
        registry = PluginRegistry(resolved.disabled_plugins)
        transports = build_transports(resolved, registry)
        agent = Agent(resolved, gevent.get_hub(), transports, registry)
        agent._start()
        _agent = agent
        _register_process_hooks()
    try:
        registry.run_plugins(agent)
    except BaseException:
        uninstall()
        raise
    return agent


def uninstall(timeout: float | None = None) -> bool:
    """Stop the agent: threads, heartbeat, hub attachment; flush transports.

    Args:
        timeout: Seconds to wait for queued events (default: the flush timeout
            setting, 2 s). Events still queued afterwards are counted as dropped.

    Returns:
        Whether every queued event was delivered in time (True if nothing was installed).
    """
    global _agent
    with _install_lock:
        agent, _agent = _agent, None
    if agent is None or agent.pid != os.getpid():
        return True
    try:
        return agent._stop(agent.settings.flush_timeout if timeout is None else timeout)
    except Exception:  # uninstall is called at exit; never raise there
        log.warning("monitor_agent did not stop cleanly", exc_info=True)
        return False
