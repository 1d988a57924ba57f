"""Broker faults against a real application: the loop never waits on a broker, nothing is lost silently.

One gevent application (a subprocess, driven line by line over stdin) publishes
through the real Redis or RabbitMQ plugin while the test breaks the broker:
Redis runs as the test's own ``redis-server`` (killed with SIGKILL, restarted on
the same port, frozen with SIGSTOP); RabbitMQ sits behind a TCP proxy the test
controls (connections reset, new ones refused, traffic frozen). An independent
subscriber (plain redis-py or pika, not our transport) counts what arrives.

The promises, with T = 200 ms:

* the application's own heartbeat greenlet (every 10 ms) never waits longer
  than T, and the agent's detector (the same threshold) reports no block;
* no exception reaches the application, and it exits within the flush deadline
  even while the broker is down;
* delivery resumes by itself, the first envelope after a gap says how many were
  dropped, and per transport ``sent + failed + dropped == submitted``.
"""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

from ..brokers import RABBIT_HOST, RABBIT_PORT, RedisServer, TcpProxy, require_broker
from ..helpers import CAPTURED, PYTHON, SECRET, clean_environ
from ._record import observed

T = 0.2
EVENT = "gevent.memory_threshold_exceeded"

APP = """
import json, sys, time
import gevent, gevent.fileobject
import monitor_agent
from monitor_agent.events import MemoryUsageThresholdExceeded

agent = monitor_agent.install(transports=sys.argv[1], max_blocking_time=T_VALUE, queue_size=100, flush_timeout=2)
url = agent.transports[0].describe()
gaps = [0.0]

def heartbeat():
    last = time.perf_counter()
    while True:
        gevent.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now

def report(**extra):
    stats = agent.stats()
    print(json.dumps(dict(extra, stats=stats["transports"][url], max_gap=max(gaps),
                          episodes=stats["blocking"]["episodes"], lag_max=stats["blocking"]["loop_lag"]["max"])),
          flush=True)

def drain(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        s = agent.stats()["transports"][url]
        if not s["queued"] and not s["in_flight"]:
            return True
        gevent.sleep(0.01)
    return False

gevent.spawn(heartbeat)
stdin = gevent.fileobject.FileObjectPosix(sys.stdin, "rb")
n = 0
print("ready", flush=True)
for line in stdin:
    command, *args = line.decode().split()
    if command == "emit":
        for _ in range(int(args[0])):
            agent.emit(MemoryUsageThresholdExceeded(n, 1, None))
            n += 1
            gevent.sleep(0.001)
        report()
    elif command == "drain":
        report(drained=drain(float(args[0])))
    elif command == "quit":            # what interpreter exit does (atexit), timed
        started = time.monotonic()
        delivered = monitor_agent.uninstall()
        report(delivered=delivered, uninstall_took=time.monotonic() - started)
        break
""".replace("T_VALUE", repr(T))


class App:
    """The application under test, one command at a time."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([PYTHON, "-c", APP, url], env=clean_environ(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def ask(self, command: str) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the application died: {self.proc.stderr.read() if self.proc.stderr else ''}"
        return json.loads(line)

    def quit(self) -> tuple[Dict[str, Any], float, str]:
        """Ask it to shut the agent down and exit; return its last report, how long that took, its stderr."""
        started = time.monotonic()
        last = self.ask("quit")
        out, err = self.proc.communicate(timeout=60)
        CAPTURED.extend([out, err])
        return last, time.monotonic() - started, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class RedisSubscriber:
    """A plain redis-py subscriber on the bare event name (gemstone's way)."""

    def __init__(self, port: int) -> None:
        import redis

        self.client = redis.Redis(port=port, protocol=2)
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(EVENT)
        self.pubsub.get_message(timeout=5)  # the subscribe confirmation

    def drain(self, timeout: float = 5.0) -> List[Dict[str, Any]]:
        bodies, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.5)
            if message is None:
                if bodies:
                    break
                continue
            if message["type"] == "message":
                bodies.append(json.loads(message["data"]))
        return bodies


