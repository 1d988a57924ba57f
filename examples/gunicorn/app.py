"""A small WSGI app for gunicorn's gevent worker, with one endpoint that blocks the loop.

    /          a cheap, cooperative page
    /report    renders a "report" with a CPU-heavy loop that never yields (~0.3 s)
    /agent     the agent's pid, whether its monitor runs, and its counters (JSON)

Run it monitored, without touching the code::

    monitor-agent run --transports log,jsonl:gunicorn-events.jsonl -- \\
        gunicorn -k gevent -w 2 --bind 127.0.0.1:8000 examples.gunicorn.app:app

or with the ``post_fork`` hook in ``examples/gunicorn/gunicorn.conf.py``::

    gunicorn -c examples/gunicorn/gunicorn.conf.py -k gevent -w 2 examples.gunicorn.app:app
"""
import json
import os
import time

import gevent


def slow_report(environ):
    """Builds a report the expensive way: a pure-Python loop that never yields to the hub."""
    total, end = 0, time.perf_counter() + float(environ.get("QUERY_STRING") or 0.3)
    while time.perf_counter() < end:
        total += 1
    return f"report: {total} rows\n".encode()


def agent_status():
    import monitor_agent

    agent = monitor_agent.get_agent()
    status = {"pid": os.getpid(), "installed": agent is not None}
    if agent is not None:
        stats = agent.stats()
        status.update(running=agent.monitor.running, monitor_pid=agent.monitor.pid,
                      episodes=stats["blocking"]["episodes"], transports=stats["transports"])
    return json.dumps(status).encode()


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/report":
        body = slow_report(environ)
    elif path == "/agent":
        body = agent_status()
    else:
        gevent.sleep(0.001)
        body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
