"""redis-py connections whose sockets are always real OS sockets.

Imported only from :meth:`RedisEventTransport.prepare` (the hub's thread), never
at entry-point import and never in a background thread.

redis-py creates its sockets through the ``socket`` module (and ``ssl`` for
TLS); after ``gevent.monkey.patch_all()`` those are gevent's cooperative
versions, which must not be used from the agent's native threads (they would
start a second hub there). :class:`RealSocketConnection` overrides redis-py's
one socket-making method, ``_connect``, with the *original* ``socket``,
``getaddrinfo`` (``gevent.monkey.get_original``), and does TLS through
``ssl.MemoryBIO`` (:class:`TlsSocket`); every other read and write of redis-py
goes through methods of that socket object, so all I/O is real, blocking I/O
with timeouts, confined to the calling thread.
"""
from __future__ import annotations

import socket
import ssl  # here, imported by prepare() in the hub's thread; never in a native thread
from typing import Any, Dict

from gevent.monkey import get_original
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

try:  # redis-py >= 5
    from redis._parsers import _RESP2Parser as PythonParser
except ImportError:  # pragma: no cover - redis-py 4
    from redis.connection import PythonParser  # type: ignore[attr-defined,no-redef,unused-ignore]

from ._url import RedisSettings

__all__ = ["RealSocketConnection", "TlsSocket", "make_tls_context", "new_connection", "warm_up"]

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


class TlsSocket:
    """TLS over a real socket through ``ssl.MemoryBIO``, never through gevent.

    After ``gevent.monkey.patch_all()``, even the original ``ssl.SSLSocket``
    derives from gevent's cooperative socket when ``ssl`` was imported after
    patching; an ``SSLObject`` on memory buffers does no I/O of its own, so
    all reads and writes here are the real socket's. Provides what redis-py
    uses of a socket (``recv``, ``recv_into``, ``pending``, ``sendall``,
    ``settimeout``, ``shutdown``, ``close``, …; anything else is the raw
    socket's). Connections force redis-py's pure-Python parser all the same
    (see :func:`connection_kwargs`).

    Args:
        raw: A connected, real TCP socket (its timeout applies to the handshake).
        context: An ``ssl.SSLContext``.
        server_hostname: Name to send (SNI) and verify.
    """

    def __init__(self, raw: Any, context: Any, server_hostname: str) -> None:
        self._raw = raw
        self._want_read = ssl.SSLWantReadError
        self._eof = (ssl.SSLZeroReturnError, ssl.SSLEOFError)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self._handshake()

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except self._want_read:
                self._flush()
                if not self._fill():
                    raise ConnectionResetError("the server closed the connection during the TLS handshake")
        self._flush()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._raw.sendall(data)

    def _fill(self) -> bool:
        data = self._raw.recv(65536)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    def recv(self, size: int) -> bytes:
        """Up to *size* decrypted bytes; ``b""`` at end of stream."""
        while True:
            try:
                return bytes(self._tls.read(size))
            except self._want_read:
                self._flush()
                if not self._fill():
                    return b""
            except self._eof:
                return b""

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Decrypt up to *nbytes* (default: the buffer's size) into *buffer*; 0 at end of stream."""
        size = nbytes or memoryview(buffer).nbytes
        while True:
            try:
                return int(self._tls.read(size, buffer))
            except self._want_read:
                self._flush()
                if not self._fill():
                    return 0
            except self._eof:
                return 0

    def pending(self) -> int:
        """Decrypted bytes already buffered (readable without touching the socket)."""
        return int(self._tls.pending())

    def sendall(self, data: Any) -> None:
        """Encrypt and send all of *data*."""
        view = memoryview(data)
        while view:
            written = self._tls.write(view)
            view = view[written:]
        self._flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def make_tls_context(settings: RedisSettings) -> Any:
    """The ``ssl.SSLContext`` for a rediss URL (verification on unless opted out), or None for the other schemes.

    It may be gevent's subclass (after ``patch_all``): only its ``wrap_bio``
    is used, which gevent does not override and which does no I/O. (The
    original class cannot be used after patching: its property setters
    recurse through the patched name.)
    """
    if not settings.tls:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
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
                tls = TlsSocket(sock, self._tls_context, settings.host) if self._tls_context is not None else None
                sock.settimeout(settings.socket_timeout)
                return tls if tls is not None else sock
            except OSError as exc:  # try the next address
                error = exc
                sock.close()
            except BaseException:
                sock.close()
                raise
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
        # RESP2: pub/sub messages are plain replies of read_response() (under RESP3,
        # redis-py >= 8's default, they are push frames handed to a logging handler).
        "protocol": 2,
        # The pure-Python parser reads through sock.recv() only. With hiredis installed,
        # redis-py would pick _HiredisParser, which uses other socket methods.
        "parser_class": PythonParser,
    }


def new_connection(settings: RedisSettings, tls_context: Any = None) -> RealSocketConnection:
    """A not-yet-connected connection for *settings* (it connects on first use)."""
    return RealSocketConnection(settings, tls_context, **connection_kwargs(settings))


def warm_up() -> None:
    """Import, in the calling (hub) thread, what connecting would otherwise import lazily.

    ``getaddrinfo`` of a host name imports the ``idna`` codec on first use;
    nothing may be imported in a native thread (fork safety).
    """
    "localhost".encode("idna")
