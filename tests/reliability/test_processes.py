"""Processes: spawned and forked children are monitored, with their own pid, without inherited state."""
from __future__ import annotations

import json
from pathlib import Path

from ..helpers import read_jsonl, run_cli, run_python
from ._record import observed

SPAWN_APP = """
import multiprocessing, os, gevent
from gevent.monkey import get_original

def work(queue):
    import monitor_agent
    agent = monitor_agent.get_agent()
    gevent.sleep(0.05)
    get_original("time", "sleep")(0.3)
    gevent.sleep(0.1)
    agent.flush(2)
    queue.put(os.getpid())

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=work, args=(queue,))
    p.start(); child = queue.get(timeout=30); p.join()
    print(child)
"""


def test_multiprocessing_spawn_children_are_monitored(tmp_path: Path) -> None:
    """Under `monitor-agent run`, a spawn-started child (a new interpreter) installs the agent at start-up too."""
    script = tmp_path / "spawner.py"
    script.write_text(SPAWN_APP)
    out = tmp_path / "e.jsonl"
    import sys

    result = run_cli("run", "--transports", f"jsonl:{out}", "--", sys.executable, str(script), timeout=60)
    assert result.returncode == 0, result.stderr
    child = int(result.stdout.split()[-1])
    mine = [e["event"][13:] for e in read_jsonl(str(out)) if e["source"]["pid"] == child]
    assert mine == ["loop_blocked", "loop_unblocked"]
    observed("multiprocessing child (spawn)", "monitor-agent run; ctx 'spawn'; the child blocks 0.3 s",
             "the child interpreter installs the agent from the inherited environment; events carry its pid", 0)


def test_fork_storm_while_publishing(tmp_path: Path) -> None:
    """Thirty forks while another greenlet floods the agent: every child has working locks, its own pid, no
    inherited queue, and finishes; the parent's accounting still adds up."""
    out = tmp_path / "e.jsonl"
    code = f"""
        import json, os, gevent, monitor_agent
        from monitor_agent.events import MemoryUsageThresholdExceeded
        agent = monitor_agent.install(transports="jsonl:{out}", queue_size=200)
        gevent.sleep(0.05)
        flooding = True
        def flood():
            i = 0
            while flooding:
                agent.emit(MemoryUsageThresholdExceeded(i, 1, None)); i += 1
                if i % 50 == 0:
                    gevent.sleep(0)
        gevent.spawn(flood)
        children = []
        for n in range(30):
            gevent.sleep(0.002)
            pid = os.fork()
            if pid == 0:
                queued = agent.stats()["transports"][f"jsonl:{out}"]["queued"]
                agent.emit(MemoryUsageThresholdExceeded(-1, 1, None))
                ok = agent.flush(3)
                os._exit(0 if ok and queued == 0 else 3)
            children.append(pid)
        flooding = False
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
        agent.flush(5)
        s = agent.stats()["transports"][f"jsonl:{out}"]
        print(json.dumps({{"codes": codes, "children": children, "stats": s}}))
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
    out_json = json.loads(result.stdout)
    assert out_json["codes"] == [0] * 30, "each child started empty and flushed its own event"
    events = read_jsonl(str(out))
    from_children = [e for e in events if e["data"].get("mem_usage") == -1]
    assert sorted(e["source"]["pid"] for e in from_children) == sorted(out_json["children"])
    s = out_json["stats"]
    assert s["submitted"] == s["sent"] + s["failed"] + sum(s["dropped"].values()) + s["queued"] + s["in_flight"]
    observed("fork while the publisher thread is busy", "30 os.fork() calls during a flood of events",
             "each child starts with new locks, an empty queue and its own pid, and delivers its own event",
             f"parent: {s['dropped']['queue_full']} dropped (queue_full, counted) of {s['submitted']}; children: 0")
