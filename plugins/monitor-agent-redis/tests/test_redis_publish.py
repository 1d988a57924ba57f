"""Publishing and consuming against the shared Redis, checked by independent redis-py subscribers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

from ma_redis_kit import collect, fresh_agent, no_secret_leak, raw_client, shared_redis, subscribe  # noqa: F401 - autouse fixtures
from monitor_agent_redis import factory

from monitor_agent import wire
from tests.helpers import CAPTURED, clean_environ, run_python


def unique_name() -> str:
    return f"gevent.test_{os.getpid()}_{time.monotonic_ns()}"


def envelope(name: str, **data: Any) -> Dict[str, Any]:
    return wire.build_envelope(name, data, service="redis-plugin-tests")


def test_publish_reaches_a_plain_subscriber_on_the_bare_channel() -> None:
    url = shared_redis()
    name = unique_name()
    pubsub = subscribe([name])
    transport = factory(url)
    transport.prepare()
    body = envelope(name, text="héllo", blocking_time=0.25)
    transport.emit_event(name, body)
    [(channel, received)] = collect(pubsub, 1)
    assert channel == name
    assert received == json.loads(json.dumps(body))
    transport.close()


def test_gemstone_style_consumer_decodes_our_events() -> None:
    """gemstone's RedisEventTransport: SUBSCRIBE to the bare name, json.loads of the payload, call the handler."""
    url = shared_redis()
    name = unique_name()
    seen: List[Dict[str, Any]] = []
    handlers = {name: lambda data: seen.append(json.loads(data))}
    pubsub = subscribe(list(handlers))
    stop = threading.Event()

    def consume() -> None:  # gemstone's loop: the payload goes through json.loads to the handler
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message and message["type"] == "message":
                handlers[message["channel"].decode()](message["data"])

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    try:
        transport = factory(url)
        transport.prepare()
        transport.emit_event(name, envelope(name, n=1))
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(5)
    assert [body["data"] for body in seen] == [{"n": 1}]
    assert seen[0]["event"] == name and seen[0]["schema"] == 1


def test_a_batch_is_one_round_trip_and_keeps_order() -> None:
    url = shared_redis()
    name = unique_name()
    pubsub = subscribe([name])
    transport = factory(url)
    transport.prepare()
    assert transport.max_batch == 32
    transport.emit_event(name, envelope(name, i=-1))  # connect (the handshake is several writes)
    assert collect(pubsub, 1)[0][1]["data"] == {"i": -1}
    conn = transport._connection()
    writes: List[int] = []
    original = conn.send_packed_command

    def counting_send(command: Any, *args: Any, **kwargs: Any) -> Any:
        writes.append(1)
        return original(command, *args, **kwargs)

    conn.send_packed_command = counting_send
    transport.emit_events([(name, envelope(name, i=i)) for i in range(256)])
    assert len(writes) == 1
    received = collect(pubsub, 256)
    assert [body["data"]["i"] for _, body in received] == list(range(256))


def test_consumer_receives_and_survives_malformed_messages() -> None:
    url = shared_redis()
    name = unique_name()
    transport = factory(url)
    got: List[Dict[str, Any]] = []
    transport.register_event_handler(got.append, name)
    transport.start_accepting_events()
    try:
        client = raw_client()
        deadline = time.monotonic() + 5
        while client.pubsub_numsub(name)[0][1] < 1:
            assert time.monotonic() < deadline, "the consumer never subscribed"
            time.sleep(0.02)
        for junk in (b"not json", b"\xff\xfe\x00", b"[1, 2, 3]", b'{"a": NaN}', b"{" * 100000,
                     b'{"x": "' + b"a" * (wire.MAX_INBOUND_BYTES + 1) + b'"}'):
            client.publish(name, junk)
        client.publish(name, json.dumps({"ok": 1, "text": "é"}).encode())
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        transport.stop_accepting_events()
    assert got == [{"ok": 1, "text": "é"}]
    assert transport.malformed == 6
    assert transport.received == 1


