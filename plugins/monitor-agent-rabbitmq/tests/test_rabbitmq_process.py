"""Real gevent processes publishing through the amqp transport: blocked loops, patch_all, faults, fork, listen."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

import pytest
from rabbit_kit import RABBIT_URL, RawQueue, TlsTerminator, require_rabbit, url_via

from monitor_agent import wire
from tests.brokers import RABBIT_HOST, RABBIT_PORT, TcpProxy, require_program
from tests.helpers import CAPTURED, PYTHON, SECRET, clean_environ
from tests.reliability._record import observed

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rabbit_app.py")
MEMORY = "gevent.memory_threshold_exceeded"
BLOCKED, UNBLOCKED = "gevent.event_loop_blocked", "gevent.event_loop_unblocked"
# Only the events a test emits itself (building 2000 events in one go is itself a blocked loop).
QUIET = {"MONITOR_AGENT_MAX_BLOCKING_TIME": "10"}


class App:
    """The command-driven gevent app of rabbit_app.py, in a subprocess."""

    def __init__(self, transport_url: str, *, patch: bool = False, **env: str) -> None:
        environ = clean_environ(MONITOR_AGENT_TRANSPORTS=transport_url, MONITOR_AGENT_SERVICE="rabbit-app", **env)
        self.proc = subprocess.Popen([PYTHON, APP, *(["--patch"] if patch else [])], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.stderr: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)

    def ask(self, command: str, timeout: float = 60) -> Dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.next_answer(timeout)

    def next_answer(self, timeout: float = 60) -> Dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the app; stderr: {''.join(self.stderr)[-2000:]}") from None
        CAPTURED.append(line)
        return json.loads(line)  # type: ignore[no-any-return]

    def quit(self) -> str:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        time.sleep(0.1)
        text = "".join(self.stderr)
        CAPTURED.append(text)
        return text


@pytest.fixture(autouse=True)
def _rabbit() -> None:
    require_rabbit()


def accounted(stats: Dict[str, Any]) -> int:
    return stats["sent"] + stats["failed"] + sum(stats["dropped"].values())


def test_a_blocked_loop_is_reported_to_a_plain_consumer_with_the_right_pid() -> None:
    with RawQueue([BLOCKED, UNBLOCKED]) as consumer:
        app = App(RABBIT_URL, MONITOR_AGENT_MAX_BLOCKING_TIME="0.1")
        try:
            app.ask("block 0.5")
            facts = app.ask("flush")
        finally:
            stderr = app.quit()
        messages = [m for m in consumer.get(2) if m["body"]["source"]["pid"] == facts["pid"]]
    assert facts["flushed"] and facts["stats"]["sent"] >= 2
    by_exchange = {m["exchange"]: m["body"] for m in messages}
    assert set(by_exchange) == {"gemstone.broadcast." + BLOCKED, "gemstone.broadcast." + UNBLOCKED}
    for message in messages:
        assert message["content_type"] == "application/json"
        wire.validate_envelope(message["body"])
        assert message["body"]["source"]["service"] == "rabbit-app"
    assert by_exchange["gemstone.broadcast." + UNBLOCKED]["data"]["blocking_time"] >= 0.4
    assert "Traceback" not in stderr


def test_after_patch_all_the_publisher_uses_real_sockets_and_never_blocks_the_hub() -> None:
    with RawQueue([MEMORY]) as consumer:
        app = App(RABBIT_URL, patch=True, **QUIET)
        try:
            app.ask("emit 2000")
            facts = app.ask("flush")
        finally:
            stderr = app.quit()
        got = [m for m in consumer.get(2000, timeout=60) if m["body"]["source"]["pid"] == facts["pid"]]
    assert facts["patched"] and facts["flushed"]
    assert facts["stats"]["sent"] == facts["stats"]["submitted"] == accounted(facts["stats"]) == 2000
    assert len(got) == 2000
    # pika's socket in the publisher thread is a real one (from the plugin's private, unpatched socket module)
    assert facts["socket"] == "real:monitor_agent_rabbitmq._realio.real_socket", facts
    assert facts["hubs_made"]  # the recording works
    assert facts["hubs_made_in_agent_threads"] == [], facts  # no gevent hub in the publisher thread
    assert facts["longest_gap"] < 1.0, facts  # generous: the loop kept running while 2000 events went out
    assert "Traceback" not in stderr


def test_amqps_after_patch_all_uses_real_tls_sockets(tmp_path: Any) -> None:
    require_program("openssl")
    terminator = TlsTerminator(str(tmp_path))
    try:
        with RawQueue([MEMORY]) as consumer:
            app = App(f"amqps://guest:guest@localhost:{terminator.port}/%2F?cafile={terminator.ca}", patch=True,
                      **QUIET)
            try:
                app.ask("emit 10")
                facts = app.ask("flush")
            finally:
                stderr = app.quit()
            got = [m for m in consumer.get(10) if m["body"]["source"]["pid"] == facts["pid"]]
    finally:
        terminator.close()
    assert facts["flushed"] and facts["stats"]["sent"] == 10 and len(got) == 10
    assert facts["socket"] == "real:monitor_agent_rabbitmq._realio.real_ssl", facts
    assert facts["hubs_made_in_agent_threads"] == [], facts
    assert terminator.handshakes == 1
    assert "Traceback" not in stderr


def test_broker_faults_cost_queued_events_only_and_everything_adds_up() -> None:
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy, RawQueue([MEMORY]) as consumer:
        app = App(url_via(proxy.port, "socket_timeout=2"), MONITOR_AGENT_QUEUE_SIZE="100", **QUIET)
        try:
            app.ask("emit 50")
            first = app.ask("flush")
            assert first["stats"]["sent"] == 50
            proxy.reset()  # drop the live connection mid-stream...
            proxy.refuse(True)  # ...and refuse new ones for a while
            app.ask("emit 400")  # more than the queue holds: the oldest are dropped
            time.sleep(2)
            during = app.ask("flush 0.5")
            assert during["stats"]["sent"] == 50 and not during["flushed"]
            proxy.refuse(False)  # let them through: delivery resumes without a restart
            after = app.ask("flush", timeout=90)
            app.ask("emit 20")
            final = app.ask("flush", timeout=90)
        finally:
            stderr = app.quit()
        stats = final["stats"]
        received = {m["body"]["id"]: m["body"] for m in consumer.get(stats["sent"], timeout=60)
                    if m["body"]["source"]["pid"] == final["pid"]}
    assert after["flushed"] and final["flushed"]
    assert stats["submitted"] == 470 == accounted(stats), stats
    assert stats["dropped"]["queue_full"] > 0 and stats["retries"] > 0
    assert len(received) == stats["sent"]
    assert sum(e.get("dropped_before", 0) for e in received.values()) == stats["dropped"]["queue_full"]
    assert final["longest_gap"] < 1.0, final  # the app never stalled
    assert SECRET not in stderr and "Traceback" not in stderr
    observed("RabbitMQ connection reset mid-stream, then refused", "a TCP proxy in front of RabbitMQ: RST on the "
             "live connection, new connections refused for 2 s; 400 events into a queue of 100",
             f"retried with backoff ({stats['retries']} retries), reconnected and redeclared by itself, "
             f"dropped_before on the next envelope; app heartbeat max gap {final['longest_gap'] * 1000:.0f} ms; "
             "sent + failed + dropped = 470", f"{stats['dropped']['queue_full']} dropped (queue_full, counted)")


def test_a_forked_child_publishes_on_its_own_connection_with_its_own_pid() -> None:
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy, RawQueue([MEMORY]) as consumer:
        app = App(url_via(proxy.port), **QUIET)
        try:
            app.ask("emit 1")
            parent = app.ask("flush")
            assert proxy.accepted == 1
            app.proc.stdin.write("fork\n")  # type: ignore[union-attr]
            app.proc.stdin.flush()  # type: ignore[union-attr]
            child = app.next_answer()
            forked = app.next_answer()
            app.ask("emit 1")  # the parent's own connection survives the child's exit
            parent_after = app.ask("flush")
        finally:
            stderr = app.quit()
        pids = [m["body"]["source"]["pid"] for m in consumer.get(3)]
    assert forked["status"] == 0 and child["child_flushed"] and child["pid"] == forked["child"] != parent["pid"]
    assert child["stats"]["sent"] == 1 and parent_after["stats"]["sent"] == 2
    assert proxy.accepted == 2  # exactly one new connection: the child's
    assert sorted(pids) == sorted([parent["pid"], child["pid"], parent["pid"]])
    assert "Traceback" not in stderr


def test_monitor_agent_listen_prints_events_from_the_broker() -> None:
    listener = subprocess.Popen([PYTHON, "-m", "monitor_agent.cli", "listen", RABBIT_URL, "--json", "--count", "1",
                                 "--timeout", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=clean_environ())
    try:
        assert listener.stderr is not None
        banner = listener.stderr.readline()
        assert "listening on amqp://guest:***@" in banner
        app = App(RABBIT_URL, MONITOR_AGENT_MAX_BLOCKING_TIME="0.1")
        try:
            app.ask("block 0.3")
            facts = app.ask("flush")
        finally:
            app.quit()
        out, err = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
    CAPTURED.extend([out, err])
    assert listener.returncode == 0, err
    envelopes = [json.loads(line) for line in out.splitlines()]  # --count 1 exits after at least one
    assert envelopes and envelopes[0]["event"] == BLOCKED and envelopes[0]["source"]["pid"] == facts["pid"]


def test_listen_refuses_a_bad_url_with_a_redacted_message() -> None:
    result = subprocess.run([PYTHON, "-m", "monitor_agent.cli", "listen", f"amqp://u:{SECRET}@h:99999/%2F"],
                            capture_output=True, text=True, env=clean_environ(), timeout=60)
    CAPTURED.extend([result.stdout, result.stderr])
    assert result.returncode != 0 and "port" in result.stderr and SECRET not in result.stderr + result.stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