class RabbitSubscriber:
    """A plain pika consumer: an exclusive queue bound to gemstone's fanout exchange."""

    def __init__(self) -> None:
        import pika

        self.connection = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
        self.channel = self.connection.channel()
        exchange = f"gemstone.broadcast.{EVENT}"
        self.channel.exchange_declare(exchange, exchange_type="fanout", durable=False, auto_delete=False)
        self.queue = self.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.channel.queue_bind(self.queue, exchange)

    def drain(self, timeout: float = 5.0) -> List[Dict[str, Any]]:
        bodies, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, _, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                if bodies:
                    break
                self.connection.sleep(0.1)
                continue
            bodies.append(json.loads(body))
        return bodies

    def close(self) -> None:
        self.connection.close()


def _short(text: str, limit: int = 110) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_never_stalled(report: Dict[str, Any]) -> None:
    assert report["max_gap"] < T, f"the app's heartbeat waited {report['max_gap']:.3f}s"
    assert report["episodes"] == 0, "the agent saw its own loop blocked"


def check_accounted(report: Dict[str, Any], emitted: int) -> Dict[str, Any]:
    stats = report["stats"]
    assert stats["submitted"] == emitted
    assert stats["sent"] + stats["failed"] + sum(stats["dropped"].values()) == emitted, stats
    return stats


def check_recovery(app: App, received: Callable[[], List[Dict[str, Any]]], wait: float) -> int:
    """After 50 sent and 300 emitted during an outage: delivery resumes by itself and all 370 add up.

    Returns the ``dropped_before`` total the subscriber saw after the gap.
    """
    assert app.ask(f"drain {wait}")["drained"], "delivery did not resume by itself"
    app.ask("emit 20")
    after = app.ask(f"drain {wait}")
    resumed = received()
    check_never_stalled(after)
    stats = check_accounted(after, 370)
    assert stats["dropped"]["queue_full"] >= 300 - 101 and stats["retries"] > 0  # queue of 100, 1 in flight
    assert resumed and resumed[-1]["data"]["mem_usage"] == 369
    return sum(body.get("dropped_before", 0) for body in resumed)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_redis_killed_restarted_and_frozen(redis_server: RedisServer) -> None:
    """SIGKILL mid-stream, restart on the same port, then SIGSTOP: the app never notices."""
    subscriber = RedisSubscriber(redis_server.port)
    app = App(redis_server.url() + "?socket_timeout=0.5&connect_timeout=0.5")
    try:
        app.ask("emit 50")
        assert app.ask("drain 10")["drained"]
        assert len(subscriber.drain()) == 50

        redis_server.kill()                       # crash mid-stream
        during = app.ask("emit 300")              # into a queue of 100: the oldest are dropped
        check_never_stalled(during)
        redis_server.start()                      # same port
        subscriber = RedisSubscriber(redis_server.port)
        gap_reported = check_recovery(app, subscriber.drain, wait=30)

        redis_server.pause()                      # frozen: connections hang
        frozen = app.ask("emit 30")
        time.sleep(1.5)                           # several socket timeouts
        frozen = app.ask("emit 1")
        check_never_stalled(frozen)
        redis_server.resume()
        assert app.ask("drain 30")["drained"]

        redis_server.kill()                       # and exit while it is down
        app.ask("emit 10")
        last, exit_took, stderr = app.quit()
    finally:
        app.kill()
    check_never_stalled(last)
    check_accounted(last, 411)
    assert last["uninstall_took"] < 2 + 1, "shutdown waits at most the flush deadline (2 s)"
    assert exit_took < 2 + 5, "and the process then exits"
    assert "Traceback" not in stderr and SECRET not in stderr
    observed("Redis killed (SIGKILL) mid-stream, restarted, frozen (SIGSTOP), down at exit",
             "own redis-server; a real app publishing 411 events through redis://, queue of 100, T = 200 ms",
             f"app heartbeat max gap {last['max_gap'] * 1000:.0f} ms, no block reported, agent lag max "
             f"{last['lag_max'] * 1000:.0f} ms; delivery resumed by itself (dropped_before = {gap_reported} on the "
             f"first envelope after the gap); shutdown took {last['uninstall_took']:.1f} s with Redis down "
             "(flush deadline 2 s)",
             f"{last['stats']['dropped']['queue_full']} dropped (queue_full) + {last['stats']['dropped']['shutdown']} "
             f"at exit, {last['stats']['failed']} failed; sent + failed + dropped = submitted")


