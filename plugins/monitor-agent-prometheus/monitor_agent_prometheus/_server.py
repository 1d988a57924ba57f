"""A minimal HTTP server for ``/metrics`` in a native thread, on real sockets.

Why not ``prometheus_client.start_http_server``: it is built on ``threading``
and ``socketserver``/``wsgiref``, which ``gevent.monkey.patch_all()`` turns into
greenlets and cooperative sockets, so after patching it would run on the hub
and stop answering exactly when the loop is blocked. This server uses the C
``_socket`` module (never patched; even the original ``socket.socket.accept``
builds its result through the possibly patched ``socket.socket`` name) and a
thread from :func:`monitor_agent._native.spawn`, so it keeps answering while
the hub is stuck. Connections are served one at a time, each under one
overall deadline (:data:`_REQUEST_DEADLINE` to read the request, however the
client dribbles it, and as long again to write the answer): a scrape is a few
kilobytes, and a slow or idle client is dropped so the next scrape is served.
"""
from __future__ import annotations

import _socket
from typing import Any, Callable, Tuple

from monitor_agent import _native

__all__ = ["THREAD_NAME", "MetricsServer", "Renderer"]

# (accept header) -> (body, content type)
Renderer = Callable[[str], Tuple[bytes, str]]

# Not "ma:…": that prefix is the core agent's own threads (its tests count them).
THREAD_NAME = "prom-exporter"
_MAX_REQUEST = 16384  # bytes of request head read at most; a scrape sends a few hundred
_REQUEST_DEADLINE = 2.0  # seconds to read one whole request (and, separately, to send the answer)
_ACCEPT_TIMEOUT = 0.5  # how soon the thread notices stop()


class MetricsServer:
    """Serves ``GET /metrics`` from a listening socket until :meth:`stop`.

    Args:
        sock: A bound, listening ``_socket.socket``.
        render: Produces the body and content type for an ``Accept`` header.
        stopped: Polled between connections: when it returns True the server
            closes its socket and the thread ends (the agent was uninstalled);
            a request already accepted is answered 503.
    """

    def __init__(self, sock: Any, render: Renderer, stopped: Callable[[], bool] = lambda: False) -> None:
        self.sock = sock
        self.render = render
        self.stopped = stopped
        self.address = sock.getsockname()
        self.requests = 0
        self.errors = 0
        self._stopping = False
        self._done = _native.allocate_lock()

    @staticmethod
    def bind(family: int, sockaddr: Tuple[Any, ...]) -> Any:
        """A listening ``_socket.socket`` on *sockaddr*. Raises OSError (e.g. address in use)."""
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if family == _socket.AF_INET6:
                sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(16)
            sock.settimeout(_ACCEPT_TIMEOUT)
        except BaseException:
            sock.close()
            raise
        return sock

    def start(self) -> None:
        """Serve in a new native thread (named ``prom-exporter``)."""
        self._done.acquire()
        try:
            _native.spawn(THREAD_NAME, self._run)
        except BaseException:
            self._done.release()
            raise

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop listening now (the port is free again at once); wait up to *timeout* for the thread to end."""
        self._stopping = True
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)  # wakes a blocked accept() on Linux
        except OSError:
            pass
        if self._done.acquire(True, timeout):
            self._done.release()
            return True
        return False

    def close_inherited(self) -> None:
        """In a forked child: close this copy of the parent's socket; the parent keeps serving."""
        self._stopping = True
        self._done = _native.allocate_lock()  # the parent's thread does not exist here
        try:
            self.sock.close()
        except OSError:
            pass

    def _run(self) -> None:
        try:
            while not (self._stopping or self.stopped()):
                try:
                    fd, _ = self.sock._accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping:
                        break
                    self.errors += 1
                    _native.sleep(0.1)  # e.g. EMFILE: do not spin
                    continue
                self._serve(_socket.socket(fileno=fd))
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self._done.release()

    def _serve(self, conn: Any) -> None:
        try:
            request = self._read_request(conn, _native.monotonic() + _REQUEST_DEADLINE)
            self.requests += 1
            conn.settimeout(_REQUEST_DEADLINE)  # the answer fits the socket buffer: a client that reads nothing
            conn.sendall(self._respond(request))  # still cannot hold the thread past this
        except Exception:  # noqa: BLE001 - a bad, slow or idle client must not stop the server
            self.errors += 1
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: Any, deadline: float) -> bytes:
        """The request head, read before *deadline* (``TimeoutError`` after it), at most ``_MAX_REQUEST`` bytes."""
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < _MAX_REQUEST:
            remaining = deadline - _native.monotonic()
            if remaining <= 0:
                raise TimeoutError("request not complete before the deadline")
            conn.settimeout(remaining)
            chunk = conn.recv(_MAX_REQUEST - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def _respond(self, request: bytes) -> bytes:
        head = request.split(b"\n", 1)[0].decode("latin-1").split()
        method, target = (head[0], head[1]) if len(head) >= 2 else ("", "")
        if method not in ("GET", "HEAD"):
            return _response(405, b"method not allowed\n", "text/plain; charset=utf-8", extra="Allow: GET, HEAD\r\n")
        if target.split("?", 1)[0] != "/metrics":
            return _response(404, b"not found: metrics are at /metrics\n", "text/plain; charset=utf-8")
        if self._stopping or self.stopped():
            return _response(503, b"the monitoring agent was uninstalled: no metrics\n", "text/plain; charset=utf-8")
        try:
            body, content_type = self.render(_header(request, "accept"))
        except Exception as exc:  # noqa: BLE001 - report it to the scraper, keep serving
            self.errors += 1
            return _response(500, f"error collecting metrics: {type(exc).__name__}\n".encode(),
                             "text/plain; charset=utf-8")
        return _response(200, body, content_type, head_only=method == "HEAD")


def _header(request: bytes, name: str) -> str:
    """The value of header *name* (lower case) in a raw request, or ``""``."""
    for line in request.decode("latin-1").splitlines()[1:]:
        key, colon, value = line.partition(":")
        if colon and key.strip().lower() == name:
            return value.strip()
    return ""


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}


def _response(status: int, body: bytes, content_type: str, *, extra: str = "", head_only: bool = False) -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n")
    return head.encode("latin-1") + (b"" if head_only else body)
