"""Prometheus exporter for monitor_agent (entry point ``monitor_agent.plugins: prometheus``).

Installing this distribution is all it takes: ``monitor_agent.install()`` calls
:func:`setup`, which serves ``/metrics`` on ``MONITOR_AGENT_PROMETHEUS_ADDR``
(default ``127.0.0.1:9464``). ``prometheus_client`` is imported by :func:`setup`
(in the hub thread, at install), never when this module is imported.
"""
from __future__ import annotations

from typing import Any

__all__ = ["get_exporter", "setup"]


def setup(agent: Any) -> None:
    """Start the exporter for *agent* (called by ``install()``).

    Raises:
        monitor_agent.ConfigError: A ``MONITOR_AGENT_PROMETHEUS_*`` variable is bad.
    """
    from ._exporter import setup as _setup

    _setup(agent)


def get_exporter() -> Any:
    """The running :class:`~monitor_agent_prometheus._exporter.Exporter`, or ``None``."""
    import sys

    module = sys.modules.get(f"{__name__}._exporter")
    return None if module is None else module.get_exporter()
