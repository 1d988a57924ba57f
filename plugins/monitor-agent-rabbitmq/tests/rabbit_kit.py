"""Shared helpers of the RabbitMQ plugin's tests: the shared broker, and a plain pika consumer.

:class:`RawQueue` consumes the way gemstone's ``RabbitMqEventTransport`` does
(its own exchange declaration, an exclusive server-named queue bound to it), with
plain pika and none of our code, so it proves interoperability.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from typing import Any, Dict, Iterable, List

import pika

from tests.brokers import RABBIT_HOST, RABBIT_PORT, require_broker
from tests.helpers import CAPTURED

RABBIT_URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEMSTONE_EXCHANGE = {"exchange_type": "fanout", "durable": False, "auto_delete": False}


def require_rabbit() -> None:
    """Skip (or fail under MONITOR_AGENT_REQUIRE_BROKERS=1) unless the shared RabbitMQ answers."""
    require_broker("RabbitMQ", RABBIT_HOST, RABBIT_PORT)


def unique_event() -> str:
    """An event name no exchange exists for yet."""
    return f"test.monitor_agent.{uuid.uuid4().hex}"


def url_via(port: int, query: str = "") -> str:
    """The guest URL through a local port (a TcpProxy)."""
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F" + (f"?{query}" if query else "")


class RawQueue:
    """A plain pika consumer bound to gemstone's exchanges for *event_names*."""

    def __init__(self, event_names: Iterable[str], *, declare: bool = True) -> None:
        self.connection = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        for name in event_names:
            exchange = f"gemstone.broadcast.{name}"
            if declare:
                self.channel.exchange_declare(exchange=exchange, **GEMSTONE_EXCHANGE)
            self.channel.queue_bind(queue=self.queue, exchange=exchange, routing_key="")

    def get(self, count: int, timeout: float = 20.0) -> List[Dict[str, Any]]:
        """Wait for *count* messages; each is {"exchange", "content_type", "body" (decoded)}."""
        got: List[Dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.sleep(0.02)
                continue
            text = body.decode("utf-8")
            CAPTURED.append(text)
            got.append({"exchange": method.exchange, "routing_key": method.routing_key,
                        "content_type": properties.content_type, "body": json.loads(text)})
        return got

    def close(self) -> None:
        try:
            self.connection.close()
        except pika.exceptions.AMQPError:
            pass

    def __enter__(self) -> "RawQueue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def delete_exchange(name: str) -> None:
    """Remove a test exchange from the shared broker."""
    connection = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        connection.channel().exchange_delete(exchange=f"gemstone.broadcast.{name}")
    finally:
        connection.close()


class TlsTerminator:
    """A TLS server on 127.0.0.1 (a certificate made by a throw-away CA) forwarding plain TCP to RabbitMQ.

    The shared RabbitMQ has no TLS listener; this proves the client's TLS
    (handshake, verification, SNI) end to end without touching its config.
    """

    def __init__(self, directory: str) -> None:
        import ssl
        import subprocess
        import threading

        self.ca = os.path.join(directory, "ca.pem")
        cert, key = os.path.join(directory, "server.pem"), os.path.join(directory, "server.key")
        ext = os.path.join(directory, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=monitor-agent test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", "server.csr", "-subj", "/CN=localhost")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
            cert, "-days", "1", "-extfile", ext)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.handshakes = 0
        self._threading = threading
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        """Forward in one thread (an SSL socket must not be read and written from two threads at once)."""
        import select

        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except OSError:
            client.close()
            return
        self.handshakes += 1
        upstream = socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=5)
        upstream.settimeout(None)
        try:
            while True:
                readable = [tls] if tls.pending() else select.select([tls, upstream], [], [], 1.0)[0]
                if tls in readable:
                    data = tls.recv(65536)
                    if not data:
                        break
                    upstream.sendall(data)
                if upstream in readable:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    tls.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (tls, upstream):
                sock.close()

    def close(self) -> None:
        self.listener.close()
