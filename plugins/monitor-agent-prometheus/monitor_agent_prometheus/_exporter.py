"""The exporter: registry, subscriber, server and their life cycle across forks.

Life cycle, mirroring the agent's own threads:

* ``setup(agent)`` (in ``install()``, hub thread): read settings (bad ones raise
  ``ConfigError``), build the registry, subscribe to events, render once (so
  nothing is imported later in the server thread), and schedule the bind for
  the hub's first loop iteration. A process that never runs its hub (a
  gunicorn master) serves nothing.
* bind: the first free port of the configured port (or range); when none is
  free, one warning line naming the address and the variable, and the agent
  carries on without the exporter.
* fork: the child closes its copy of the parent's socket, forgets the parent's
  per-site counts, and binds its own port (the next free one in a range).
* ``uninstall()``: the exporter leaves ``gevent.events.subscribers`` and closes
  the port; the server thread ends.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Tuple

import gevent.events as gevent_events
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from monitor_agent import _native

from ._collector import AgentCollector
from ._config import ADDR_VAR, ExporterConfig
from ._server import MetricsServer
from ._sites import BlockedEpisodes

__all__ = ["Exporter", "NativeLockRegistry", "get_exporter", "setup"]

log = logging.getLogger("monitor_agent.prometheus")

_exporter: "Exporter" | None = None
_fork_hook_registered = False


class NativeLockRegistry(CollectorRegistry):
    """A :class:`CollectorRegistry` whose lock is a real thread lock.

    ``prometheus_client.registry`` binds ``threading.Lock`` when imported; after
    ``patch_all`` that is gevent's lock, which must not be used from the
    server's native thread.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._lock = _native.allocate_lock()

    def renew_lock(self) -> None:
        """A fresh lock (in a forked child: another thread may have held the old one)."""
        self._lock = _native.allocate_lock()


