"""The transport against the shared RabbitMQ (and TcpProxy faults in front of it), in this process."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

import pika
import pytest
import rabbit_kit
from monitor_agent_rabbitmq import RabbitMqTransport, factory
from rabbit_kit import RABBIT_URL, RawQueue, delete_exchange, require_rabbit, unique_event, url_via

from monitor_agent import TransportUnavailable, wire
from tests.brokers import RABBIT_HOST, RABBIT_PORT, TcpProxy
from tests.helpers import SECRET
from tests.reliability._record import observed

BLOCKED = "gevent.event_loop_blocked"


def envelope(name: str = BLOCKED, **data: Any) -> Dict[str, Any]:
    return wire.build_envelope(name, {"blocking_time": 0.25, **data}, service="rabbit-test")


def publisher(url: str = RABBIT_URL) -> RabbitMqTransport:
    transport = factory(url)
    transport.prepare()
    return transport


@pytest.fixture(autouse=True)
def _rabbit() -> None:
    require_rabbit()


def test_published_event_reaches_a_plain_gemstone_style_consumer() -> None:
    transport = publisher()
    sent = envelope(marker="interop")
    try:
        with RawQueue([BLOCKED]) as queue:
            transport.emit_event(BLOCKED, sent)
            [message] = [m for m in queue.get(1) if m["body"].get("id") == sent["id"]]
    finally:
        transport.close()
    assert message["exchange"] == "gemstone.broadcast.gevent.event_loop_blocked"
    assert message["routing_key"] == ""
    assert message["content_type"] == "application/json"
    assert message["body"] == sent
    wire.validate_envelope(message["body"])


def test_exchange_is_declared_exactly_as_gemstone_declares_it() -> None:
    name = unique_event()
    transport = publisher()
    try:
        transport.emit_event(name, envelope(name))
        connection = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
        try:
            # The same declaration succeeds (a different one would be refused with 406)...
            connection.channel().exchange_declare(exchange=f"gemstone.broadcast.{name}", exchange_type="fanout",
                                                  durable=False, auto_delete=False)
            # ...and any other is refused: durable, auto-delete and type are all as gemstone's.
            for other in (dict(exchange_type="fanout", durable=True, auto_delete=False),
                          dict(exchange_type="fanout", durable=False, auto_delete=True),
                          dict(exchange_type="topic", durable=False, auto_delete=False)):
                with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                    connection.channel().exchange_declare(exchange=f"gemstone.broadcast.{name}", **other)
                assert info.value.reply_code == 406
        finally:
            connection.close()
    finally:
        transport.close()
        delete_exchange(name)


def test_publishing_before_any_consumer_declared_the_exchange_works() -> None:
    """gemstone's bug: its first publish to a missing exchange broke the channel."""
    name = unique_event()
    transport = publisher()
    try:
        transport.emit_event(name, envelope(name))  # nobody declared it: we do, before publishing
        with RawQueue([name], declare=False) as queue:  # binding needs the exchange to exist
            second = envelope(name, marker="second")
            transport.emit_event(name, second)
            assert [m["body"]["id"] for m in queue.get(1)] == [second["id"]]
    finally:
        transport.close()
        delete_exchange(name)


def test_batches_are_confirmed_and_arrive_in_order() -> None:
    name = unique_event()
    transport = publisher()
    sent = [envelope(name, n=i) for i in range(1000)]
    try:
        with RawQueue([name]) as queue:
            started = time.perf_counter()
            for i in range(0, len(sent), transport.max_batch):
                transport.emit_events([(name, e) for e in sent[i:i + transport.max_batch]])
            elapsed = time.perf_counter() - started
            got = queue.get(len(sent), timeout=30)
    finally:
        transport.close()
        delete_exchange(name)
    assert [m["body"]["data"]["n"] for m in got] == list(range(1000))
    print(f"\n1000 events with confirms in {elapsed:.3f}s = {1000 / elapsed:.0f} events/s")


