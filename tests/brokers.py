"""Real brokers for tests: the shared ones, private redis-server instances, and a TCP proxy that can fail.

Broker tests skip when a broker is unreachable, unless
``MONITOR_AGENT_REQUIRE_BROKERS=1`` (set by ``.ci/run``), in which case they fail:
CI must never pass by skipping.

Tests that break a broker never touch the shared one: they start their own
``redis-server`` (:class:`RedisServer`), or put a :class:`TcpProxy` they control
between the client and the broker (RabbitMQ takes seconds to boot).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import List, Tuple

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
REQUIRE = os.environ.get("MONITOR_AGENT_REQUIRE_BROKERS") == "1"


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_broker(name: str, host: str, port: int) -> None:
    """Skip (or, with MONITOR_AGENT_REQUIRE_BROKERS=1, fail) unless the broker answers."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE:
        pytest.fail(message + " and MONITOR_AGENT_REQUIRE_BROKERS=1")
    pytest.skip(message)


def require_program(name: str) -> str:
    """The path of a program the test needs (fails under MONITOR_AGENT_REQUIRE_BROKERS=1 if missing)."""
    path = shutil.which(name)
    if path:
        return path
    if REQUIRE:
        pytest.fail(f"{name} is not installed")
    pytest.skip(f"{name} is not installed")


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not reachable(host, port, 0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
        time.sleep(0.05)


class RedisServer:
    """A private redis-server the test may kill, pause and restart on the same port.

    Args:
        password: ``requirepass``, if any.
        tls: ``(cert, key, ca)`` paths to serve TLS on the port instead of plain TCP.
    """

    def __init__(self, password: str | None = None, tls: Tuple[str, str, str] | None = None) -> None:
        self.binary = require_program("redis-server")
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.dir = tempfile.mkdtemp(prefix="ma-redis-")
        self.proc: subprocess.Popen | None = None

    def argv(self) -> List[str]:
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")]
        if self.tls:
            cert, key, ca = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill, then start again on the same port."""
        self.kill()
        self.start()

    def url(self, db: int = 0) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{self.password}@" if self.password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """Forwards 127.0.0.1:port to a target, and can reset or stall every connection on demand.

    Runs on plain threads and blocking sockets (the test process is not
    monkey-patched). ``reset()`` closes all connections with RST; ``pause()``
    stops forwarding (connections hang, as with a stopped broker) and refuses
    nothing; ``resume()`` undoes it; ``refuse(True)`` closes new connections at once.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        self.connections: List[socket.socket] = []
        self.lock = threading.Lock()
        self.flowing = threading.Event()
        self.flowing.set()
        self.refusing = False
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.refusing:
                self._rst(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                self._rst(client)
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _rst(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        except OSError:
            pass

    def reset(self) -> None:
        """Drop every open connection with a TCP reset, at once.

        Closing alone is not enough: a socket that a pump thread is blocked
        reading is only really closed when that read returns, so an idle client
        would never notice. Shutting it down first wakes the pump.
        """
        with self.lock:
            conns, self.connections = self.connections, []
        for sock in conns:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for sock in conns:
            self._rst(sock)

    def pause(self) -> None:
        """Stop forwarding bytes; connections stay open and hang."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def refuse(self, refusing: bool = True) -> None:
        """Reset new connections as soon as they are accepted."""
        self.refusing = refusing

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()
        self.reset()

    def __enter__(self) -> "TcpProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