def test_a_star_handler_subscribes_to_every_gevent_event() -> None:
    url = shared_redis()
    transport = factory(url)
    got: List[Dict[str, Any]] = []
    marker = unique_name()
    transport.register_event_handler(lambda body: got.append(body) if body.get("marker") == marker else None, "*")
    assert transport.subscriptions() == ([], ["gevent.*"])
    transport.start_accepting_events()
    try:
        client = raw_client()
        deadline = time.monotonic() + 5
        while client.pubsub_numpat() < 1 or not got:
            client.publish("gevent.anything_at_all", json.dumps({"marker": marker}))
            assert time.monotonic() < deadline, "nothing arrived through the pattern subscription"
            time.sleep(0.1)
    finally:
        transport.stop_accepting_events()
    assert got[0] == {"marker": marker}


def test_stop_accepting_events_is_prompt() -> None:
    url = shared_redis()
    transport = factory(url)
    transport.register_event_handler(lambda body: None, unique_name())
    transport.start_accepting_events()
    time.sleep(0.3)
    started = time.monotonic()
    transport.stop_accepting_events()
    assert time.monotonic() - started < 2.0
    assert transport._consumer is None


def test_restarting_the_consumer_after_a_timed_out_stop_does_not_wait_for_the_old_thread() -> None:
    url = shared_redis()
    name = unique_name()
    transport = factory(url + "?socket_timeout=0.5")
    got: List[int] = []
    transport.register_event_handler(lambda body: got.append(body["n"]), name)
    connecting, gate = threading.Event(), threading.Event()  # hold the first thread in connect(), like a hung server
    make_connection = transport._new_connection

    def held_connection(settings: Any) -> Any:
        conn = make_connection(settings)
        connect = conn.connect

        def held_connect() -> None:
            connecting.set()
            gate.wait(30)
            connect()

        conn.connect = held_connect
        return conn

    transport._new_connection = held_connection  # type: ignore[method-assign]
    transport.start_accepting_events()
    old_run = transport._consumer
    assert old_run is not None
    transport._new_connection = make_connection  # type: ignore[method-assign]
    try:
        assert connecting.wait(10), "the consumer thread never connected"
        transport.stop_accepting_events()  # gives up after 1 s + socket_timeout: the thread is still connecting
        assert not old_run.done.acquire(False), "the old thread should still be connecting"
        restarted = threading.Thread(target=transport.start_accepting_events, daemon=True)
        restarted.start()
        restarted.join(5)
        assert not restarted.is_alive(), "start_accepting_events() waited for the superseded thread"
        client = raw_client()
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline, "the restarted consumer received nothing"
            client.publish(name, json.dumps({"n": 1}))
            time.sleep(0.1)
        gate.set()  # the old thread's connect() completes now: it must notice it was superseded and exit
        assert old_run.done.acquire(True, 10), "the superseded thread never exited"
        time.sleep(0.3)
        assert transport.consumer_connects == 1, "the superseded thread subscribed too"
    finally:
        gate.set()
        transport.stop_accepting_events()


BLOCKING_APP = """
    import time
    import gevent
    import monitor_agent
    from gevent.monkey import get_original
    monitor_agent.install()
    gevent.sleep(0.3)
    get_original("time", "sleep")(0.6)  # blocks the loop
    gevent.sleep(0.3)
    monitor_agent.uninstall(timeout=10)
"""


