"""The factory: URL forms, options and the errors for bad ones (no broker needed)."""
from __future__ import annotations

import os
from typing import Any, Dict

import pytest
from ma_redis_kit import fresh_agent, no_secret_leak  # noqa: F401 - autouse fixtures
from monitor_agent_redis import RedisEventTransport, factory

from monitor_agent import ConfigError
from monitor_agent.plugins import PluginRegistry
from tests.helpers import SECRET, clean_environ, run_python

GOOD: Dict[str, Dict[str, Any]] = {
    "redis://127.0.0.1:6379/0": {"host": "127.0.0.1", "port": 6379, "db": 0, "password": None},
    "redis://localhost": {"host": "localhost", "port": 6379, "db": 0},
    "redis://redis.example.com:7000/": {"host": "redis.example.com", "port": 7000, "db": 0},
    f"redis://:{SECRET}@10.0.0.5:6380/3": {"password": SECRET, "username": None, "db": 3, "port": 6380},
    f"redis://alice:{SECRET}@h/15": {"username": "alice", "password": SECRET, "db": 15},
    "redis://[::1]:6390/2": {"host": "::1", "port": 6390, "db": 2},
    "redis://[fe80::1%25eth0]:6379/0": {"host": "fe80::1%eth0"},
    "redis://:p%40ss%3Aw%2Fo%25rd@h:1/0": {"password": "p@ss:w/o%rd", "port": 1},
    "redis://h/0?socket_timeout=0.5&connect_timeout=1.5&health_check_interval=0&keepalive=false":
        {"socket_timeout": 0.5, "connect_timeout": 1.5, "health_check_interval": 0.0, "keepalive": False},
    "redis://h?db=4&max_batch=10&client_name=worker-1&dispatch=hub":
        {"db": 4, "max_batch": 10, "client_name": "worker-1", "dispatch": "hub"},
    "rediss://cache.example.com:6380/1": {"scheme": "rediss", "ssl_cert_reqs": "required",
                                          "ssl_check_hostname": True, "db": 1},
    "rediss://h/0?ssl_cert_reqs=none": {"ssl_cert_reqs": "none"},
    "rediss://h/0?ssl_check_hostname=false&ssl_cert_reqs=optional":
        {"ssl_check_hostname": False, "ssl_cert_reqs": "optional"},
    "unix:///var/run/redis/redis.sock?db=3": {"scheme": "unix", "path": "/var/run/redis/redis.sock", "db": 3},
    f"unix://:{SECRET}@/tmp/redis.sock": {"path": "/tmp/redis.sock", "password": SECRET, "db": 0},
    "unix://localhost/tmp/my%20redis.sock": {"path": "/tmp/my redis.sock"},
    # '@' after the authority that is not a cut-short password
    "unix:///tmp/redis@1.sock": {"path": "/tmp/redis@1.sock"},
    "redis://h:6379/0?client_name=a@b": {"client_name": "a@b", "port": 6379},
    "redis://[::1]/0?client_name=a@b": {"host": "::1", "client_name": "a@b"},
    f"redis://:{SECRET}@h/0?client_name=a@b": {"password": SECRET, "client_name": "a@b"},
}


@pytest.mark.parametrize("url", list(GOOD))
def test_good_urls(url: str) -> None:
    transport = factory(url)
    assert isinstance(transport, RedisEventTransport)
    for field, expected in GOOD[url].items():
        assert getattr(transport.settings, field) == expected, field
    assert SECRET not in repr(transport) and SECRET not in transport.describe()
    assert SECRET not in repr(transport.settings)
    assert transport.can_receive
    assert transport.scheme == url.split(":", 1)[0]


BAD = {
    f"redis://:{SECRET}@127.0.0.1:99999/0": "bad host or port",
    "redis://127.0.0.1:port/0": "bad host or port",
    "redis://127.0.0.1:0/0": "port 0",
    f"redis://:{SECRET}@127.0.0.1:6379/x": "bad database 'x'",
    "redis://127.0.0.1:6379/-1": "bad database",
    "redis://127.0.0.1:6379/0/1": "bad database",
    "redis:///0": "host is missing",
    f"redis://:{SECRET}@:6379/0": "host is missing",
    f"redis://:{SECRET}@127.0.0.1/0?colour=blue": "unknown option 'colour'",
    "redis://h/0?socket_timeout=0": "bad socket_timeout",
    "redis://h/0?socket_timeout=nan": "bad socket_timeout",
    "redis://h/0?connect_timeout=soon": "bad connect_timeout",
    "redis://h/0?keepalive=maybe": "bad keepalive",
    "redis://h/0?max_batch=0": "bad max_batch",
    "redis://h/0?dispatch=greenlet": "bad dispatch",
    "redis://h/1?db=2": "both in the URL path and as the db option",
    "redis://h/0?db=1&db=2": "given twice",
    "redis://alice@h/0": "needs a password",
    "redis://h/0?ssl_ca_certs=/etc/hostname": "needs rediss://",
    "rediss://h/0?ssl_ca_certs=/does/not/exist.pem": "does not exist",
    "rediss://h/0?ssl_cert_reqs=maybe": "bad ssl_cert_reqs",
    "rediss://h/0?ssl_keyfile=/etc/hostname": "ssl_keyfile needs ssl_certfile",
    "unix://": "socket path is missing",
    "unix://redis.example.com/tmp/r.sock": "not host",
    f"unix://:{SECRET}@/tmp/r.sock?db=abc": "bad db='abc'",
    "redis://h/0#frag": "fragment",
    # A password with an unencoded '/', '?' or '#' cuts the authority short: never shown, in part or whole.
    f"redis://:{SECRET}/x@h/0": "percent-encode it",
    f"redis://:x/{SECRET}@h:6379/0": "percent-encode it",
    f"redis://alice:{SECRET}/x@h:6379/0": "percent-encode it",
    f"redis://:123/{SECRET}@h/0": "percent-encode it",
    f"redis://alice:123/{SECRET}@h/0": "percent-encode it",
    f"redis://:{SECRET}?x@h/0": "percent-encode it",
    f"redis://:{SECRET}#x@h/0": "percent-encode it",
    f"redis://alice:1#{SECRET}@h/0": "percent-encode it",
    f"rediss://:{SECRET}/x@h:6380/0": "percent-encode it",
    f"unix://:{SECRET}/x@/tmp/r.sock": "percent-encode it",
    f"unix://:x/{SECRET}@/tmp/r.sock?db=1": "percent-encode it",
}


