"""monitor-agent-redis: the Redis pub/sub transport of monitor_agent.

Entry points (group ``monitor_agent.transports``): ``redis``, ``rediss`` and
``unix``, all :func:`factory`. Importing this package is cheap: it parses and
validates URLs with the standard library only; redis-py is imported later, by
the transport's ``prepare()`` in the hub's thread.
"""
from __future__ import annotations

from typing import Any

from ._url import RedisSettings, parse_url
from ._version import __version__
from .transport import RedisEventTransport, decode_body

__all__ = ["RedisEventTransport", "RedisSettings", "__version__", "decode_body", "factory", "parse_url"]


def factory(url: str, **options: Any) -> RedisEventTransport:
    """Make a transport for a ``redis://``, ``rediss://`` or ``unix://`` URL.

    Args:
        url: ``redis://[[user]:password@]host[:port][/db][?option=value&…]``,
            ``rediss://…`` (TLS) or ``unix://[[user]:password@]/path?db=N``.
        **options: The URL's query options as keywords (they win over the query).

    Raises:
        monitor_agent.ConfigError: A bad URL or option, naming the redacted URL,
            the bad part and the accepted form.
    """
    return RedisEventTransport(url, parse_url(url, **options))
