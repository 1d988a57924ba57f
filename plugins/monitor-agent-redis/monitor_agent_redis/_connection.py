"""redis-py connections whose sockets are always real OS sockets.

Imported only from :meth:`RedisEventTransport.prepare` (the hub's thread), never
at entry-point import and never in a background thread.

redis-py creates its sockets through the ``socket`` module (and ``ssl`` for
TLS); after ``gevent.monkey.patch_all()`` those are gevent's cooperative
versions, which must not be used from the agent's native threads (they would
start a second hub there). :class:`RealSocketConnection` overrides redis-py's
one socket-making method, ``_connect``, with the *original* ``socket``,
``getaddrinfo`` and ``ssl.SSLContext`` (``gevent.monkey.get_original``); every
other read and write of redis-py goes through methods of that socket object,
so all I/O is real, blocking I/O with timeouts, confined to the calling thread.
"""
from __future__ import annotations

import socket
from typing import Any, Dict

from gevent.monkey import get_original
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from ._url import RedisSettings

__all__ = ["RealSocketConnection", "new_connection"]

_socket_class: Any = get_original("socket", "socket")
_getaddrinfo: Any = get_original("socket", "getaddrinfo")
# Constants are the same in gevent's patched socket module.
AF_UNIX, SOCK_STREAM = socket.AF_UNIX, socket.SOCK_STREAM
IPPROTO_TCP, TCP_NODELAY = socket.IPPROTO_TCP, socket.TCP_NODELAY
SOL_SOCKET, SO_KEEPALIVE = socket.SOL_SOCKET, socket.SO_KEEPALIVE
# Detect a dead peer within about a minute on an idle connection.
KEEPALIVE_OPTIONS = {getattr(socket, name): value
                     for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
                     if hasattr(socket, name)}


def _tls_context(settings: RedisSettings) -> Any:
    """An original (unpatched) ``ssl.SSLContext`` for *settings*; verification on unless opted out."""
    import ssl  # already imported by prepare() when TLS is used; cheap here

    context_class = get_original("ssl", "SSLContext")
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)
    if settings.ssl_cert_reqs == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.verify_mode = ssl.CERT_REQUIRED if settings.ssl_cert_reqs == "required" else ssl.CERT_OPTIONAL
        context.check_hostname = settings.ssl_check_hostname
        if settings.ssl_ca_certs:
            context.load_verify_locations(cafile=settings.ssl_ca_certs)
        else:
            context.load_default_certs()
    if settings.ssl_certfile:
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return context


class RealSocketConnection(Connection):  # type: ignore[misc,unused-ignore]
    """A redis-py ``Connection`` (TCP, TCP+TLS or Unix socket) made from original sockets.

    Args:
        settings: The validated URL.
        tls_context: The ``SSLContext`` to wrap TCP sockets with (rediss only).
        **kwargs: Passed to redis-py's ``Connection``.
    """

    def __init__(self, settings: RedisSettings, tls_context: Any = None, **kwargs: Any) -> None:
        self._settings = settings
        self._tls_context = tls_context
        super().__init__(**kwargs)  # type: ignore[no-untyped-call,unused-ignore]

    def _connect(self) -> Any:
        if self._settings.scheme == "unix":
            return self._connect_unix()
        return self._connect_tcp()

    def _connect_unix(self) -> Any:
        sock = _socket_class(AF_UNIX, SOCK_STREAM)
        try:
            sock.settimeout(self._settings.connect_timeout)
            sock.connect(self._settings.path)
            sock.settimeout(self._settings.socket_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_tcp(self) -> Any:
        settings = self._settings
        error: BaseException | None = None
        for family, kind, proto, _, address in _getaddrinfo(settings.host, settings.port, 0, SOCK_STREAM):
            sock = _socket_class(family, kind, proto)
            try:
                sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
                if settings.keepalive:
                    sock.setsockopt(SOL_SOCKET, SO_KEEPALIVE, 1)
                    for option, value in KEEPALIVE_OPTIONS.items():
                        sock.setsockopt(IPPROTO_TCP, option, value)
                sock.settimeout(settings.connect_timeout)
                sock.connect(address)
                if self._tls_context is not None:
                    sock = self._tls_context.wrap_socket(sock, server_hostname=settings.host)
                sock.settimeout(settings.socket_timeout)
                return sock
            except OSError as exc:
                error = exc
                sock.close()
        raise error if error is not None else OSError(f"no address found for {settings.host!r}")

    def _host_error(self) -> str:
        return self._settings.address

    def repr_pieces(self) -> Any:
        return [("address", self._settings.address), ("db", self._settings.db)]


def connection_kwargs(settings: RedisSettings) -> Dict[str, Any]:
    """redis-py ``Connection`` keyword arguments common to redis-py 5 to 8."""
    return {
        "host": settings.host or "localhost",
        "port": settings.port,
        "db": settings.db,
        "username": settings.username,
        "password": settings.password,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_keepalive": settings.keepalive,
        "health_check_interval": settings.health_check_interval,
        "client_name": settings.client_name,
        # One attempt: the Publisher owns retries (with backoff), not redis-py.
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
    }


def new_connection(settings: RedisSettings, tls_context: Any = None) -> RealSocketConnection:
    """A not-yet-connected connection for *settings* (it connects on first use)."""
    return RealSocketConnection(settings, tls_context, **connection_kwargs(settings))


def make_tls_context(settings: RedisSettings) -> Any:
    """The TLS context for a rediss URL, or None for the other schemes."""
    return _tls_context(settings) if settings.tls else None
