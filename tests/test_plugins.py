"""Entry-point plugins, tested with real distributions (a .dist-info on sys.path), not monkeypatching."""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from .helpers import clean_environ, run_cli, run_python
from .reliability._record import observed

PLUGIN_MODULES: Dict[str, str] = {
    # A working plugin: its setup adds a monitoring function; its transport appends envelopes to a file.
    "goodplug": """
        import json, os
        from monitor_agent import BaseEventTransport

        def setup(agent):
            agent.monitor.add_monitoring_function(lambda hub: None, 1.0)
            agent.goodplug_was_here = True

        class FileTransport(BaseEventTransport):
            scheme = "memq"
            def __init__(self, url):
                super().__init__(url)
                self.path = url.split("://", 1)[1]
            def emit_event(self, event_name, event_body):
                with open(self.path, "a") as f:
                    f.write(json.dumps(event_body) + "\\n")

        def transport(url, **options):
            if not url.startswith("memq:///"):
                raise ValueError("expected memq:///path")
            return FileTransport(url)
    """,
    "needsdep": """
        import a_dependency_that_is_not_installed  # noqa: F401
        def setup(agent): pass
        def transport(url): pass
    """,
    "brokenimport": """
        raise RuntimeError("broken at import")
    """,
    "brokensetup": """
        def setup(agent):
            raise KeyError("broken in setup")
    """,
}

ENTRY_POINTS = """
[monitor_agent.plugins]
good = goodplug:setup
needsdep = needsdep:setup
brokenimport = brokenimport:setup
brokensetup = brokensetup:setup

[monitor_agent.transports]
memq = goodplug:transport
needsdep = needsdep:transport
broken = brokenimport:setup
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> str:
    """A folder holding the plugin modules and a real distribution's metadata with their entry points."""
    for name, source in PLUGIN_MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "throwaway_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: throwaway-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return str(tmp_path)


