"""Log a recurring fault once, not on every occurrence."""
from __future__ import annotations

import logging
from typing import Any, Hashable, Set

__all__ = ["LogOnce"]


class LogOnce:
    """Remembers which faults were already logged.

    ``warn(key, msg, ...)`` logs the first time *key* is seen and stays quiet
    afterwards; :meth:`forget` re-arms a key (after a recovery, so the next
    outage is reported again).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: Set[Hashable] = set()

    def warn(self, key: Hashable, msg: str, *args: Any, exc_info: Any = None, level: int = logging.WARNING) -> bool:
        """Log *msg* at *level* unless *key* was logged already; return whether it logged."""
        if key in self._seen:
            return False
        self._seen.add(key)
        try:
            self.logger.log(level, msg, *args, exc_info=exc_info)
        except Exception:  # noqa: BLE001 - a broken logging setup must not break the agent
            pass
        return True

    def forget(self, key: Hashable) -> bool:
        """Re-arm *key*; return whether it had been logged."""
        if key in self._seen:
            self._seen.discard(key)
            return True
        return False

    def clear(self) -> None:
        """Re-arm every key."""
        self._seen.clear()