def test_a_blocked_loop_arrives_at_an_independent_subscriber() -> None:
    url = shared_redis()
    pubsub = subscribe(["gevent.event_loop_blocked", "gevent.event_loop_unblocked"])
    proc = subprocess.Popen([sys.executable, "-c", __import__("textwrap").dedent(BLOCKING_APP)],
                            env=clean_environ(MONITOR_AGENT_TRANSPORTS=url,
                                              MONITOR_AGENT_MAX_BLOCKING_TIME="0.1",
                                              MONITOR_AGENT_SERVICE="redis-e2e"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    CAPTURED.extend([out, err])
    assert proc.returncode == 0, err
    received = [(c, b) for c, b in collect(pubsub, 50, timeout=3) if b["source"]["pid"] == proc.pid]
    channels = [c for c, _ in received]
    # The 0.6 s block; shorter episodes (start-up) may come before it.
    long_ends = [i for i, (c, b) in enumerate(received)
                 if c == "gevent.event_loop_unblocked" and b["data"]["blocking_time"] >= 0.5]
    assert long_ends, (channels, err)
    end = long_ends[0]
    starts = [i for i in range(end) if channels[i] == "gevent.event_loop_blocked"]
    assert starts, (channels, err)
    blocked, unblocked = received[starts[-1]][1], received[end][1]
    for body in (blocked, unblocked):
        wire.validate_envelope(body)
        assert body["source"]["service"] == "redis-e2e"
    assert blocked["event"] == "gevent.event_loop_blocked"
    assert unblocked["event"] == "gevent.event_loop_unblocked"


def test_listen_cli_prints_what_is_published() -> None:
    url = shared_redis()
    proc = subprocess.Popen([sys.executable, "-m", "monitor_agent.cli", "listen", url, "--json",
                             "--count", "1", "--timeout", "20", "--event", "gevent.memory_under_threshold"],
                            env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = raw_client()
        body = envelope("gevent.memory_under_threshold", mem_usage=1, marker="listen-test")
        deadline = time.monotonic() + 15
        while client.pubsub_numsub("gevent.memory_under_threshold")[0][1] < 1:
            assert time.monotonic() < deadline and proc.poll() is None, "listen never subscribed"
            time.sleep(0.05)
        client.publish("gevent.memory_under_threshold", wire.encode(body))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    CAPTURED.extend([out, err])
    assert proc.returncode == 0, err
    printed = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert any(p.get("data", {}).get("marker") == "listen-test" for p in printed), out
    assert "listening on redis://127.0.0.1:6379/0" in err


PATCHED_APP = """
    from gevent import monkey
    monkey.patch_all()
    import json, sys, threading, time
    import gevent
    from gevent._hub_local import get_hub_if_exists
    import monitor_agent
    import redis

    url, name = sys.argv[1], sys.argv[2]
    main_thread = threading.get_ident()
    imported_in_threads = []

    class ImportWatcher:  # fork safety: nothing of ours may import in a native thread
        def find_spec(self, name, path, target=None):
            if threading.get_ident() != main_thread:
                frame = sys._getframe(1)
                while frame is not None:
                    if "/redis/" in frame.f_code.co_filename or "monitor_agent_redis" in frame.f_code.co_filename:
                        imported_in_threads.append(name)
                        break
                    frame = frame.f_back
            return None

    sys.meta_path.insert(0, ImportWatcher())
    # Positive control: the watcher must see an import made from "our" code in a native thread.
    control = compile("import colorsys", "/x/monitor_agent_redis/control.py", "exec")
    control_done = monitor_agent._native.allocate_lock()
    control_done.acquire()
    monitor_agent._native.spawn("control", lambda: (exec(control, {}), control_done.release()))
    control_done.acquire()
    agent = monitor_agent.install(transports=url, max_blocking_time=0.5)
    transport = agent.transports[0]
    seen = {"publisher_hubs": [], "sockets": set(), "consumer_hubs": [], "received": 0}
    emit_events = transport.emit_events

    def watched_emit_events(events):
        emit_events(events)
        seen["publisher_hubs"].append(get_hub_if_exists() is not None)
        seen["sockets"].add(type(transport._conn._sock).__module__)

    transport.emit_events = watched_emit_events
    consumer = type(transport)(transport.url, transport.settings)

    def on_tick(body):
        seen["consumer_hubs"].append(get_hub_if_exists() is not None)
        seen["received"] += 1

    consumer.register_event_handler(on_tick, name)
    consumer.start_accepting_events()
    gaps = []

    def heartbeat():
        last = gevent.get_hub().loop.now()
        while True:
            gevent.sleep(0.01)
            gevent.get_hub().loop.update_now()
            now = gevent.get_hub().loop.now()
            gaps.append(now - last)
            last = now

    class Tick:
        event_name = name
        def __init__(self, n):
            self.n = n
        def wire_data(self):
            return {"n": self.n}

    def wait_for(condition, what):
        deadline = time.monotonic() + 15
        while not condition():
            assert time.monotonic() < deadline, what
            gevent.sleep(0.05)

    beat = gevent.spawn(heartbeat)
    probe = redis.Redis.from_url(url)
    wait_for(lambda: consumer.consumer_connects >= 1 and probe.pubsub_numsub(name)[0][1] >= 1,
             "the consumer never subscribed")
    for n in range(300):
        agent.emit(Tick(n))
        gevent.sleep(0.002)
    agent.flush(10)
    wait_for(lambda: seen["received"] >= 300, "the consumer did not receive all 300 events")
    consumer.stop_accepting_events()
    beat.kill()
    stats = agent.stats()["transports"]
    print(json.dumps({"max_gap": max(gaps), "received": seen["received"],
                      "publisher_hubs": any(seen["publisher_hubs"]), "consumer_hubs": any(seen["consumer_hubs"]),
                      "sockets": sorted(seen["sockets"]), "imported_in_threads": imported_in_threads,
                      "stats": list(stats.values())[0]}))
"""


def test_after_patch_all_native_threads_use_real_sockets_and_no_hub() -> None:
    url = shared_redis()
    result = run_python(PATCHED_APP, args=[url, unique_name()], timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["stats"]["sent"] == 300, report
    assert report["received"] >= 300, report
    assert report["publisher_hubs"] is False, "the publisher thread created a gevent hub"
    assert report["consumer_hubs"] is False, "the consumer thread created a gevent hub"
    assert report["sockets"] == ["socket"], "the publisher used a gevent socket"
    assert report["imported_in_threads"][0] == "colorsys", "the import watcher does not work"
    assert report["imported_in_threads"][1:] == [], "redis-py or the plugin imported a module in a native thread"
    assert report["max_gap"] < 1.0, report  # generous: the hub was never blocked by the transport


FORK_APP = """
    import json, os, sys
    import gevent
    import monitor_agent

    class Tick:
        event_name = sys.argv[2]
        def __init__(self, who):
            self.who = who
        def wire_data(self):
            return {"who": self.who}

    agent = monitor_agent.install(transports=sys.argv[1])
    gevent.sleep(0.1)  # the agent's threads start when the hub first runs
    agent.emit(Tick("parent-before"))
    agent.flush(10)
    pid = os.fork()
    if pid == 0:
        agent = monitor_agent.get_agent()
        gevent.sleep(0.1)
        agent.emit(Tick("child"))
        ok = agent.flush(10)
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    agent.emit(Tick("parent-after"))
    agent.flush(10)
    print(json.dumps({"child": pid, "status": status}))
"""


def test_a_forked_child_publishes_with_its_own_connection_and_pid() -> None:
    url = shared_redis()
    name = unique_name()
    pubsub = subscribe([name])
    result = run_python(FORK_APP, args=[url, name], timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 0
    received = {body["data"]["who"]: body["source"]["pid"] for _, body in collect(pubsub, 3)}
    assert set(received) == {"parent-before", "child", "parent-after"}
    assert received["child"] == report["child"]
    assert received["parent-before"] == received["parent-after"] != report["child"]


HUB_DISPATCH_APP = """
    import json, sys, threading
    import gevent
    import redis
    from monitor_agent_redis import factory

    url, name = sys.argv[1], sys.argv[2]
    main_thread = threading.get_ident()
    transport = factory(url + "?dispatch=hub")
    calls = []
    transport.register_event_handler(
        lambda body: calls.append({"main_thread": threading.get_ident() == main_thread,
                                   "in_hub": gevent.getcurrent() is gevent.get_hub(), "n": body["n"]}), name)
    transport.start_accepting_events()
    client = redis.Redis.from_url(url)
    for n in range(100):
        if calls:
            break
        client.publish(name, json.dumps({"n": n}))
        gevent.sleep(0.1)  # the hub runs the handler calls the consumer thread hands over
    transport.stop_accepting_events()
    print(json.dumps(calls[:1]))
"""


def test_dispatch_hub_calls_handlers_in_the_hub_of_the_starting_thread() -> None:
    url = shared_redis()
    result = run_python(HUB_DISPATCH_APP, args=[url, unique_name()], timeout=60)
    assert result.returncode == 0, result.stderr
    calls = json.loads(result.stdout.strip().splitlines()[-1])
    assert calls and calls[0]["main_thread"] is True and calls[0]["in_hub"] is True, (calls, result.stderr)