def env_with(plugin_path: str, **extra: str) -> Dict[str, str]:
    return clean_environ(PYTHONPATH=plugin_path + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


INSTALL = """
import json, logging, io, gevent, monitor_agent
stream = io.StringIO()
logging.basicConfig(stream=stream, level=logging.DEBUG, format="%(levelname)s %(message)s")
try:
    agent = monitor_agent.install(transports={transports!r})
except monitor_agent.ConfigError as exc:
    print(json.dumps({{"error": str(exc)}}))
    raise SystemExit(0)
gevent.sleep(0.05)
print(json.dumps({{"called": getattr(agent, "goodplug_was_here", False), "plugins": agent.stats()["plugins"],
                  "log": stream.getvalue()}}))
"""


def install_in(plugin_path: str, transports: str = "", **env: str) -> dict:
    result = run_python(INSTALL.format(transports=transports), env=env_with(plugin_path, **env))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


class TestPlugins:
    """monitor_agent.plugins entry points."""

    def test_good_plugin_runs_faulty_ones_are_isolated(self, plugin_path: str) -> None:
        """The good plugin is called with the agent; each faulty one is skipped with its own kind of notice."""
        out = install_in(plugin_path)
        assert out["called"] is True
        states = out["plugins"]
        assert states["monitor_agent.plugins:good"] == "loaded"
        assert states["monitor_agent.plugins:needsdep"] == "missing dependency"
        assert states["monitor_agent.plugins:brokenimport"] == "failed"
        assert states["monitor_agent.plugins:brokensetup"] == "failed"
        warnings = [line for line in out["log"].splitlines() if line.startswith("WARNING")]
        assert any("'brokenimport' (throwaway-plugins 1.0)" in w and "broken at import" in w for w in warnings)
        assert any("'brokensetup' (throwaway-plugins 1.0)" in w and "broken in setup" in w for w in warnings)
        assert not any("needsdep" in w for w in warnings), "a missing dependency is skipped quietly"
        assert any(line.startswith("DEBUG") and "needsdep" in line for line in out["log"].splitlines())
        observed("plugins whose import raises, whose setup raises, or whose dependency is missing",
                 "a real throwaway distribution with four monitor_agent.plugins entry points",
                 "the good plugin ran; each faulty one logged once with its name and distribution and marked "
                 "'failed' (missing dependency: skipped quietly, at DEBUG); install() succeeded", "n/a")

    def test_disabled_by_name_and_star(self, plugin_path: str) -> None:
        """MONITOR_AGENT_DISABLED_PLUGINS skips by name, and * skips all."""
        out = install_in(plugin_path, MONITOR_AGENT_DISABLED_PLUGINS="good,brokensetup")
        assert out["called"] is False
        assert out["plugins"]["monitor_agent.plugins:good"] == "disabled"
        assert out["plugins"]["monitor_agent.plugins:brokenimport"] == "failed"
        out = install_in(plugin_path, MONITOR_AGENT_DISABLED_PLUGINS="*")
        assert set(out["plugins"].values()) == {"disabled"}


class TestTransportPlugins:
    """monitor_agent.transports entry points: loaded when a URL names their scheme."""

    def test_plugin_transport_delivers(self, plugin_path: str, tmp_path: Path) -> None:
        """A third-party transport found by scheme receives real envelopes."""
        sink = tmp_path / "sink.jsonl"
        code = f"""
            import gevent, monitor_agent
            from gevent.monkey import get_original
            agent = monitor_agent.install(transports="memq://{sink}")
            gevent.sleep(0.05)
            get_original("time", "sleep")(0.25)
            gevent.sleep(0.1)
        """
        result = run_python(code, env=env_with(plugin_path))
        assert result.returncode == 0, result.stderr
        events = [json.loads(line)["event"] for line in sink.read_text().splitlines()]
        assert events == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]

    @pytest.mark.parametrize("url,expected", [
        ("needsdep://x", "the transport plugin 'needsdep' (throwaway-plugins 1.0) cannot be loaded: "
                         "ModuleNotFoundError: No module named 'a_dependency_that_is_not_installed'"),
        ("broken://x", "the transport plugin 'broken' (throwaway-plugins 1.0) cannot be loaded: "
                       "RuntimeError: broken at import"),
        ("memq://relative", "expected memq:///path"),
    ])
    def test_named_transport_that_cannot_load_fails_install(self, plugin_path: str, url: str, expected: str) -> None:
        """A transport the user asked for by URL must work, or install() raises a ConfigError saying why."""
        out = install_in(plugin_path, transports=url)
        assert out["error"] == f"transports={url!r}: {expected}"

    def test_disabled_transport_named_in_url(self, plugin_path: str) -> None:
        """Naming a disabled transport's scheme is an error that says it is disabled."""
        out = install_in(plugin_path, transports="memq:///tmp/x", MONITOR_AGENT_DISABLED_PLUGINS="memq")
        assert "is disabled by MONITOR_AGENT_DISABLED_PLUGINS" in out["error"]


def test_cli_plugins_lists_states(plugin_path: str) -> None:
    """`monitor-agent plugins` shows every entry point found and whether it loaded."""
    result = run_cli("plugins", "--json", env=env_with(plugin_path))
    assert result.returncode == 0, result.stderr
    listing = {(r["group"].rsplit(".", 1)[1], r["name"]): r for r in json.loads(result.stdout)["entry_points"]}
    assert listing[("plugins", "good")]["state"] == "loaded"
    assert listing[("transports", "memq")]["state"] == "loaded"
    assert listing[("transports", "needsdep")]["state"] == "missing dependency"
    assert listing[("plugins", "brokenimport")]["error"] == "RuntimeError: broken at import"
    assert listing[("plugins", "good")]["distribution"] == "throwaway-plugins 1.0"
    text = run_cli("plugins", env=env_with(plugin_path)).stdout
    assert "missing dependency" in text and "throwaway-plugins 1.0" in text
