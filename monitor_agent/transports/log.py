"""The ``log`` transport: one readable line per event through stdlib logging.

Lines go to the logger ``monitor_agent.events`` (or the one named in
``log:NAME``): blocked and memory-exceeded events at WARNING, the others at
INFO, and the full stack at DEBUG. When logging is not configured at all, the
lines are written to stderr instead of being lost.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Mapping

from .._frames import format_stack
from .._summary import summarize
from .base import BaseEventTransport

__all__ = ["LogTransport"]

_WARNING_EVENTS = frozenset({"gevent.event_loop_blocked", "gevent.memory_threshold_exceeded"})


class LogTransport(BaseEventTransport):
    """Writes each event as one log line (URL ``log`` or ``log:logger.name``)."""

    scheme = "log"

    def __init__(self, url: str = "log") -> None:
        super().__init__(url)
        _, _, name = url.partition(":")
        name = name.strip("/")
        if name and not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"expected log or log:logger.name, got {url!r}")
        self.logger = logging.getLogger(name or "monitor_agent.events")

    def emit_event(self, event_name: str, event_body: Mapping[str, Any]) -> None:
        level = logging.WARNING if event_name in _WARNING_EVENTS else logging.INFO
        line = summarize(event_body, with_source=False)
        stack = (event_body.get("data") or {}).get("stack") or []
        if self.logger.hasHandlers():
            self.logger.log(level, "%s", line)
            if stack and self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug("stack of episode %s:\n%s", event_body["data"].get("episode"),
                                  "\n".join(format_stack(stack)))
            return
        stamp = time.strftime("%H:%M:%S")
        sys.stderr.write(f"{stamp} {logging.getLevelName(level)} {self.logger.name}: {line}\n")
        sys.stderr.flush()


def factory(url: str, **options: Any) -> LogTransport:
    """Entry point for the ``log`` scheme."""
    return LogTransport(url, **options)