def test_idle_longer_than_the_heartbeat_then_publish_is_still_delivered() -> None:
    name = unique_event()
    transport = publisher(RABBIT_URL + "?heartbeat=1")
    try:
        with RawQueue([name]) as queue:
            first, second = envelope(name, n=1), envelope(name, n=2)
            transport.emit_event(name, first)
            time.sleep(5)  # > 2 heartbeats with nothing servicing them: the broker drops the connection
            transport.emit_event(name, second)  # must not raise: reconnects transparently
            print("\nconnections made:", transport.reconnects)
            got = queue.get(2)
    finally:
        transport.close()
        delete_exchange(name)
    assert [m["body"]["id"] for m in got] == [first["id"], second["id"]]


def test_a_dropped_connection_is_replaced_and_a_refused_one_is_unavailable() -> None:
    name = unique_event()
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        transport = publisher(url_via(proxy.port))
        try:
            with RawQueue([name]) as queue:
                transport.emit_event(name, envelope(name, n=1))
                proxy.reset()
                transport.emit_event(name, envelope(name, n=2))  # the dead connection is replaced at once
                assert proxy.accepted == 2
                proxy.reset()
                proxy.refuse(True)
                with pytest.raises(TransportUnavailable):
                    transport.emit_event(name, envelope(name, n=3))
                proxy.refuse(False)
                transport.emit_event(name, envelope(name, n=4))
                got = [m["body"]["data"]["n"] for m in queue.get(3)]
        finally:
            transport.close()
            delete_exchange(name)
    assert got == [1, 2, 4]


def test_a_paused_broker_times_out_as_unavailable() -> None:
    name = unique_event()
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        transport = publisher(url_via(proxy.port, "socket_timeout=1"))
        try:
            transport.emit_event(name, envelope(name))
            proxy.pause()
            started = time.monotonic()
            with pytest.raises(TransportUnavailable):
                transport.emit_event(name, envelope(name))
            waited = time.monotonic() - started
            assert waited < 30
            proxy.resume()
            proxy.reset()
            transport.emit_event(name, envelope(name))
        finally:
            transport.close()
            delete_exchange(name)
    observed("RabbitMQ paused: connections hang", "a TCP proxy that stops forwarding; socket_timeout 1 s",
             f"the attempt gave up after {waited:.1f} s (TransportUnavailable, retried later), never hung; the next "
             "attempt after the proxy resumed reconnected", "0 (events stay queued)")


def test_refused_credentials_are_unavailable_and_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    transport = publisher(f"amqp://guest:{SECRET}@{RABBIT_HOST}:{RABBIT_PORT}/%2F")
    with pytest.raises(TransportUnavailable) as info:
        transport.emit_event(BLOCKED, envelope())
    transport.close()
    message = str(info.value)
    assert "refused the credentials" in message and "guest" in message
    assert SECRET not in message and SECRET not in repr(transport) and SECRET not in caplog.text
    observed("RabbitMQ refuses the credentials", "the test password for guest",
             "an outage with a clear message naming the user, retried with backoff; the password appears nowhere",
             "0 while queued")


def test_unresolvable_host_is_unavailable() -> None:
    transport = publisher("amqp://guest:guest@no-such-host.invalid:5672/%2F?socket_timeout=2")
    started = time.monotonic()
    with pytest.raises(TransportUnavailable):
        transport.emit_event(BLOCKED, envelope())
    assert time.monotonic() - started < 60
    transport.close()


# -- consuming ------------------------------------------------------------------


def raw_publish(name: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange=f"gemstone.broadcast.{name}", **rabbit_kit.GEMSTONE_EXCHANGE)
        channel.basic_publish(exchange=f"gemstone.broadcast.{name}", routing_key="", body=body,
                              properties=pika.BasicProperties(content_type="application/json"))
    finally:
        connection.close()


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_consumer_counts_malformed_messages_and_keeps_working() -> None:
    name = unique_event()
    consumer = factory(RABBIT_URL)
    received: List[Dict[str, Any]] = []
    consumer.register_event_handler(received.append, name)
    consumer.start_accepting_events()
    try:
        assert consumer.consumer_connects == 1
        raw_publish(name, b"not json at all")
        raw_publish(name, b'{"valid json": "but not an envelope"}')
        raw_publish(name, b"\xff\xfe")
        good = envelope(name)
        raw_publish(name, wire.encode(good))
        wait_for(lambda: received)
        assert received == [good]
        assert consumer.malformed == 3
    finally:
        consumer.stop_accepting_events()
        consumer.close()
        delete_exchange(name)


