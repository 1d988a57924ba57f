"""Bad input everywhere it enters: settings, CLI options, URLs, inbound messages. Never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor_agent import ConfigError, wire
from monitor_agent.cli import run as run_cmd
from monitor_agent.settings import Settings

from ..helpers import clean_environ, run_cli
from ._record import observed

NASTY = ["", "   ", "-1", "0", "nan", "inf", "-inf", "1e999", "99999999999999999999", "ünïcødé", "5 parsecs",
         "10 ms ms", "0x10", "\t", "1,2", "true false", "%", "*", "\\x00"]


@pytest.mark.parametrize("setting", Settings.declarations(), ids=lambda s: s.env)
def test_every_variable_with_every_nasty_value(setting) -> None:
    """Each value either parses or raises a ConfigError naming the variable; never anything else."""
    accepted = 0
    for value in NASTY:
        try:
            Settings.load(environ={setting.env: value})
            accepted += 1
        except ConfigError as exc:
            assert str(exc).startswith(f"{setting.env}="), str(exc)
            assert "\n" not in str(exc)
    assert accepted < len(NASTY)


@pytest.mark.parametrize("setting", Settings.declarations(), ids=lambda s: s.option)
def test_every_run_option_with_every_nasty_value(setting, capsys) -> None:
    """`monitor-agent run --option VALUE`: accepted, or exit 2 with one line naming the variable."""
    for value in NASTY:
        try:
            run_cmd.prepare([setting.option, value, "--", sys.executable, "-c", "pass"])
        except SystemExit as exc:
            assert exc.code == 2
            err = capsys.readouterr().err
            assert err.startswith(f"monitor-agent: {setting.env}=") and err.count("\n") == 1, err


def test_real_cli_rejects_bad_values_in_one_line() -> None:
    """A sample through the real command: exit 2, one line, no traceback, the program never ran."""
    for option, value in [("--max-blocking-time", "nan"), ("--queue-size", "1e999"), ("--service", " "),
                          ("--transports", "jsonl:/no/such/dir/f.jsonl")]:
        result = run_cli("run", option, value, "--", sys.executable, "-c", "print('ran')")
        assert result.returncode == 2 and result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    observed("bad settings and CLI options", f"{len(NASTY)} nasty values x {len(Settings.declarations())} settings, "
             "as variables and as run options", "accepted when valid, else one line naming the variable "
             "(exit 2 for the CLI); no traceback", "n/a")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(value=st.one_of(st.text(max_size=40), st.integers(), st.floats(allow_nan=True), st.none(), st.booleans()))
def test_parsers_property(value) -> None:
    """Any value (text, numbers, NaN, None) given to any setting parses or raises ConfigError/TypeError only."""
    for setting in Settings.declarations():
        try:
            Settings.load({setting.name: value}, environ={})
        except ConfigError as exc:
            assert str(exc).startswith(f"{setting.name}=")


@settings(max_examples=500, deadline=None)
@given(payload=st.one_of(st.binary(max_size=300), st.text(max_size=300),
                         st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=10),
                                      lambda children: st.lists(children, max_size=4) |
                                      st.dictionaries(st.text(max_size=8), children, max_size=4),
                                      max_leaves=30).map(lambda v: json.dumps(v, allow_nan=True))))
def test_envelope_decoder_property(payload) -> None:
    """The decoder returns a valid envelope or raises InvalidEnvelope, for any bytes or JSON at all."""
    try:
        envelope = wire.decode(payload)
    except wire.InvalidEnvelope:
        return
    wire.validate_envelope(envelope)


def test_listen_survives_hostile_messages(tmp_path: Path) -> None:
    """Non-JSON, wrong schema, huge, deeply nested and invalid UTF-8 lines are counted; the next good one prints."""
    path = tmp_path / "fleet.jsonl"
    path.touch()
    proc = subprocess.Popen([sys.executable, "-m", "monitor_agent.cli", "listen", f"jsonl:{path}", "--count", "1",
                             "--timeout", "30"], env=clean_environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert b"listening" in proc.stderr.readline()
    good = wire.encode(wire.build_envelope("gevent.event_loop_blocked", {
        "blocking_time": 0.2, "threshold": 0.1, "episode": 1, "greenlet": "g",
        "stack": [{"file": "/etc/passwd", "line": 1, "function": "__import__('os').system('touch PWNED')",
                   "code": "", "app": True}]}, service="ok"))
    with open(path, "ab") as f:
        f.write(b"not json\n")
        f.write(b'{"event": "gevent.event_loop_blocked", "schema": 99}\n')
        f.write(b'{"a": "' + b"x" * (wire.MAX_INBOUND_BYTES + 10) + b'"}\n')
        f.write(b"[" * 10000 + b"]" * 10000 + b"\n")
        f.write(b'{"event": "\xff\xfe"}\n')
        f.write(good + b"\n")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.decode().startswith("ok[") and b"Traceback" not in err
    assert b"skipped 5 malformed message(s)" in err
    assert not (Path.cwd() / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    observed("hostile inbound messages on listen", "non-JSON, wrong schema, 4 MiB+, 10,000-deep, invalid UTF-8 "
             "lines in a followed JSONL file", "each counted and skipped (logged once); nothing evaluated or used "
             "as a path; the next good event printed", "5 malformed skipped, 0 good lost")


def test_jsonl_urls(tmp_path: Path) -> None:
    """Bad jsonl URLs are one-line ConfigErrors at install; percent-encoding works."""
    bad = ["jsonl:", "jsonl://", "jsonl://host/x.jsonl", f"jsonl:{tmp_path}/", "jsonl:/no/such/dir/x.jsonl",
           f"jsonl:{tmp_path}/a\x00b"]
    import monitor_agent
    for url in bad:
        with pytest.raises(ConfigError) as info:
            monitor_agent.install(transports=url)
        assert str(info.value).startswith("transports=") and "\n" not in str(info.value)
    assert monitor_agent.get_agent() is None
    started = time.monotonic()
    agent = monitor_agent.install(transports=f"jsonl://{tmp_path}/with%20space.jsonl")
    assert os.path.exists(tmp_path / "with space.jsonl") and time.monotonic() - started < 5
    assert agent is not None
