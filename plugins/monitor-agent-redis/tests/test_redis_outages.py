"""Outages against private redis-server instances: killed, paused, refusing passwords, TLS."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from typing import Any, Dict, List

import pytest
from ma_redis_kit import collect, fresh_agent, no_secret_leak, raw_client, subscribe, tls_material  # noqa: F401
from monitor_agent_redis import factory

from monitor_agent import TransportUnavailable, wire
from monitor_agent.transports.publisher import Publisher
from tests.brokers import RedisServer, TcpProxy
from tests.helpers import CAPTURED, SECRET, clean_environ
from tests.reliability._record import observed


def envelope(n: int) -> Dict[str, Any]:
    return wire.build_envelope("gevent.test_tick", {"n": n}, service="redis-outage-tests")


def wait_until_subscribed(transport: Any, url: str, channel: str) -> None:
    """Wait (up to 10 s) until *transport*'s consumer is subscribed to *channel* on the server at *url*."""
    client = raw_client(url)
    try:
        deadline = time.monotonic() + 10
        while transport.consumer_connects < 1 or client.pubsub_numsub(channel)[0][1] < 1:
            assert time.monotonic() < deadline, "the consumer never subscribed"
            time.sleep(0.02)
    finally:
        client.close()


# An event the agent publishes like its own: a wire name and wire data.
TICK = """
    class Tick:
        event_name = "gevent.test_tick"
        def __init__(self, n):
            self.n = n
        def wire_data(self):
            return {"n": self.n}
"""

OUTAGE_APP = """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent
    import monitor_agent

    agent = monitor_agent.install(transports=sys.argv[1], queue_size=50, max_blocking_time=1.0)
    gaps = []

    def heartbeat():
        hub = gevent.get_hub()
        last = hub.loop.now()
        while True:
            gevent.sleep(0.01)
            hub.loop.update_now()
            gaps.append(hub.loop.now() - last)
            last = hub.loop.now()

    {TICK}

    beat = gevent.spawn(heartbeat)
    gevent.sleep(0.2)
    print("ready", flush=True)
    n = 0
    while sys.stdin.readline().strip() == "more":  # the test paces the phases
        for _ in range(200):
            agent.emit(Tick(n))
            n += 1
            gevent.sleep(0.005)
        print("done", n, flush=True)
    flushed = agent.flush(15)
    beat.kill()
    stats = list(agent.stats()["transports"].values())[0]
    print(json.dumps({"submitted_by_app": n, "flushed": flushed, "max_gap": max(gaps), "stats": stats}), flush=True)
""".replace("    {TICK}\n", TICK)


