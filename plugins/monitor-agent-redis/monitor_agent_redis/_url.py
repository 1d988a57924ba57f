"""Parse and validate ``redis://``, ``rediss://`` and ``unix://`` URLs (stdlib only, cheap to import).

Accepted forms (gemstone's, plus query options)::

    redis://[[user]:password@]host[:port][/db][?option=value&…]
    rediss://[[user]:password@]host[:port][/db][?option=value&…]     (TLS, verified by default)
    unix://[[user]:password@]/path/to/socket[?db=N&option=value&…]

Every problem raises :class:`monitor_agent.ConfigError` naming the URL (password
redacted), the bad part and the accepted form.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Dict, Mapping, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from monitor_agent import ConfigError
from monitor_agent._parsers import Invalid, parse_bool
from monitor_agent._redact import redact_url

__all__ = ["FORMS", "OPTIONS", "RedisSettings", "parse_url"]

VARIABLE = "redis transport URL"
DEFAULT_PORT = 6379
MAX_DB = 2**31 - 1

FORMS = {
    "redis": "redis://[[user]:password@]host[:port][/db][?option=value&…]",
    "rediss": "rediss://[[user]:password@]host[:port][/db][?option=value&…] (TLS)",
    "unix": "unix://[[user]:password@]/path/to/socket[?db=N&option=value&…]",
}
TLS_CERT_REQS = ("required", "optional", "none")
DISPATCH_MODES = ("thread", "hub")


@dataclasses.dataclass(frozen=True)
class RedisSettings:
    """Everything a connection needs, validated.

    Attributes:
        scheme: ``redis``, ``rediss`` or ``unix``.
        host: Host name or IP literal (TCP schemes); ``""`` for unix.
        port: TCP port (TCP schemes).
        path: Socket path (unix).
        db: Database number (``SELECT``); pub/sub channels are global, but
            gemstone URLs carry it, so it is kept.
        username: ACL user, or None.
        password: Password, or None. Never shown anywhere.
        socket_timeout: Seconds to wait for a reply on a connected socket.
        connect_timeout: Seconds to wait for the TCP (and TLS) connect.
        keepalive: TCP keepalive on TCP sockets.
        health_check_interval: Idle seconds after which a ``PING`` checks the
            connection before it is used again (0 = never).
        client_name: ``CLIENT SETNAME`` value, or None.
        max_batch: Events published per pipelined round trip.
        ssl_ca_certs: CA bundle to verify the server with (rediss).
        ssl_certfile: Client certificate (rediss, mutual TLS).
        ssl_keyfile: Client key (rediss, mutual TLS).
        ssl_cert_reqs: ``required`` (default), ``optional`` or ``none`` (no verification).
        ssl_check_hostname: Check the server's name against its certificate.
        dispatch: Where received events are handed to handlers: ``thread`` (the
            consumer's native thread, like the jsonl transport) or ``hub``
            (``run_on_main_thread``, as gemstone does).
    """

    scheme: str
    host: str = ""
    port: int = DEFAULT_PORT
    path: str = ""
    db: int = 0
    username: str | None = dataclasses.field(default=None, repr=False)
    password: str | None = dataclasses.field(default=None, repr=False)
    socket_timeout: float = 2.0
    connect_timeout: float = 2.0
    keepalive: bool = True
    health_check_interval: float = 15.0
    client_name: str | None = None
    max_batch: int = 32
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True
    dispatch: str = "thread"

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.scheme == "rediss"

    @property
    def address(self) -> str:
        """``host:port`` or the socket path, for messages."""
        if self.scheme == "unix":
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _non_negative_seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be 0 (off) or a positive number of seconds")
    return value


def _boolean(text: str) -> bool:
    try:
        return parse_bool(text)
    except Invalid:
        raise ValueError("must be true or false") from None


def _db_number(text: str) -> int:
    if not text.isdigit() or int(text) > MAX_DB:
        raise ValueError(f"must be a database number from 0 to {MAX_DB}")
    return int(text)


def _batch(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10000:
        raise ValueError("must be a whole number from 1 to 10000")
    return int(text)


def _existing_file(text: str) -> str:
    if not os.path.isfile(text):
        raise ValueError(f"file {text!r} does not exist")
    return os.path.abspath(text)


def _one_of(choices: Tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text.lower()

    return parse


def _name(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError("must be a non-empty name without spaces")
    return text


# option name -> (settings field, parser, TLS only)
OPTIONS: Dict[str, Tuple[str, Callable[[str], Any], bool]] = {
    "db": ("db", _db_number, False),
    "socket_timeout": ("socket_timeout", _positive_seconds, False),
    "connect_timeout": ("connect_timeout", _positive_seconds, False),
    "socket_connect_timeout": ("connect_timeout", _positive_seconds, False),
    "keepalive": ("keepalive", _boolean, False),
    "socket_keepalive": ("keepalive", _boolean, False),
    "health_check_interval": ("health_check_interval", _non_negative_seconds, False),
    "client_name": ("client_name", _name, False),
    "max_batch": ("max_batch", _batch, False),
    "dispatch": ("dispatch", _one_of(DISPATCH_MODES), False),
    "ssl_ca_certs": ("ssl_ca_certs", _existing_file, True),
    "ssl_certfile": ("ssl_certfile", _existing_file, True),
    "ssl_keyfile": ("ssl_keyfile", _existing_file, True),
    "ssl_cert_reqs": ("ssl_cert_reqs", _one_of(TLS_CERT_REQS), True),
    "ssl_check_hostname": ("ssl_check_hostname", _boolean, True),
}


class _Problem(Exception):
    """One thing wrong with the URL (internal; becomes a ConfigError)."""


def _accepted(scheme: str) -> str:
    form = FORMS.get(scheme, " or ".join(FORMS.values()))
    return f"expected {form}; options: {', '.join(sorted(OPTIONS))}"


def parse_url(url: str, **options: Any) -> RedisSettings:
    """Validate *url* (and keyword *options*, which override its query) into :class:`RedisSettings`.

    Raises:
        ConfigError: Naming the redacted URL, the bad part and the accepted form.
    """
    scheme = url.split(":", 1)[0].lower() if isinstance(url, str) else ""
    shown = redact_url(url) if isinstance(url, str) else repr(url)
    try:
        return _parse(url, scheme, options)
    except _Problem as exc:
        raise ConfigError(VARIABLE, shown, f"{exc}; {_accepted(scheme)}") from None


def _parse(url: str, scheme: str, options: Mapping[str, Any]) -> RedisSettings:
    if scheme not in FORMS:
        raise _Problem(f"unsupported scheme {scheme!r}")
    if _password_cut_short(url, scheme):
        raise _Problem("the password contains '/', '?' or '#': percent-encode it (%2F, %3F, %23)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _Problem(f"bad host or port ({exc})") from None
    if parts.fragment:
        raise _Problem("a URL fragment (#…) is not allowed")
    fields: Dict[str, Any] = {"scheme": scheme}
    fields.update(_credentials(parts.username, parts.password))
    if scheme == "unix":
        fields.update(_unix_location(parts.netloc, parts.path))
    else:
        fields.update(_tcp_location(parts.hostname, port, parts.path))
    given = _query(parts.query)
    given.update({key: value if isinstance(value, str) else str(value) for key, value in options.items()})
    for key, text in given.items():
        fields.update(_option(scheme, key, text, explicit_db="db" in fields and key == "db"))
    settings = RedisSettings(**fields)
    if settings.ssl_certfile is None and settings.ssl_keyfile is not None:
        raise _Problem("ssl_keyfile needs ssl_certfile")
    return settings


def _password_cut_short(url: str, scheme: str) -> bool:
    """Whether an unencoded ``/``, ``?`` or ``#`` in the password ended the URL's authority early.

    The authority ends at the first of those characters, so in
    ``redis://:pa/ss@host/0`` it is ``:pa`` and the rest of the password lands in
    the path. Then no message may show the host, port, path or query as parsed.
    A ``@`` after the authority is only taken for this when the authority cannot
    be a host (and port) by itself, or when it lands in a TCP URL's path (a db
    number never holds one) or the fragment.
    """
    rest = url.split("://", 1)[1] if "://" in url else ""
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" in authority or "@" not in tail:
        return False
    if scheme == "unix":
        return authority not in ("", "localhost")
    path, _, fragment = tail.partition("#")
    if "@" in path.partition("?")[0] or "@" in fragment:
        return True
    return not _looks_like_host_and_port(authority)


def _looks_like_host_and_port(authority: str) -> bool:
    if authority.startswith("["):
        host, _, port = authority.partition("]")
        host += "]"
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
        port = ":" + port
    else:
        host, port = authority, ""
    return bool(host.strip("[]")) and (port == "" or (port.startswith(":") and port[1:].isdigit()))


def _credentials(username: str | None, password: str | None) -> Dict[str, Any]:
    if username is None and password is None:
        return {}
    if password is None:
        raise _Problem("a user name needs a password: use user:password@ or :password@")
    return {"username": unquote(username or "") or None, "password": unquote(password)}


def _unix_location(netloc: str, path: str) -> Dict[str, Any]:
    host = netloc.rpartition("@")[2]
    if host not in ("", "localhost"):
        raise _Problem(f"unix URLs name a socket path, not host {host!r}")
    path = unquote(path)
    if not path or path.endswith("/") or "\x00" in path:
        raise _Problem("the socket path is missing")
    return {"path": path, "host": ""}


def _tcp_location(host: str | None, port: int | None, path: str) -> Dict[str, Any]:
    if not host:
        raise _Problem("the host is missing")
    if any(c.isspace() for c in host):
        raise _Problem(f"bad host {host!r}")
    if port == 0:
        raise _Problem("port 0 is not a port")
    fields: Dict[str, Any] = {"host": unquote(host), "port": DEFAULT_PORT if port is None else port}
    db_text = path[1:] if path.startswith("/") else path
    if db_text:
        try:
            fields["db"] = _db_number(db_text)
        except ValueError as exc:
            raise _Problem(f"bad database {db_text!r}: {exc}") from None
    return fields


def _query(query: str) -> Dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise _Problem("the query string is malformed") from None
    given: Dict[str, str] = {}
    for key, value in pairs:
        if key in given:
            raise _Problem(f"option {key!r} is given twice")
        given[key] = value
    return given


def _option(scheme: str, key: str, text: str, *, explicit_db: bool) -> Dict[str, Any]:
    spec = OPTIONS.get(key)
    if spec is None:
        raise _Problem(f"unknown option {key!r}")
    field, parse, tls_only = spec
    if tls_only and scheme != "rediss":
        raise _Problem(f"option {key!r} needs rediss:// (TLS)")
    if explicit_db:
        raise _Problem("the database is given both in the URL path and as the db option (?db= or keyword)")
    try:
        value = parse(text)
    except ValueError as exc:
        raise _Problem(f"bad {key}={text!r}: {exc}") from None
    return {field: value}
