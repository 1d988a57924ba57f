"""Helpers shared by the subcommands."""
from __future__ import annotations

import sys
from typing import NoReturn

__all__ = ["fail"]


def fail(message: str, status: int = 2) -> NoReturn:
    """Print ``monitor-agent: message`` on stderr and exit with *status*."""
    sys.stderr.write(f"monitor-agent: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)