def test_a_killed_and_restarted_server_costs_queued_events_only() -> None:
    """The app reaches the server through a proxy, which keeps it out until the test's subscriber is back.

    (The publisher retries by itself: without the proxy, the first envelope after
    the restart, the one carrying ``dropped_before``, could go out before the
    new subscriber is attached.)
    """
    with RedisServer() as server, TcpProxy("127.0.0.1", server.port) as proxy:
        app = subprocess.Popen([sys.executable, "-c", textwrap.dedent(OUTAGE_APP),
                                f"redis://127.0.0.1:{proxy.port}/0"], env=clean_environ(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert app.stdin is not None and app.stdout is not None
        try:
            assert app.stdout.readline().strip() == "ready"
            before = subscribe(["gevent.test_tick"], server.url())

            def phase() -> None:
                app.stdin.write("more\n")
                app.stdin.flush()
                assert app.stdout.readline().startswith("done")

            phase()  # 200 events with the server up
            first = collect(before, 200, timeout=10)
            server.kill()  # SIGKILL mid-stream
            phase()  # 200 events into a 50-event queue while it is down: drops
            proxy.refuse(True)  # the app stays out while the server restarts and the subscriber attaches
            server.start()  # same port
            after = subscribe(["gevent.test_tick"], server.url())
            proxy.refuse(False)  # the queued events and the next ones go through now
            phase()  # delivery resumes
            app.stdin.write("stop\n")
            app.stdin.flush()
            out, err = app.communicate(timeout=60)
        finally:
            if app.poll() is None:
                app.kill()
        CAPTURED.extend([out, err])
        assert app.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        stats = report["stats"]
        resumed = collect(after, 400, timeout=10)
    assert len(first) == 200
    assert report["flushed"] is True, report
    accounted = stats["sent"] + stats["failed"] + sum(stats["dropped"].values())
    assert accounted == stats["submitted"] == 600, stats
    assert stats["dropped"]["queue_full"] > 0 and stats["retries"] > 0, stats
    assert resumed, "delivery did not resume after the restart"
    # The first envelope after the outage tells what was missed (later ones only if more were dropped since).
    assert resumed[0][1].get("dropped_before", 0) >= 1, resumed[0]
    told = sum(body.get("dropped_before", 0) for _, body in resumed)
    assert 1 <= told <= sum(stats["dropped"].values()), (told, stats)
    assert max(body["data"]["n"] for _, body in resumed) == 599
    assert report["max_gap"] < 1.0, report  # generous: the loop never waited on Redis
    observed("Redis killed (SIGKILL) mid-stream, restarted on the same port",
             "own redis-server; 200 events up, 200 while down (queue of 50), 200 after the restart",
             f"retried with backoff ({stats['retries']} retries), resumed by itself, dropped_before on the next "
             f"envelope; app heartbeat max gap {report['max_gap'] * 1000:.0f} ms; sent + failed + dropped = 600",
             f"{stats['dropped']['queue_full']} dropped (queue_full, counted), {stats['failed']} failed")


def test_a_paused_server_times_out_instead_of_hanging() -> None:
    with RedisServer() as server:
        transport = factory(server.url() + "?socket_timeout=0.5&connect_timeout=0.5")
        transport.prepare()
        transport.emit_event("gevent.test_tick", envelope(1))
        server.pause()
        try:
            for _ in range(2):  # the broken connection, then a new one whose handshake gets no reply
                started = time.monotonic()
                with pytest.raises(TransportUnavailable, match="unreachable"):
                    transport.emit_event("gevent.test_tick", envelope(2))
                assert time.monotonic() - started < 5.0
        finally:
            server.resume()
        transport.emit_event("gevent.test_tick", envelope(3))
        assert transport.connects == 2
        transport.close()
    observed("Redis paused (SIGSTOP): connections hang", "own redis-server, socket_timeout 0.5 s",
             "each attempt gave up within its timeout (TransportUnavailable, retried later), never hung; "
             "reconnected after SIGCONT", "0 (events stay queued while it is down)")


def test_a_wrong_password_is_an_outage_with_a_clear_message_and_no_leak(caplog: Any) -> None:
    with RedisServer(password="the-right-one") as server:
        transport = factory(f"redis://:{SECRET}@127.0.0.1:{server.port}/0?socket_timeout=1")
        with pytest.raises(TransportUnavailable) as info:
            transport.prepare()
            transport.emit_event("gevent.test_tick", envelope(1))
        assert "authentication failed" in str(info.value) and ":***@" in str(info.value)
        publisher = Publisher(transport, queue_size=10, backoff_base=0.01, backoff_cap=0.05)
        publisher.start()
        for n in range(5):
            publisher.submit("gevent.test_tick", envelope(n))
        deadline = time.monotonic() + 5
        while publisher.retries < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        publisher.close(0.2)
        stats = publisher.stats()
    assert stats["retries"] >= 3 and stats["sent"] == 0
    assert stats["sent"] + stats["failed"] + sum(stats["dropped"].values()) == stats["submitted"] == 5
    assert "authentication failed" in stats["last_error"]
    for text in (repr(transport), str(stats), caplog.text):
        assert SECRET not in text
    observed("Redis refuses the password", "own redis-server with requirepass; the test password in the URL",
             "an outage with a clear message ('authentication failed', URL shown as :***@), retried with backoff; "
             "the password appears nowhere", f"{sum(stats['dropped'].values())} of 5 dropped at close, counted")


def test_a_password_for_a_server_without_one_is_an_auth_outage() -> None:
    with RedisServer() as server:
        transport = factory(f"redis://:{SECRET}@127.0.0.1:{server.port}/0")
        transport.prepare()
        with pytest.raises(TransportUnavailable, match="authentication failed") as info:
            transport.emit_event("gevent.test_tick", envelope(1))
        assert SECRET not in str(info.value)


def test_the_right_password_works(caplog: Any) -> None:
    with RedisServer(password=SECRET) as server:
        pubsub = subscribe(["gevent.test_tick"], server.url())
        transport = factory(server.url())
        transport.prepare()
        transport.emit_event("gevent.test_tick", envelope(7))
        assert collect(pubsub, 1)[0][1]["data"] == {"n": 7}
        assert SECRET not in repr(transport) and SECRET not in caplog.text


def test_an_unresolvable_name_is_an_outage() -> None:
    transport = factory("redis://no-such-host.invalid:6379/0?connect_timeout=1")
    transport.prepare()
    started = time.monotonic()
    with pytest.raises(TransportUnavailable, match=r"no-such-host\.invalid"):
        transport.emit_event("gevent.test_tick", envelope(1))
    assert time.monotonic() - started < 30  # the resolver's own timeouts; generous
    observed("Redis host name that does not resolve", "redis://no-such-host.invalid:6379/0",
             "TransportUnavailable naming the host; retried with backoff in the publisher thread", "0 while queued")


def test_a_unix_socket_url_with_a_database(tmp_path: Any) -> None:
    import redis

    with RedisServer() as server:  # for its binary; this test starts its own unix-socket-only server
        socket_path = str(tmp_path / "redis.sock")
        server_unix = subprocess.Popen([server.binary, "--port", "0", "--unixsocket", socket_path, "--save", "",
                                        "--appendonly", "no", "--dir", str(tmp_path)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        transport = factory(f"unix://{socket_path}?db=5&client_name=ma-unix-test")
        probe = None
        try:
            deadline = time.monotonic() + 10
            while not (tmp_path / "redis.sock").exists():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            got: List[Dict[str, Any]] = []
            transport.register_event_handler(got.append, "gevent.test_tick")
            transport.start_accepting_events()
            transport.emit_event("gevent.test_tick", envelope(5))  # prepare() ran in start_accepting_events
            deadline = time.monotonic() + 5
            while not got:
                assert time.monotonic() < deadline, "nothing received over the unix socket"
                transport.emit_event("gevent.test_tick", envelope(5))
                time.sleep(0.1)
            probe = redis.Redis(unix_socket_path=socket_path, socket_timeout=5)
            ours = [c for c in probe.client_list() if c.get("name") == "ma-unix-test"]
        finally:
            transport.close()
            if probe is not None:
                probe.close()
            server_unix.kill()
            server_unix.wait(10)
    assert got[0]["data"] == {"n": 5}
    assert len(ours) == 2, ours  # the publisher's connection and the consumer's
    assert {c["db"] for c in ours} == {"5"}, ours


def test_the_consumer_resubscribes_after_a_restart() -> None:
    with RedisServer() as server:
        transport = factory(server.url() + "?socket_timeout=1&health_check_interval=1")
        got: List[int] = []
        transport.register_event_handler(lambda body: got.append(body["data"]["n"]), "gevent.test_tick")
        transport.start_accepting_events()
        publisher = factory(server.url())
        publisher.prepare()
        try:
            for n in (1, 2):
                deadline = time.monotonic() + 15
                while n not in got:
                    assert time.monotonic() < deadline, f"event {n} never arrived (consumer did not resubscribe)"
                    try:
                        publisher.emit_event("gevent.test_tick", envelope(n))
                    except TransportUnavailable:
                        pass
                    time.sleep(0.2)
                if n == 1:
                    server.restart()
        finally:
            transport.stop_accepting_events()
        assert transport.consumer_connects >= 2


def test_the_consumer_notices_a_paused_server_through_its_ping() -> None:
    with RedisServer() as server:
        transport = factory(server.url() + "?socket_timeout=0.5&health_check_interval=0.5")
        transport.register_event_handler(lambda body: None, "gevent.test_tick")
        transport.start_accepting_events()
        try:
            wait_until_subscribed(transport, server.url(), "gevent.test_tick")
            server.pause()
            time.sleep(3)  # a PING goes unanswered: the consumer reconnects (and times out again)
            server.resume()
            deadline = time.monotonic() + 10
            while transport.consumer_connects < 2:
                assert time.monotonic() < deadline, "the consumer never noticed the stalled connection"
                time.sleep(0.1)
        finally:
            transport.stop_accepting_events()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: Any) -> Any:
    return tls_material(str(tmp_path_factory.mktemp("tls")))


def test_rediss_verifies_the_server_by_default(tls_files: Any) -> None:
    cert, key, ca = tls_files
    with RedisServer(tls=(cert, key, ca)) as server:
        base = server.url()
        assert base.startswith("rediss://")
        good = factory(f"{base}?ssl_ca_certs={ca}")
        got: List[int] = []
        good.register_event_handler(lambda body: got.append(body["data"]["n"]), "gevent.test_tick")
        good.start_accepting_events()
        try:
            deadline = time.monotonic() + 10
            while not got:
                assert time.monotonic() < deadline, "nothing arrived over TLS"
                good.emit_event("gevent.test_tick", envelope(1))
                time.sleep(0.1)
        finally:
            good.close()
        unverified = factory(base + "?connect_timeout=2")  # no CA: the system store does not know ours
        unverified.prepare()
        with pytest.raises(TransportUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            unverified.emit_event("gevent.test_tick", envelope(2))
        opted_out = factory(base + "?ssl_cert_reqs=none")
        opted_out.prepare()
        opted_out.emit_event("gevent.test_tick", envelope(3))
    observed("rediss:// TLS handshake with an untrusted certificate", "own redis-server with a throwaway CA",
             "refused (CERTIFICATE_VERIFY_FAILED) unless the CA is given or ssl_cert_reqs=none opts out",
             "0 (an outage: events stay queued)")


def test_tls_socket_reads_into_buffers_and_reports_pending(tls_files: Any) -> None:
    """recv_into() and pending() decrypt (a parser using them must not see the raw, encrypted socket)."""
    cert, key, ca = tls_files
    with RedisServer(tls=(cert, key, ca)) as server:
        transport = factory(f"{server.url()}?ssl_ca_certs={ca}")
        transport.prepare()
        transport.emit_event("gevent.test_tick", envelope(1))  # connects
        sock = transport._connection()._sock
        assert type(sock).__name__ == "TlsSocket"
        sock.sendall(b"PING\r\nPING\r\n")
        buffer = bytearray(3)
        assert sock.recv_into(buffer) == 3 and bytes(buffer) == b"+PO"
        assert sock.pending() > 0  # the rest of the decrypted record waits in the TLS object
        rest = bytearray(64)
        received = bytes(rest[:sock.recv_into(rest, 4)])
        assert received == b"NG\r\n"
        while len(received) < 11:
            received += sock.recv(64)
        assert received == b"NG\r\n+PONG\r\n"
        transport.close()


TLS_PATCHED_APP = """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent
    from gevent._hub_local import get_hub_if_exists
    import monitor_agent

    agent = monitor_agent.install(transports=sys.argv[1])
    transport = agent.transports[0]
    consumer = type(transport)(transport.url, transport.settings)
    got, hubs = [], []

    def on_tick(body):
        hubs.append(get_hub_if_exists() is not None)
        got.append(body["data"]["n"])

    consumer.register_event_handler(on_tick, "gevent.test_tick")
    consumer.start_accepting_events()

    {TICK}

    for _ in range(100):
        if got:
            break
        agent.emit(Tick(len(got)))
        gevent.sleep(0.1)
    agent.flush(10)
    consumer.stop_accepting_events()
    print(json.dumps({"got": len(got), "consumer_hub": any(hubs), "socket": type(transport._conn._sock).__name__,
                      "sent": list(agent.stats()["transports"].values())[0]["sent"]}))
""".replace("    {TICK}\n", TICK)


def test_rediss_after_patch_all_uses_tls_over_real_sockets(tls_files: Any) -> None:
    from tests.helpers import run_python

    cert, key, ca = tls_files
    with RedisServer(tls=(cert, key, ca)) as server:
        result = run_python(TLS_PATCHED_APP, args=[f"{server.url()}?ssl_ca_certs={ca}"], timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["got"] >= 1 and report["sent"] >= 1, report
    assert report["socket"] == "TlsSocket" and report["consumer_hub"] is False, report
