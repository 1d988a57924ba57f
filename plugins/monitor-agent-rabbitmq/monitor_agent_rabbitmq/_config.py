"""Settings of a RabbitMQ transport, from an ``amqp(s)://`` URL or gemstone's keyword form.

Nothing here imports pika: the factory validates everything up front, and
:meth:`AmqpSettings.connection_parameters` (called later, with pika imported)
turns the result into ``pika.ConnectionParameters``.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, Mapping, Tuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from monitor_agent import ConfigError
from monitor_agent._parsers import Invalid, parse_bool
from monitor_agent._redact import redact_url

__all__ = ["ACCEPTED", "KEYWORDS", "AmqpSettings", "from_keywords", "from_url"]

ACCEPTED = ("amqp://user:pass@host:port/vhost (vhost '/' is %2F) or amqps://… for TLS; query options: "
            "heartbeat, connection_attempts, retry_delay, socket_timeout, stack_timeout, "
            "blocked_connection_timeout (seconds), and for amqps cafile=/path/ca.pem, verify=true|false, "
            "server_hostname")

# Options (query parameters and keywords) that are numbers: name -> (minimum, integer?)
_NUMERIC: Dict[str, Tuple[float, bool]] = {
    "heartbeat": (0, True),
    "connection_attempts": (1, True),
    "retry_delay": (0, False),
    "socket_timeout": (0.001, False),
    "stack_timeout": (0.001, False),
    "blocked_connection_timeout": (0.001, False),
}
_TLS_OPTIONS = ("cafile", "verify", "server_hostname")
#: Keywords the keyword form accepts besides host, port, username, password.
KEYWORDS = ("virtual_host", "ssl", *_NUMERIC, *_TLS_OPTIONS)
@dataclasses.dataclass(frozen=True)
class AmqpSettings:
    """Everything needed to connect; ``password`` never appears in ``repr``."""

    host: str
    port: int
    username: str
    password: str = dataclasses.field(repr=False)
    virtual_host: str = "/"
    tls: bool = False
    heartbeat: int | None = None  # None: accept the broker's proposal
    connection_attempts: int = 1  # the publisher retries with its own backoff
    retry_delay: float = 0.5
    socket_timeout: float = 5.0
    stack_timeout: float = 10.0
    blocked_connection_timeout: float = 10.0
    cafile: str | None = None
    verify: bool = True
    server_hostname: str | None = None

    def url(self) -> str:
        """An equivalent URL (the password redacted)."""
        scheme = "amqps" if self.tls else "amqp"
        auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return redact_url(f"{scheme}://{auth}{host}:{self.port}/{quote(self.virtual_host, safe='')}")

    def ssl_context(self, ssl: Any) -> Any:
        """The client TLS context: verification on (system CAs, or ``cafile``) unless ``verify=false``.

        Built from ``ssl.SSLContext`` directly, not ``create_default_context``:
        after gevent patching, the stdlib helper would build gevent's context
        class even when handed the original module.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cafile:
            context.load_verify_locations(cafile=self.cafile)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def connection_parameters(self, pika: Any, ssl: Any) -> Any:
        """``pika.ConnectionParameters`` for these settings (call with pika and ssl imported).

        Args:
            pika: The imported ``pika`` package.
            ssl: The ``ssl`` module whose ``SSLContext`` to build (the original one
                in a native thread, see ``_realio``).
        """
        options: Dict[str, Any] = {}
        if self.tls:
            options["ssl_options"] = pika.SSLOptions(self.ssl_context(ssl), self.server_hostname or self.host)
        return pika.ConnectionParameters(
            host=self.host, port=self.port, virtual_host=self.virtual_host,
            credentials=pika.PlainCredentials(self.username, self.password, erase_on_connect=False),
            heartbeat=self.heartbeat, connection_attempts=self.connection_attempts,
            retry_delay=self.retry_delay, socket_timeout=self.socket_timeout, stack_timeout=self.stack_timeout,
            blocked_connection_timeout=self.blocked_connection_timeout, **options)


def _bad(shown: str, part: str) -> ConfigError:
    return ConfigError("amqp URL", shown, f"{part}; expected {ACCEPTED}")


def _number(shown: str, name: str, raw: Any) -> float | int:
    minimum, integer = _NUMERIC[name]
    try:
        value = (int(raw) if not isinstance(raw, float) else raw) if integer else float(raw)
    except (TypeError, ValueError):
        raise _bad(shown, f"option {name}={raw!r} is not {'an integer' if integer else 'a number'}") from None
    if isinstance(raw, bool) or not math.isfinite(value) or value < minimum or (integer and value != int(value)):
        raise _bad(shown, f"option {name}={raw!r} must be {'an integer ' if integer else ''}>= {minimum}")
    return int(value) if integer else value


