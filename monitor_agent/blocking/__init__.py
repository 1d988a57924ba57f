"""Blocked-loop detection: heartbeat + watchdog, culprit identity, quiet reporting."""
from __future__ import annotations

from .detector import BlockingDetector
from .histogram import LagHistogram
from .ignore import ignore_blocking

__all__ = ["BlockingDetector", "LagHistogram", "ignore_blocking"]
