"""Installed by ``monitor-agent run``: set up monitor_agent at interpreter start-up.

This directory is first on ``PYTHONPATH`` only for programs started by
``monitor-agent run``. In order: ``gevent.monkey.patch_all()`` when
``MONITOR_AGENT_PATCH_ALL=1``; the ``sitecustomize`` this one shadows, if any;
then ``monitor_agent.install()``, configured from the ``MONITOR_AGENT_*``
variables that ``run`` set.
"""
import os
import sys


def _chain_to_shadowed_sitecustomize() -> None:
    """Run the next ``sitecustomize`` on sys.path, which this module hides."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__name__ = "sitecustomize"
    spec.loader.exec_module(module)
    # Make the original visible under its own name, as if it had been imported.
    for name, value in vars(module).items():
        if not name.startswith("__"):
            globals().setdefault(name, value)


def _bootstrap() -> None:
    if os.environ.get("MONITOR_AGENT_PATCH_ALL") == "1":
        from gevent import monkey

        monkey.patch_all()
    _chain_to_shadowed_sitecustomize()
    try:
        import monitor_agent
    except ImportError as exc:
        sys.stderr.write(f"monitor-agent: {sys.executable} cannot import monitor_agent ({exc}); "
                         "the program runs unmonitored\n")
        return
    try:
        monitor_agent.install()
    except monitor_agent.ConfigError as exc:
        sys.stderr.write(f"monitor-agent: {exc}\n")
        sys.stderr.flush()
        os._exit(2)


_bootstrap()
