"""monitor-agent-rabbitmq: a RabbitMQ transport for monitor_agent, gemstone-compatible.

Entry points (group ``monitor_agent.transports``): ``amqp`` and ``amqps``, both
:func:`factory`. This module does not import pika; the transport imports it in
``prepare()`` (the hub's thread) or when a consumer starts.
"""
from __future__ import annotations

from typing import Any

from ._config import ACCEPTED, KEYWORDS, AmqpSettings, from_keywords, from_url
from ._transport import EXCHANGE_PREFIX, RabbitMqTransport, exchange_name
from ._version import __version__

__all__ = ["ACCEPTED", "EXCHANGE_PREFIX", "KEYWORDS", "AmqpSettings", "RabbitMqTransport", "__version__",
           "exchange_name", "factory"]


def factory(url: str | None = None, **options: Any) -> RabbitMqTransport:
    """Make a RabbitMQ transport from a URL or from gemstone's keywords.

    ``factory("amqp://user:pass@host:5672/%2F?heartbeat=30")``, or
    ``factory(None, host="127.0.0.1", port=5672, username="guest", password="guest",
    virtual_host="/", heartbeat=30)`` like gemstone's
    ``RabbitMqEventTransport(host, port, username, password, **connection_options)``.

    Raises:
        monitor_agent.ConfigError: A bad URL, option or keyword (password redacted).
    """
    if url is None:
        return RabbitMqTransport(None, from_keywords(**options))
    if options:
        from monitor_agent import ConfigError
        from monitor_agent._redact import redact_url

        raise ConfigError("amqp URL", redact_url(url), f"keywords {sorted(options)} are not accepted with a "
                          "URL; put options in its query string (" + ACCEPTED + ")")
    return RabbitMqTransport(url, from_url(url))