def test_rabbitmq_reset_refused_and_frozen() -> None:
    """Connections reset and refused, then traffic frozen, through a proxy in front of the shared RabbitMQ."""
    require_broker("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    subscriber = RabbitSubscriber()
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        app = App(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F?socket_timeout=1&heartbeat=5")
        try:
            app.ask("emit 50")
            assert app.ask("drain 20")["drained"]
            assert len(subscriber.drain()) == 50

            proxy.reset()                         # drop the live connection…
            proxy.refuse(True)                    # …and refuse new ones
            during = app.ask("emit 300")
            check_never_stalled(during)
            proxy.refuse(False)
            gap_reported = check_recovery(app, subscriber.drain, wait=60)

            proxy.pause()                         # frozen
            app.ask("emit 30")
            time.sleep(2.5)
            frozen = app.ask("emit 1")
            check_never_stalled(frozen)
            proxy.resume()
            proxy.reset()                         # the frozen connection is beyond saving
            assert app.ask("drain 60")["drained"]

            proxy.refuse(True)                    # and exit while it is unreachable
            proxy.reset()
            app.ask("emit 10")
            last, exit_took, stderr = app.quit()
        finally:
            app.kill()
            subscriber.close()
    check_never_stalled(last)
    check_accounted(last, 411)
    assert last["uninstall_took"] < 2 + 1, "shutdown waits at most the flush deadline (2 s)"
    assert exit_took < 2 + 5, "and the process then exits"
    assert "Traceback" not in stderr
    observed("RabbitMQ connection reset, refused, frozen, unreachable at exit",
             "a TCP proxy in front of RabbitMQ; a real app publishing 411 events through amqp://, queue of 100, "
             "T = 200 ms", f"app heartbeat max gap {last['max_gap'] * 1000:.0f} ms, no block reported; reconnected "
             f"and redeclared by itself (dropped_before = {gap_reported} after the gap); shutdown took "
             f"{last['uninstall_took']:.1f} s with the broker unreachable (flush deadline 2 s)",
             f"{last['stats']['dropped']['queue_full']} dropped (queue_full) + {last['stats']['dropped']['shutdown']} "
             f"at exit, {last['stats']['failed']} failed; sent + failed + dropped = submitted")


@pytest.mark.parametrize("fault", ["redis-auth", "redis-dns", "rediss-handshake", "amqp-auth", "amqp-dns",
                                   "amqps-handshake"])
def test_a_destination_that_never_works(fault: str, redis_server: RedisServer) -> None:
    """Refused credentials, a name that does not resolve, a TLS handshake that fails: costs events, never time."""
    if fault.startswith("amqp"):
        require_broker("RabbitMQ", RABBIT_HOST, RABBIT_PORT)
    url = {
        "redis-auth": f"redis://:{SECRET}@127.0.0.1:{redis_server.port}/0",     # the server wants no password
        "redis-dns": "redis://no-such-host.invalid:6379/0?connect_timeout=1",
        "rediss-handshake": f"rediss://127.0.0.1:{redis_server.port}/0?connect_timeout=1&socket_timeout=1",
        "amqp-auth": f"amqp://guest:{SECRET}@{RABBIT_HOST}:{RABBIT_PORT}/%2F",
        "amqp-dns": "amqp://guest:guest@no-such-host.invalid:5672/%2F?socket_timeout=1",
        "amqps-handshake": f"amqps://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F?socket_timeout=1",
    }[fault]
    app = App(url)
    try:
        app.ask("emit 30")
        time.sleep(1.5)                           # a few attempts and backoffs
        report = app.ask("emit 1")
        last, _, stderr = app.quit()
    finally:
        app.kill()
    check_never_stalled(report)
    check_never_stalled(last)
    stats = check_accounted(last, 31)
    assert stats["sent"] == 0 and stats["retries"] >= 1 and stats["last_error"]
    assert last["uninstall_took"] < 2 + 1
    assert "Traceback" not in stderr and SECRET not in stderr + json.dumps(last)
    observed(f"{fault.split('-')[0]}: " + {"auth": "credentials refused", "dns": "host name does not resolve",
                                           "handshake": "TLS handshake fails (plain server)"}[fault.split("-")[1]],
             url.replace(SECRET, "<test password>"),
             f"an outage, retried with backoff ({stats['retries']} attempts): '{_short(stats['last_error'])}'; app "
             f"heartbeat max gap {last['max_gap'] * 1000:.0f} ms; shutdown in {last['uninstall_took']:.1f} s",
             f"31 of 31 counted ({sum(stats['dropped'].values())} dropped at shutdown), none silently")
