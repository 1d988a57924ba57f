"""The monitor-agent command: config and run."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from monitor_agent.cli.config import markdown_table
from monitor_agent.settings import Settings

from .helpers import REPO, clean_environ, read_jsonl, run_cli

BLOCKING_SCRIPT = """
import sys, gevent
from gevent.monkey import get_original
gevent.sleep(0.05)
get_original("time", "sleep")(0.3)
gevent.sleep(0.1)
print("args:", sys.argv[1:])
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


class TestConfig:
    """monitor-agent config."""

    def test_lists_every_setting_with_source(self) -> None:
        """Each variable appears with its effective value and where it came from."""
        env = clean_environ(MONITOR_AGENT_MAX_BLOCKING_TIME="250ms", GEVENT_MONITOR_MEMORY_MAX="1GB")
        result = run_cli("config", env=env)
        assert result.returncode == 0, result.stderr
        for setting in Settings.declarations():
            assert setting.env in result.stdout
        assert "MONITOR_AGENT_MAX_BLOCKING_TIME      = 0.25   (from MONITOR_AGENT_MAX_BLOCKING_TIME)" in result.stdout
        assert "(from GEVENT_MONITOR_MEMORY_MAX)" in result.stdout

    def test_json_and_redaction(self) -> None:
        """Passwords in transport URLs never appear, in text or JSON."""
        env = clean_environ(MONITOR_AGENT_TRANSPORTS="redis://:hunter2@localhost:6379/0,amqp://u:pw123@h/")
        for args in (("config",), ("config", "--json")):
            result = run_cli(*args, env=env)
            assert result.returncode == 0, result.stderr
            assert "hunter2" not in result.stdout and "pw123" not in result.stdout
            assert "redis://:***@localhost:6379/0" in result.stdout
        rows = {r["variable"]: r for r in json.loads(run_cli("config", "--json", env=env).stdout)}
        assert rows["MONITOR_AGENT_TRANSPORTS"]["source"] == "MONITOR_AGENT_TRANSPORTS"

    def test_bad_setting_is_one_line_exit_2(self) -> None:
        """A bad value prints one line naming it, no traceback, status 2."""
        result = run_cli("config", env=clean_environ(MONITOR_AGENT_QUEUE_SIZE="lots"))
        assert result.returncode == 2
        assert result.stderr == ("monitor-agent: MONITOR_AGENT_QUEUE_SIZE='lots': expected a whole number "
                                 "from 1 to 10000000\n")

    def test_readme_table_is_generated(self) -> None:
        """The README's settings table is exactly `monitor-agent config --markdown`."""
        readme = Path(REPO, "README.md").read_text()
        block = re.search(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", readme, re.S)
        assert block, "README.md lacks the settings-table markers"
        assert block.group(1) == markdown_table()
        assert run_cli("config", "--markdown").stdout == markdown_table()


class TestRun:
    """monitor-agent run -- CMD."""

    def test_installs_agent_and_passes_args_and_status(self, tmp_path) -> None:
        """The program runs monitored, gets its arguments, and its exit status comes back."""
        script = tmp_path / "app.py"
        script.write_text(BLOCKING_SCRIPT)
        out = tmp_path / "events.jsonl"
        result = run_cli("run", "--max-blocking-time", "50ms", "--transports", f"jsonl:{out}", "--",
                         sys.executable, str(script), "7", "--flag")
        assert result.returncode == 7, result.stderr
        assert "args: ['7', '--flag']" in result.stdout
        envelopes = read_jsonl(str(out))
        assert [e["event"] for e in envelopes] == ["gevent.event_loop_blocked", "gevent.event_loop_unblocked"]
        assert envelopes[0]["data"]["threshold"] == 0.05
        assert envelopes[0]["source"]["service"] == "app"

    def test_patch_all(self, tmp_path) -> None:
        """--patch-all patches before the program starts."""
        script = tmp_path / "check.py"
        script.write_text("import gevent.monkey, socket, gevent.socket\n"
                          "print(gevent.monkey.is_module_patched('socket'), socket.socket is gevent.socket.socket)\n")
        result = run_cli("run", "--patch-all", "--transports", "", "--", sys.executable, str(script))
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["True", "True"]

    @pytest.mark.parametrize("args,message", [
        (["--max-blocking-time", "abc"], "MONITOR_AGENT_MAX_BLOCKING_TIME='abc': expected a positive duration"),
        (["--transports", "nope://x"], "MONITOR_AGENT_TRANSPORTS='nope://x': unknown transport scheme"),
        (["--queue-size", "-1"], "MONITOR_AGENT_QUEUE_SIZE='-1': expected a whole number"),
    ])
    def test_bad_setting_exits_2_before_the_program(self, args, message, tmp_path) -> None:
        """A bad option is refused before the program runs (it would have created a file)."""
        marker = tmp_path / "ran"
        result = run_cli("run", *args, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
        assert result.returncode == 2
        assert message in result.stderr and "Traceback" not in result.stderr
        assert not marker.exists()

    def test_bad_environment_setting_exits_2(self, tmp_path) -> None:
        """A bad MONITOR_AGENT_* variable in the environment is refused the same way."""
        result = run_cli("run", "--", sys.executable, "-c", "print('ran')",
                         env=clean_environ(MONITOR_AGENT_SAMPLE_INTERVAL="-1"))
        assert result.returncode == 2 and "MONITOR_AGENT_SAMPLE_INTERVAL='-1'" in result.stderr
        assert "ran" not in result.stdout

    def test_chains_existing_sitecustomize(self, tmp_path) -> None:
        """A sitecustomize already on the path still runs, and the agent is installed too."""
        site_dir = tmp_path / "site"
        site_dir.mkdir()
        (site_dir / "sitecustomize.py").write_text("import builtins\nbuiltins.CUSTOMIZED = 'yes'\n")
        env = clean_environ(PYTHONPATH=str(site_dir))
        code = "import builtins, monitor_agent; print(builtins.CUSTOMIZED, monitor_agent.get_agent() is not None)"
        result = run_cli("run", "--transports", "", "--", sys.executable, "-c", code, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["yes", "True"]

    def test_command_not_found(self) -> None:
        """An unknown command is status 127, like a shell."""
        result = run_cli("run", "--", "no-such-program-here")
        assert result.returncode == 127 and "command not found: no-such-program-here" in result.stderr

    def test_missing_separator(self) -> None:
        """Options without -- are a usage error."""
        result = run_cli("run", "--max-blocking-time", "1s", sys.executable)
        assert result.returncode == 2 and "put -- between" in result.stderr

    def test_options_cover_every_setting(self) -> None:
        """Each setting has a run option."""
        result = run_cli("run", "--help")
        assert result.returncode == 0
        for setting in Settings.declarations():
            assert setting.option in result.stdout


def test_version() -> None:
    """--version prints the version."""
    from monitor_agent import __version__

    assert run_cli("--version").stdout.strip() == f"monitor-agent {__version__}"
    assert os.path.exists(os.path.join(REPO, "monitor_agent", "_bootstrap", "sitecustomize.py"))
