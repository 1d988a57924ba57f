"""monitor_agent: a runtime monitoring agent for gevent applications.

Call :func:`install` once at start-up (or run ``monitor-agent run -- your-program``).
The agent reports when the event loop is blocked and when memory crosses a
threshold, to logs, a JSONL file, brokers and Prometheus, without slowing the
application down.
"""
from __future__ import annotations

from ._version import __version__
from .agent import Agent, get_agent, install, uninstall
from .blocking.ignore import ignore_blocking
from .errors import ConfigError
from .events import EventLoopBlocked, EventLoopUnblocked, MemoryUsageThresholdExceeded, MemoryUsageUnderThreshold
from .settings import Settings
from .transports.base import BaseEventTransport, TransportUnavailable

__all__ = [
    "Agent",
    "BaseEventTransport",
    "ConfigError",
    "EventLoopBlocked",
    "EventLoopUnblocked",
    "MemoryUsageThresholdExceeded",
    "MemoryUsageUnderThreshold",
    "Settings",
    "TransportUnavailable",
    "__version__",
    "get_agent",
    "ignore_blocking",
    "install",
    "uninstall",
]