def test_star_handler_subscribes_to_the_four_gevent_events() -> None:
    consumer = factory(RABBIT_URL)
    consumer.register_event_handler(lambda e: None, "*")
    assert sorted(consumer.subscribed_event_names()) == sorted(wire.EVENT_NAMES)


def test_consumer_reconnects_and_resubscribes_after_a_dropped_connection() -> None:
    name = unique_event()
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        consumer = factory(url_via(proxy.port))
        received: List[Dict[str, Any]] = []
        consumer.register_event_handler(received.append, name)
        consumer.start_accepting_events()
        try:
            first = envelope(name, n=1)
            raw_publish(name, wire.encode(first))
            wait_for(lambda: len(received) == 1)
            proxy.reset()
            wait_for(lambda: consumer.consumer_connects >= 2)
            second = envelope(name, n=2)
            raw_publish(name, wire.encode(second))
            wait_for(lambda: len(received) == 2)
            assert received == [first, second]
            started = time.monotonic()
            consumer.stop_accepting_events()
            assert time.monotonic() - started < 2.5
        finally:
            consumer.stop_accepting_events()
            consumer.close()
            delete_exchange(name)


def test_a_restart_after_a_timed_out_stop_never_waits_for_the_stuck_thread() -> None:
    """stop() gives up on a thread stuck connecting; the next start() returns at once and consumes."""
    name = unique_event()
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        consumer = factory(url_via(proxy.port, "socket_timeout=4"))
        received: List[Dict[str, Any]] = []
        consumer.register_event_handler(received.append, name)
        proxy.pause()                                 # the handshake hangs: the thread is stuck connecting
        try:
            consumer.start_accepting_events(timeout=0)
            consumer.stop_accepting_events()          # gives up after 2 s; the thread is still connecting
            proxy.resume()
            started = time.monotonic()
            consumer.start_accepting_events(timeout=10)
            assert time.monotonic() - started < 10, "start() waited for the superseded thread"
            event = envelope(name, n=1)
            raw_publish(name, wire.encode(event))
            wait_for(lambda: received == [event])
        finally:
            proxy.resume()
            consumer.stop_accepting_events()
            consumer.close()
            delete_exchange(name)


# -- TLS (amqps) through a TLS terminator in front of the shared broker -----------


@pytest.fixture
def tls(tmp_path: Any) -> Any:
    from tests.brokers import require_program

    require_program("openssl")
    terminator = rabbit_kit.TlsTerminator(str(tmp_path))
    yield terminator
    terminator.close()


def test_amqps_verifies_the_broker_with_the_given_ca(tls: Any) -> None:
    name = unique_event()
    transport = publisher(f"amqps://guest:guest@localhost:{tls.port}/%2F?cafile={tls.ca}")
    try:
        with RawQueue([name]) as queue:
            sent = envelope(name)
            transport.emit_event(name, sent)
            assert [m["body"]["id"] for m in queue.get(1)] == [sent["id"]]
    finally:
        transport.close()
        delete_exchange(name)
    assert tls.handshakes == 1


def test_amqps_refuses_an_unknown_certificate_unless_verification_is_turned_off(tls: Any) -> None:
    name = unique_event()
    strict = publisher(f"amqps://guest:guest@localhost:{tls.port}/%2F")  # system CAs: our test CA is unknown
    with pytest.raises(TransportUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        strict.emit_event(name, envelope(name))
    strict.close()
    wrong_name = publisher(f"amqps://guest:guest@localhost:{tls.port}/%2F?cafile={tls.ca}"
                           "&server_hostname=rabbit.example")
    with pytest.raises(TransportUnavailable, match="Hostname mismatch"):
        wrong_name.emit_event(name, envelope(name))
    wrong_name.close()
    relaxed = publisher(f"amqps://guest:guest@localhost:{tls.port}/%2F?verify=false")
    try:
        relaxed.emit_event(name, envelope(name))
    finally:
        relaxed.close()
        delete_exchange(name)
    observed("amqps:// TLS handshake with an untrusted certificate or a wrong host name",
             "a TLS terminator with a throwaway CA in front of RabbitMQ",
             "refused (CERTIFICATE_VERIFY_FAILED, Hostname mismatch) unless cafile is given or verify=false opts "
             "out", "0 (an outage: events stay queued)")
