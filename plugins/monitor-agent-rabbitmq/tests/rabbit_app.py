"""A gevent app driven by commands on stdin, for the RabbitMQ plugin's process tests.

Run as ``python rabbit_app.py [--patch]``; the agent is configured by
``MONITOR_AGENT_*`` variables. Commands (one per line), each answered with one
JSON line on stdout:

* ``emit N``: emit N memory events through the agent (what the monitor thread does);
* ``block SECONDS``: block the event loop (a real blocked loop);
* ``flush [SECONDS]``: wait (cooperatively) for the agent's queues to drain; answer its stats,
  the loop's longest gap and facts about the threads;
* ``fork``: fork; the child emits one event, flushes and exits with its answer; the parent answers
  ``{"child": PID, "status": STATUS}``;
* ``quit``.
"""
from __future__ import annotations

import sys

if "--patch" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import json
import os
import time
from typing import Any, Dict, List

import gevent
import gevent.hub
from gevent.monkey import get_original

import monitor_agent
from monitor_agent.events import MemoryUsageThresholdExceeded

_native_id = get_original("_thread", "get_native_id")
hub_threads: List[str] = []
_original_hub_init = gevent.hub.Hub.__init__


def _recording_hub_init(self: Any, *args: Any, **kwargs: Any) -> None:
    """Record the OS name of every thread that makes a hub (the agent's threads, ``ma:*``, must not)."""
    try:
        with open(f"/proc/self/task/{_native_id()}/comm") as f:
            hub_threads.append(f.read().strip())
    except OSError:
        hub_threads.append("?")
    _original_hub_init(self, *args, **kwargs)


gevent.hub.Hub.__init__ = _recording_hub_init

agent = monitor_agent.install()
assert agent is not None
longest_gap = 0.0


def heartbeat() -> None:
    """An independent greenlet: the longest the loop ever kept it waiting."""
    global longest_gap
    while True:
        started = time.perf_counter()
        gevent.sleep(0.01)
        longest_gap = max(longest_gap, time.perf_counter() - started - 0.01)


def facts() -> Dict[str, Any]:
    transport = agent.transports[0]
    sock_type = None
    connection = getattr(transport, "_connection", None)
    if connection is not None:
        sock = connection._impl._transport._sock
        import gevent.socket

        cooperative = isinstance(sock, gevent.socket.socket) or type(sock).__module__.startswith("gevent")
        sock_type = "gevent" if cooperative else f"real:{type(sock).__module__}"
    return {"pid": os.getpid(), "stats": next(iter(agent.stats()["transports"].values())),
            "longest_gap": longest_gap, "hubs_made_in_agent_threads": [
                name for name in hub_threads if name.startswith("ma:")], "hubs_made": hub_threads,
            "socket": sock_type, "patched": "--patch" in sys.argv}


def cooperative_flush(timeout: float) -> bool:
    """Wait for the agent's queues to drain without blocking the loop (agent.flush would)."""
    deadline = time.perf_counter() + timeout
    while not agent.flush(0):
        if time.perf_counter() > deadline:
            return False
        gevent.sleep(0.02)
    return True


def answer(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_line() -> str:
    return str(gevent.get_hub().threadpool.apply(sys.stdin.readline))


def main() -> None:
    gevent.spawn(heartbeat)
    gevent.sleep(0.1)
    while True:
        command = read_line().split()
        if not command or command[0] == "quit":
            break
        if command[0] == "emit":
            for i in range(int(command[1])):
                agent.emit(MemoryUsageThresholdExceeded(1000 + i, 1000, None))
            answer({"emitted": int(command[1])})
        elif command[0] == "block":
            time.sleep(float(command[1])) if "--patch" not in sys.argv else _block(float(command[1]))
            gevent.sleep(0.3)
            answer({"blocked": float(command[1])})
        elif command[0] == "flush":
            answer({"flushed": cooperative_flush(float(command[1]) if len(command) > 1 else 30), **facts()})
        elif command[0] == "fork":
            pid = os.fork()
            if pid == 0:
                agent.emit(MemoryUsageThresholdExceeded(7, 1, None))
                ok = agent.flush(30)
                answer({"child_flushed": ok, **facts()})
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            answer({"child": pid, "status": status})
    monitor_agent.uninstall(10)


def _block(seconds: float) -> None:
    """Busy-wait: blocks the loop even when time.sleep is cooperative (after patch_all)."""
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


if __name__ == "__main__":
    main()