@pytest.mark.parametrize("url", list(BAD))
def test_bad_urls_name_the_redacted_url_the_problem_and_the_form(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory(url)
    message = str(info.value)
    assert BAD[url] in message
    assert SECRET not in message
    if SECRET in url and BAD[url] != "percent-encode it":
        assert ":***@" in message
    scheme = url.split(":", 1)[0]
    assert f"expected {scheme}://" in message  # the accepted form
    assert "options:" in message and "socket_timeout" in message


def test_a_keyword_db_with_a_path_db_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"both in the URL path and as the db option \(\?db= or keyword\)"):
        factory("redis://h/1", db=2)


def test_keyword_options_override_the_query_and_are_validated() -> None:
    transport = factory("redis://h/0?socket_timeout=3", socket_timeout=0.25, max_batch=7)
    assert transport.settings.socket_timeout == 0.25
    assert transport.max_batch == 7
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        factory("redis://h/0", bogus=1)


def test_tls_files_are_checked(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until prepare()")
    transport = factory(f"rediss://h:6380/0?ssl_ca_certs={ca}")
    assert transport.settings.ssl_ca_certs == os.path.abspath(str(ca))


def test_unreadable_tls_files_are_a_config_error_at_prepare(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    transport = factory(f"rediss://:{SECRET}@h:6380/0?ssl_ca_certs={ca}")
    with pytest.raises(ConfigError, match="cannot load the TLS certificates") as info:
        transport.prepare()
    assert SECRET not in str(info.value)
    with pytest.raises(RuntimeError, match="cannot load the TLS certificates"):
        transport.emit_event("gevent.x", {})


def test_entry_points_serve_the_three_schemes() -> None:
    registry = PluginRegistry()
    for scheme in ("redis", "rediss", "unix"):
        assert registry.transport_factory(scheme, variable="URL", url=f"{scheme}://") is factory


def test_install_reports_a_bad_url_as_config_error() -> None:
    import monitor_agent

    with pytest.raises(ConfigError) as info:
        monitor_agent.install(transports=f"redis://:{SECRET}@127.0.0.1:70000/0")
    assert "70000" in str(info.value) and SECRET not in str(info.value)


def test_importing_the_entry_point_module_is_cheap() -> None:
    result = run_python("""
        import sys
        import monitor_agent_redis
        t = monitor_agent_redis.factory("rediss://h/0")
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("redis", "ssl", "_ssl", "socket"))
        print(heavy)
    """, env=clean_environ())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_connections_use_the_pure_python_parser_even_with_hiredis() -> None:
    """hiredis's parser would call recv_into()/pending() on our TlsSocket; the RESP2 Python parser only recv()."""
    from redis._parsers import _HiredisParser, _RESP2Parser

    for url in ("redis://h/0", "rediss://h/0?ssl_cert_reqs=none", "unix:///tmp/r.sock"):
        transport = factory(url)
        transport.prepare()
        parser = transport._connection()._parser
        assert type(parser) is _RESP2Parser, url
        assert not isinstance(parser, _HiredisParser)


def test_a_tcp_socket_is_closed_when_connecting_fails_with_any_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor_agent_redis import _connection

    made = []

    class FailingSocket:
        def __init__(self, *args: Any) -> None:
            self.closed = False
            made.append(self)

        def setsockopt(self, *args: Any) -> None:
            pass

        def settimeout(self, timeout: float) -> None:
            pass

        def connect(self, address: Any) -> None:
            raise KeyboardInterrupt  # not an OSError

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(_connection, "_socket_class", FailingSocket)
    transport = factory("redis://127.0.0.1:1/0")
    transport.prepare()
    with pytest.raises(KeyboardInterrupt):
        transport._connection()._connect()
    assert len(made) == 1 and made[0].closed


def test_code_that_runs_in_native_threads_imports_nothing() -> None:
    """Socket and TLS code runs in the publisher/consumer threads: its imports belong at module level."""
    import dis
    import inspect

    from monitor_agent_redis import _connection, transport

    importing = []
    for owner in (_connection.TlsSocket, _connection.RealSocketConnection, transport.RedisEventTransport):
        for name, function in inspect.getmembers(owner, inspect.isfunction):
            if name == "prepare" or not function.__module__.startswith("monitor_agent_redis"):  # prepare: hub thread
                continue
            if any(op.opname == "IMPORT_NAME" for op in dis.get_instructions(function)):
                importing.append(f"{owner.__name__}.{name}")
    assert importing == []
