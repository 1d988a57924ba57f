"""Transports move event envelopes to where operators look.

Built in: ``log`` (stdlib logging) and ``jsonl:`` (a file). Brokers come as
plugins registered under the entry-point group ``monitor_agent.transports``
(name = URL scheme, object = factory ``(url, **options) -> BaseEventTransport``).
"""
from __future__ import annotations

from .base import BaseEventTransport, TransportUnavailable
from .publisher import Publisher

__all__ = ["BaseEventTransport", "Publisher", "TransportUnavailable"]
