"""pika sees real I/O modules in the agent's threads and the live ones everywhere else (no broker needed)."""
from __future__ import annotations

import socket
import ssl
import sys
import threading
from typing import Any, Dict

import pika.adapters.utils.connection_workflow as workflow
import pika.adapters.utils.selector_ioloop_adapter as resolver_module
from monitor_agent_rabbitmq import _realio, factory

from monitor_agent import _native


def _prepared() -> None:
    factory("amqp://guest:guest@127.0.0.1/%2F").prepare()


def test_other_threads_see_the_live_modules_unchanged() -> None:
    _prepared()
    assert isinstance(workflow.socket, _realio.ThreadAwareModule)
    assert workflow.socket.socket is socket.socket
    assert workflow.socket.getaddrinfo is socket.getaddrinfo
    seen: Dict[str, Any] = {}
    thread = threading.Thread(target=lambda: seen.update(cls=workflow.socket.socket))
    thread.start()
    thread.join()
    assert seen["cls"] is socket.socket  # an application thread (or greenlet) keeps its own view


def test_registered_native_threads_see_private_real_modules() -> None:
    _prepared()
    seen: Dict[str, Any] = {}
    done = _native.allocate_lock()
    done.acquire()

    def probe() -> None:
        _realio.register_current_thread()
        try:
            seen["socket"] = workflow.socket.socket
            seen["timer"] = resolver_module.threading.Timer
            seen["ssl_context"] = sys.modules["pika.connection"].ssl.SSLContext
        finally:
            _realio.unregister_current_thread()
            done.release()

    _native.spawn("ma:test", probe)
    assert done.acquire(True, 10)
    assert seen["socket"].__module__ == "monitor_agent_rabbitmq._realio.real_socket"
    assert seen["socket"] is not socket.socket
    assert seen["timer"] is _realio.NativeTimer
    assert seen["ssl_context"].__module__ == "monitor_agent_rabbitmq._realio.real_ssl"
    # The copies never write into the application's modules.
    assert socket.AddressFamily.__module__ == "socket" and ssl.PROTOCOL_TLS_CLIENT.__class__.__module__ == "ssl"


def test_private_socket_pairs_talk() -> None:
    _prepared()
    real_socket = sys.modules["monitor_agent_rabbitmq._realio.real_socket"]
    a, b = real_socket.socketpair()
    with a, b:
        a.sendall(b"ping")
        assert b.recv(4) == b"ping"
        assert type(a).__module__ == "monitor_agent_rabbitmq._realio.real_socket"
