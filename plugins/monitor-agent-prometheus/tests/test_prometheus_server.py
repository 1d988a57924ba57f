"""The ``/metrics`` server on its own (in this process): slow or idle clients cannot stall a scrape."""
from __future__ import annotations

import _socket
import itertools
import socket
import threading
import time
from typing import Iterator, Tuple

import pytest
from monitor_agent_prometheus._server import MetricsServer
from prometheus_apps import scrape


def _render(accept: str) -> Tuple[bytes, str]:
    return b"up 1\n", "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    """A running server on a free loopback port, stopped at the end of the test."""
    running = MetricsServer(MetricsServer.bind(_socket.AF_INET, ("127.0.0.1", 0)), _render)
    running.start()
    yield running
    assert running.stop(timeout=5)


def _url(server: MetricsServer) -> str:
    host, port = server.address[:2]
    return f"http://{host}:{port}/metrics"


def _timed_scrape(server: MetricsServer) -> float:
    """Scrape once (failing the test if it is not served within 10 s); the seconds it took."""
    started = time.monotonic()
    body, _ = scrape(_url(server), timeout=10)
    assert body == "up 1\n"
    return time.monotonic() - started


def test_idle_client_does_not_stop_the_next_scrape(server: MetricsServer) -> None:
    """A client that connects and sends nothing is dropped after the request deadline."""
    with socket.create_connection(server.address[:2], timeout=10) as idle:
        time.sleep(0.2)  # let the server thread pick the idle connection first
        took = _timed_scrape(server)  # served at all (within 10 s) while the idle client is still connected
        assert took < 8, took
        idle.settimeout(10)
        assert idle.recv(100) == b""  # the server hung up on it
    assert server.errors >= 1


def test_dribbling_client_does_not_stop_the_next_scrape(server: MetricsServer) -> None:
    """A client sending one byte every 0.5 s, all along, cannot stretch its request past the deadline.

    Without an overall deadline (a timeout per ``recv`` only) it would hold the
    server for as long as it keeps dribbling, and the scrape would time out.
    """
    stop = threading.Event()
    dropped = threading.Event()

    def dribble(conn: socket.socket) -> None:
        for byte in itertools.cycle(b"GET /metrics HTTP/1.1\r\nX-Slow: "):
            if stop.wait(0.5):
                return
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                dropped.set()
                return

    with socket.create_connection(server.address[:2], timeout=10) as slow:
        slow.sendall(b"G")
        dribbler = threading.Thread(target=dribble, args=(slow,), daemon=True)
        dribbler.start()
        time.sleep(0.2)  # let the server thread pick the slow connection first
        try:
            took = _timed_scrape(server)  # served at all (within 10 s) while the dribbler keeps sending
            assert took < 8, took
            assert dribbler.is_alive() or dropped.is_set()
        finally:
            stop.set()
            dribbler.join(10)
        slow.settimeout(10)
        try:
            assert slow.recv(100) == b""  # the server hung up on it
        except ConnectionResetError:
            pass
    assert server.requests >= 1 and server.errors >= 1


def test_oversized_request_is_bounded(server: MetricsServer) -> None:
    """A request head that never ends is cut at the size bound and answered; the server carries on."""
    with socket.create_connection(server.address[:2], timeout=10) as big:
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 40000)
        big.settimeout(10)
        answer = b""
        try:
            while chunk := big.recv(65536):
                answer += chunk
        except ConnectionResetError:  # unread bytes at close: the kernel resets; the answer may be lost
            pass
        assert answer == b"" or answer.startswith(b"HTTP/1.1 200 ")
    assert _timed_scrape(server) < 8


def test_stopped_agent_answers_503_with_a_clear_body() -> None:
    """A request accepted just as the agent is uninstalled gets 503 and a plain reason, not a 500."""
    sock = MetricsServer.bind(_socket.AF_INET, ("127.0.0.1", 0))
    try:
        stopped = MetricsServer(sock, _render, stopped=lambda: True)
        answer = stopped._respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        running = MetricsServer(sock, _render)
        assert running._respond(b"GET /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head
    assert body == b"the monitoring agent was uninstalled: no metrics\n"