class Exporter:
    """One process's ``/metrics`` endpoint for *agent*.

    Attributes:
        config: The settings.
        registry: The exporter's own registry (never prometheus_client's global
            ``REGISTRY``); add your own collectors to it if you like.
        episodes: Per-site blocking episode counts.
        server: The running server, or ``None`` (not started yet, or no free port).
        bind_errors: Times no port could be bound.
        error: The last bind error, as one line.
    """

    def __init__(self, agent: Any, config: ExporterConfig) -> None:
        self.agent = agent
        self.config = config
        self.pid = os.getpid()
        self.episodes = BlockedEpisodes(config.max_sites)
        self.registry = NativeLockRegistry()
        self.registry.register(AgentCollector(agent, self.episodes))
        self.registry.register(ProcessCollector(registry=None))
        self.server: MetricsServer | None = None
        self.bind_errors = 0
        self.error: str | None = None
        self.wanted = False  # the hub ran: this process should be serving

    # -- rendering (server thread) -----------------------------------------

    def render(self, accept: str) -> Tuple[bytes, str]:
        """The exposition for an ``Accept`` header: Prometheus text, or OpenMetrics when asked."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def warm_up(self) -> None:
        """Render both formats once in the hub thread, so the server thread never imports anything."""
        choose_encoder("application/openmetrics-text; version=1.0.0")[0](self.registry)
        self.render("")

    # -- life cycle -----------------------------------------------------------

    def on_hub_running(self) -> None:
        """Bind and serve; runs in the hub thread on its first loop iteration (or after a fork)."""
        if self.pid != os.getpid() or self.agent.stopped or self.server is not None:
            return
        self.wanted = True
        sock, errors = self._bind_first_free()
        if sock is None:
            self.bind_errors += 1
            self.error = "; ".join(errors[-1:])
            log.warning("monitor_agent.prometheus: cannot serve /metrics on %s (%s): %s; the agent keeps "
                        "running without the Prometheus exporter", self.config.addr, ADDR_VAR, self.error)
            return
        self.server = MetricsServer(sock, self.render, stopped=lambda: bool(self.agent.stopped))
        self.server.start()
        log.info("monitor_agent.prometheus: serving /metrics on %s (pid %d)", self.url, self.pid)

    def _bind_first_free(self) -> Tuple[Any, List[str]]:
        errors: List[str] = []
        for port in self.config.ports:
            try:
                return MetricsServer.bind(self.config.family, self.config.sockaddr(port)), errors
            except OSError as exc:
                errors.append(f"port {port}: {exc.strerror or exc}")
        if len(self.config.ports) > 1:
            errors.append(f"no free port in {self.config.ports[0]}-{self.config.ports[-1]}")
        return None, errors

    @property
    def url(self) -> str | None:
        """``http://host:port/metrics`` of the running server."""
        if self.server is None:
            return None
        host, port = self.server.address[:2]
        return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"

    def stop(self) -> None:
        """Unsubscribe, close the port and end the server thread (the agent is being uninstalled).

        Leaving :meth:`subscriber` in ``gevent.events.subscribers`` would keep
        this exporter, its agent, hub and registry alive after ``uninstall()``.
        """
        self.unsubscribe()
        server, self.server = self.server, None
        self.wanted = False
        if server is not None and self.pid == os.getpid():
            server.stop()

    def unsubscribe(self) -> None:
        """Remove :meth:`subscriber` from ``gevent.events.subscribers`` (nothing happens if it is not there)."""
        try:
            gevent_events.subscribers.remove(self.subscriber)
        except ValueError:
            pass

    def subscriber(self, event: Any) -> None:
        """The ``gevent.events`` subscriber (monitor thread): count blocking episodes by site."""
        if self.pid == os.getpid() and not self.agent.stopped:
            self.episodes(event)

    def after_fork_in_child(self) -> None:
        """Forget the parent's socket and counts; serve on this process's own port."""
        if self.server is not None:
            self.server.close_inherited()
            self.server = None
        self.pid = os.getpid()
        self.episodes.reset()
        self.registry.renew_lock()
        self.bind_errors, self.error = 0, None
        if self.wanted:  # the parent was serving; otherwise the pending hub callback binds
            self.on_hub_running()

    def stats(self) -> Dict[str, Any]:
        """The exporter's own figures."""
        server = self.server
        return {"url": self.url, "addr": self.config.addr, "bind_errors": self.bind_errors, "error": self.error,
                "requests": server.requests if server else 0, "errors": server.errors if server else 0,
                "blocked_events_counted": self.episodes.events}


def get_exporter() -> Exporter | None:
    """The exporter of this process, or ``None`` (the plugin did not set one up, or its agent was uninstalled)."""
    return _exporter


def _after_fork_in_child() -> None:
    exporter = _exporter
    if exporter is None or exporter.pid == os.getpid():
        return
    try:
        exporter.after_fork_in_child()
    except Exception:
        log.warning("monitor_agent.prometheus could not restart in the forked child", exc_info=True)


def setup(agent: Any) -> None:
    """Entry point ``monitor_agent.plugins: prometheus``; see the module docstring.

    Raises:
        ConfigError: ``MONITOR_AGENT_PROMETHEUS_ADDR`` or ``…_MAX_SITES`` is bad.
    """
    global _exporter, _fork_hook_registered
    config = ExporterConfig.from_environ()
    previous = _exporter
    if previous is not None:
        previous.stop()  # an earlier agent was uninstalled; this one takes over
    exporter = Exporter(agent, config)
    exporter.warm_up()
    gevent_events.subscribers.append(exporter.subscriber)
    _exporter = exporter
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True
    _stop_with(agent, exporter)
    agent.hub.loop.run_callback(exporter.on_hub_running)


def _stop_with(agent: Any, exporter: Exporter) -> None:
    """Stop *exporter* (closing its port at once) when *agent* stops."""

    def stop() -> None:
        global _exporter
        if _exporter is exporter:
            _exporter = None  # hold nothing of the stopped agent
        try:
            exporter.stop()
        except Exception:
            log.warning("monitor_agent.prometheus did not stop cleanly", exc_info=True)

    agent.on_stop(stop)
