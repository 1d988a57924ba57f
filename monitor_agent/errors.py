"""Exceptions raised by monitor_agent."""
from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A setting has a value the agent cannot use.

    Raised by :func:`monitor_agent.install` (never later). The message names the
    variable (or keyword), the offending value and the accepted form, e.g.
    ``MONITOR_AGENT_MAX_BLOCKING_TIME='abc': expected a positive duration such as
    0.1, 100ms or 2s``.

    Attributes:
        variable: The environment variable or keyword that was wrong.
        value: The value as given (secrets redacted).
        accepted: A human description of what would have been accepted.
    """

    def __init__(self, variable: str, value: object, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r}: {accepted}")