def _boolean(shown: str, name: str, raw: Any) -> bool:
    try:
        return parse_bool(raw)
    except Invalid:
        raise _bad(shown, f"option {name}={raw!r} must be true or false") from None


def _options(shown: str, options: Mapping[str, Any], tls: bool) -> Dict[str, Any]:
    """Validate the optional settings shared by the URL query and the keyword form."""
    result: Dict[str, Any] = {}
    for name, raw in options.items():
        if name in _NUMERIC:
            result[name] = _number(shown, name, raw)
        elif name in _TLS_OPTIONS:
            if not tls:
                raise _bad(shown, f"option {name!r} only applies to amqps:// (TLS)")
            if name == "verify":
                result[name] = _boolean(shown, name, raw)
            elif name == "cafile":
                path = os.path.abspath(str(raw))
                if not os.path.isfile(path):
                    raise _bad(shown, f"cafile {str(raw)!r} is not a readable file")
                result[name] = path
            else:
                if not str(raw):
                    raise _bad(shown, "server_hostname is empty")
                result[name] = str(raw)
        else:
            raise _bad(shown, f"unknown option {name!r}")
    return result


def _port(shown: str, raw: Any) -> int:
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise _bad(shown, f"port {raw!r} is not a number") from None
    if isinstance(raw, bool) or not 0 < port < 65536:
        raise _bad(shown, f"port {raw!r} is out of range 1-65535")
    return port


def from_url(url: str) -> AmqpSettings:
    """Parse and validate ``amqp://user:pass@host:port/vhost?options`` (or ``amqps://``).

    Raises:
        ConfigError: Naming the URL (password redacted), the bad part and the accepted form.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad(shown, f"bad host ({redact_url(str(exc))})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise _bad(shown, f"scheme {parts.scheme!r} is not amqp or amqps")
    try:
        raw_port = parts.port
    except ValueError:
        raise _bad(shown, f"port {parts.netloc.rpartition('@')[2].rpartition(':')[2]!r} is not a number "
                   "in 1-65535") from None
    host = parts.hostname or ""
    if not host:
        raise _bad(shown, "the host is missing")
    tls = scheme == "amqps"
    if parts.netloc.endswith(":"):
        raise _bad(shown, "the port is empty")
    port = _port(shown, raw_port) if raw_port is not None else (5671 if tls else 5672)
    path = parts.path
    if path in ("", "/"):
        vhost = "/"
    else:
        encoded = path[1:]
        if "/" in encoded:
            raise _bad(shown, f"vhost {encoded!r} contains '/': write it as %2F")
        vhost = unquote(encoded)
        if not vhost:
            raise _bad(shown, "the vhost is empty")
    if parts.fragment:
        raise _bad(shown, "a #fragment is not allowed")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _bad(shown, "the query string does not parse") from None
    names = [k for k, _ in query]
    duplicates = sorted({k for k in names if names.count(k) > 1})
    if duplicates:
        raise _bad(shown, f"option {duplicates[0]!r} is given twice")
    options = _options(shown, dict(query), tls)
    if parts.username:
        username, password = unquote(parts.username), unquote(parts.password or "")
    else:
        username, password = "guest", "guest"
    return AmqpSettings(host=host, port=port, username=username, password=password, virtual_host=vhost,
                        tls=tls, **options)


def from_keywords(host: str = "", port: Any = 5672, username: str = "", password: str = "",
                  **connection_options: Any) -> AmqpSettings:
    """gemstone's ``RabbitMqEventTransport(host, port, username, password, **connection_options)`` form.

    ``connection_options`` may be ``virtual_host``, ``ssl`` (bool: amqps) and the
    URL's query options (see :data:`ACCEPTED`). Empty host/username/password mean
    ``127.0.0.1``/``guest``/``guest`` like pika's defaults.

    Raises:
        ConfigError: An unknown keyword or a bad value (the password is never shown).
    """
    tls = _boolean("amqp keywords", "ssl", connection_options.pop("ssl", False))
    vhost = connection_options.pop("virtual_host", "/")
    host = str(host or "127.0.0.1")
    settings_url = AmqpSettings(host=host, port=5671 if tls else 5672, username=str(username or "guest"),
                                password="", tls=tls).url()
    shown = f"{settings_url} (keywords)"
    unknown = sorted(set(connection_options) - set(KEYWORDS))
    if unknown:
        raise ConfigError("amqp keywords", shown, f"unknown keyword {unknown[0]!r}; accepted: host, port, "
                          f"username, password, {', '.join(KEYWORDS)}")
    if not isinstance(vhost, str) or not vhost:
        raise _bad(shown, f"virtual_host {vhost!r} must be a non-empty string")
    options = _options(shown, connection_options, tls)
    if not username:
        username, password = "guest", password or "guest"
    return AmqpSettings(host=host, port=_port(shown, port), username=str(username), password=str(password),
                        virtual_host=vhost, tls=tls, **options)
