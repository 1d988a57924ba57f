"""A gunicorn configuration that installs monitor_agent in every worker.

Copy the ``post_fork`` hook into your own ``gunicorn.conf.py``. It runs in each
worker right after gunicorn forks it (and again for every worker gunicorn
replaces: ``--max-requests``, a crashed worker, a HUP), before the gevent
worker monkey-patches and starts its hub; ``install()`` works before
``patch_all()``. The master never gets an agent, so it starts no threads.

Settings come from the environment as usual (``MONITOR_AGENT_TRANSPORTS``,
``MONITOR_AGENT_MAX_BLOCKING_TIME``, …). Every worker's events carry its own pid.
"""

worker_class = "gevent"


def post_fork(server, worker):
    import monitor_agent

    monitor_agent.install()
