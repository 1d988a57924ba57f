"""Secrets stay secret, files are private, bodies are capped, inbound data is inert."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

import monitor_agent
from monitor_agent import ConfigError
from monitor_agent.settings import Settings

from ..helpers import SECRET, clean_environ, run_cli, run_python
from ._record import observed


def test_password_never_shown_by_the_core(tmp_path: Path, caplog) -> None:
    """A password in URLs stays out of errors, reprs, the config listing and logs.

    (The root conftest additionally scans every output of the whole suite for it.)
    """
    url = f"nosuchscheme://user:{SECRET}@host:1/x"
    with pytest.raises(ConfigError) as info:
        monitor_agent.install(transports=url)
    assert SECRET not in str(info.value) and "user:***@host" in str(info.value)
    settings = Settings.load(environ={"MONITOR_AGENT_TRANSPORTS": f"redis://:{SECRET}@h:1/0,log"})
    assert SECRET not in repr(settings)
    for args in (("config",), ("config", "--json")):
        result = run_cli(*args, env=clean_environ(MONITOR_AGENT_TRANSPORTS=f"amqp://guest:{SECRET}@h:5672/%2F"))
        assert result.returncode == 0 and SECRET not in result.stdout + result.stderr
    result = run_cli("run", "--transports", f"bogus://:{SECRET}@h", "--", "true")
    assert result.returncode == 2 and SECRET not in result.stderr
    observed("passwords in transport URLs", "a distinctive password in every URL the suite uses",
             "redacted in errors, reprs, monitor-agent config/run, logs; the whole suite's output is scanned", "n/a")


@pytest.mark.parametrize("template", [
    "redis://:{pw}@host:6379/0",
    "redis://user:{pw}@[::1]:6379/0?password={pw}",
    "amqp://guest:{pw}@host:5672/%2F",
    "redis://:{pw}/tail@host:6379/0",        # unescaped '/': urlsplit reads host '{pw}'
    "amqp://guest:{pw}?x#y@host:5672/%2F",    # unescaped '?' and '#'
    "amqps://guest:{pw}@evil@host:5671/%2F",  # unescaped '@'
    "see redis://:{pw}@host:1/0 and amqp://u:{pw}@h/%2F in one message",
])
def test_redaction_of_awkward_urls(template: str) -> None:
    """redact_url/redact_text hide the password however the URL was (mis)written; the host stays visible."""
    from monitor_agent._redact import redact_text, redact_url

    url = template.format(pw=SECRET)
    for shown in (redact_url(url), redact_text(url)):
        assert SECRET not in shown and "***" in shown, shown
        assert ("host" in shown or "h/" in shown or "[::1]" in shown), "the destination stays visible"


def test_jsonl_file_is_private_even_with_a_lax_umask(tmp_path: Path) -> None:
    """The JSONL file is created 0600 whatever the umask."""
    path = tmp_path / "e.jsonl"
    code = f"""
        import os, monitor_agent
        os.umask(0o000)
        monitor_agent.install(transports="jsonl:{path}")
    """
    assert run_python(code).returncode == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    observed("a lax umask", "os.umask(0o000) before install(transports='jsonl:…')",
             "the event log was created 0600 (events may name code paths and hosts)", "n/a")


def test_event_bodies_are_capped(tmp_path: Path) -> None:
    """A block 300 frames deep yields bodies under the cap, with the innermost frames kept."""
    path = tmp_path / "e.jsonl"
    code = f"""
        import gevent, monitor_agent
        from gevent.monkey import get_original
        monitor_agent.install(transports="jsonl:{path}", max_event_size="4KiB")
        def deep(n):
            return deep(n - 1) if n else get_original("time", "sleep")(0.3)
        gevent.sleep(0.05)
        gevent.spawn(deep, 300).join()
        gevent.sleep(0.1)
    """
    assert run_python(code).returncode == 0
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2 and all(len(line) <= 4096 for line in lines)
    events = [json.loads(line) for line in lines]
    assert all("stack" in e["data"]["truncated"] for e in events)
    assert events[0]["data"]["stack"][-1]["function"] == "deep"
    observed("a huge stack", "a block 300 frames deep, MONITOR_AGENT_MAX_EVENT_SIZE=4KiB",
             "each body ≤ 4 KiB: stack truncated (innermost frames kept, marked), never split or dropped", 0)


def test_no_secret_in_agent_repr_and_stats(tmp_path: Path, faulty_env) -> None:
    """A transport URL with a password: the agent's repr, stats keys and logged errors show it redacted."""
    code = f"""
        import json, logging, gevent, monitor_agent
        from monitor_agent.events import MemoryUsageThresholdExceeded
        logging.basicConfig(level=logging.DEBUG)
        agent = monitor_agent.install(transports="raises://admin:{SECRET}@broker/")
        gevent.sleep(0.05)
        agent.emit(MemoryUsageThresholdExceeded(1, 1, None))
        agent.flush(1)
        print(repr(agent)); print(json.dumps(agent.stats()))
    """
    result = run_python(code, env=faulty_env)
    assert result.returncode == 0, result.stderr
    assert "raises://admin:***@broker/" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert "transport bug" in result.stderr
