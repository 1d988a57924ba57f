"""The Prometheus exporter, end to end: real gevent apps under the agent, scraped over HTTP."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest
from prometheus_apps import App, app_env, app_source, samples, scrape, value, wait_scrape_until

from tests.brokers import REQUIRE, free_port, require_program
from tests.helpers import CAPTURED, PYTHON, SECRET


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[List[App]]:
    """Apps started by a test; killed at its end whatever happened."""
    started: List[App] = []
    yield started
    for app in started:
        app.kill()


def start(apps: List[App], tmp_path: Path, body: str, *, patch_all: bool = True, **env: str) -> App:
    state = tmp_path / f"state{len(apps)}"
    state.mkdir()
    app = App(app_source(body, patch_all=patch_all), str(state), app_env(**env))
    apps.append(app)
    return app


BLOCKING_APP = '''
def busy_view(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

for _ in range(2):
    gevent.spawn(busy_view, 0.3).join()
    gevent.sleep(0.1)
announce()
wait_for("go-1")
print("BLOCKING", flush=True)
spin(3.0)                  # the hub is stuck here while the test scrapes
print("UNBLOCKED", flush=True)
wait_for("go-2")
import gc
from gevent.hub import Hub
print("HUBS", sum(isinstance(o, Hub) for o in gc.get_objects()), flush=True)
'''


def test_metrics_after_real_blocks_parse_and_pass_promtool(apps: List[App], tmp_path: Path) -> None:
    """Episode counter, duration histogram, lag, memory and transport counters, with real values."""
    promtool = require_program("promtool")
    port = free_port()
    events = tmp_path / "events.jsonl"
    app = start(apps, tmp_path, BLOCKING_APP, MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{port}",
                MONITOR_AGENT_TRANSPORTS=f"jsonl:{events}", MONITOR_AGENT_MAX_MEMORY_USAGE="1000000",
                MONITOR_AGENT_MEMORY_MONITOR_PERIOD="0.1")
    ((url, pid),) = app.urls()
    assert url == f"http://127.0.0.1:{port}/metrics"
    found = wait_scrape_until(url, "monitor_agent_events_total", 4, outcome="sent")
    site = "<string>:busy_view"
    assert value(found, "monitor_agent_blocked_episodes_total", site=site) == 2
    assert value(found, "monitor_agent_blocked_duration_seconds_count", site=site) == 2
    total = value(found, "monitor_agent_blocked_duration_seconds_sum", site=site)
    assert 0.5 <= total <= 5.0, total  # two blocks of 0.3 s, measured
    assert value(found, "monitor_agent_blocked_duration_seconds_bucket", site=site, le="0.05") == 0
    assert value(found, "monitor_agent_blocked_duration_seconds_bucket", site=site, le="+Inf") == 2
    assert value(found, "monitor_agent_blocking_detected_episodes_total", outcome="reported") >= 2
    assert value(found, "monitor_agent_info", pid=str(pid)) == 1
    lag_count = value(found, "monitor_agent_loop_lag_seconds_count")
    assert lag_count > 10
    assert value(found, "monitor_agent_loop_lag_seconds_bucket", le="+Inf") == lag_count
    assert value(found, "monitor_agent_loop_lag_seconds_bucket", le="0.1") < lag_count  # the 0.3 s blocks
    assert value(found, "monitor_agent_memory_usage_bytes") > 1_000_000
    assert value(found, "monitor_agent_memory_threshold_bytes") == 1_000_000  # MAX_MEMORY_USAGE
    assert value(found, "monitor_agent_memory_threshold_events_total", kind="exceeded") >= 1
    transport = f"jsonl:{events}"
    assert value(found, "monitor_agent_events_total", transport=transport, outcome="sent") >= 4
    assert value(found, "monitor_agent_events_total", transport=transport, outcome="dropped_queue_full") == 0
    assert value(found, "process_resident_memory_bytes") > 1_000_000

    text, content_type = scrape(url)
    assert content_type.startswith("text/plain; version=0.0.4")
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == "", check.stdout + check.stderr

    # While the app's hub is stuck in a busy loop, the exporter (native thread, real socket) still answers.
    app.go("go-1")
    app.read_line("BLOCKING")
    during = wait_scrape_until(url, "monitor_agent_loop_blocked", 1)
    assert value(during, "monitor_agent_loop_blocked") == 1
    assert app.proc.poll() is None and "UNBLOCKED\n" not in app.lines
    app.read_line("UNBLOCKED")
    app.go("go-2")
    # No hub was made in the server's thread: it never touched a patched socket or the gevent API.
    assert app.read_line("HUBS") == "HUBS 1"
    _, err = app.finish()
    assert app.proc.returncode == 0, err


def test_openmetrics_when_asked(apps: List[App], tmp_path: Path) -> None:
    """Prometheus asks for OpenMetrics by default; the answer is valid OpenMetrics."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    app = start(apps, tmp_path, 'announce()\nwait_for("go-1")\n',
                MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{free_port()}")
    ((url, _),) = app.urls()
    text, content_type = scrape(url, accept="application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"monitor_agent_loop_lag_seconds", "monitor_agent_blocked_episodes"} <= names
    app.go("go-1")
    app.finish()


def test_only_metrics_path_is_served(apps: List[App], tmp_path: Path) -> None:
    app = start(apps, tmp_path, 'announce()\nwait_for("go-1")\n',
                MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{free_port()}")
    ((url, _),) = app.urls()
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        scrape(url.replace("/metrics", "/other"))
    assert info.value.code == 404
    app.go("go-1")
    app.finish()


SITES_APP = '''
def make(n):
    def blocker():
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass
    blocker.__name__ = blocker.__qualname__ = f"site_{n}"
    blocker.__code__ = blocker.__code__.replace(co_name=f"site_{n}", co_qualname=f"site_{n}")
    return blocker

gevent.sleep(0.7)  # past the startup grace: start-up pauses cannot take a site slot first
for n in range(8):
    gevent.spawn(make(n)).join()
    gevent.sleep(0.05)
announce()
wait_for("go-1")
'''
KNOWN_SITES = {f"<string>:site_{n}" for n in range(8)}
# A 100 ms threshold, 300 ms blocks and a startup grace: a loaded machine's pauses rarely count, and the
# assertions below still hold when one does (an extra episode may take a named slot: >=, not ==).
QUIET_AGENT = {"MONITOR_AGENT_MAX_BLOCKING_TIME": "100ms", "MONITOR_AGENT_STARTUP_GRACE": "0.5"}


def test_site_labels_are_bounded(apps: List[App], tmp_path: Path) -> None:
    """Eight distinct blocking sites with MAX_SITES=3: three named, the rest under site="other"."""
    app = start(apps, tmp_path, SITES_APP, MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{free_port()}",
                MONITOR_AGENT_PROMETHEUS_MAX_SITES="3", **QUIET_AGENT)
    ((url, _),) = app.urls()
    found = wait_scrape_until(url, "monitor_agent_blocked_episodes_total", 8)
    by_site = {s.labels["site"]: s.value for s in found["monitor_agent_blocked_episodes_total"]}
    # Bounded: at least 8 distinct sites were seen, so all 3 named slots are taken and the rest is "other".
    assert len(by_site) == 3 + 1 and "other" in by_site, by_site
    named_known = {site for site in by_site if site in KNOWN_SITES}
    assert named_known, by_site  # the app's own sites come first (an extra episode may take a slot)
    assert by_site["other"] >= 8 - sum(by_site[site] for site in named_known), by_site
    assert sum(by_site.values()) == value(found, "monitor_agent_blocking_detected_episodes_total", outcome="reported")
    app.go("go-1")
    app.finish()


def test_taken_port_is_one_clear_line_and_the_app_carries_on(apps: List[App], tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        app = start(apps, tmp_path, '''
            announce()
            gevent.sleep(0.6)  # past the startup grace
            spin(0.3)
            gevent.sleep(0.1)
            print("APP DONE", agent.stats()["blocking"]["reported"], flush=True)
            ''', MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{port}", **QUIET_AGENT)
        ((url, _),) = app.urls()
        out, err = app.finish()
    assert url == "None"
    assert app.proc.returncode == 0, err
    (done,) = [line for line in out.splitlines() if line.startswith("APP DONE ")]
    assert int(done.split()[2]) >= 1, out  # the agent still detects blocks (a loaded machine may add one)
    lines = [line for line in err.splitlines() if "/metrics" in line]
    assert len(lines) == 1, err
    assert f"cannot serve /metrics on 127.0.0.1:{port} (MONITOR_AGENT_PROMETHEUS_ADDR)" in lines[0]
    assert "Address already in use" in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("addr", ["9464", "localhost", "127.0.0.1:http", "[::1:9464", "127.0.0.1:70000",
                                  "127.0.0.1:9479-9464", "no such host.invalid:9464"])
def test_bad_addr_makes_monitor_agent_run_exit_2(addr: str) -> None:
    env = app_env(MONITOR_AGENT_PROMETHEUS_ADDR=addr)
    result = subprocess.run([PYTHON, "-m", "monitor_agent.cli", "run", "--", PYTHON, "-c", "print('PROGRAM RAN')"],
                            env=env, capture_output=True, text=True, timeout=60)
    CAPTURED.extend([result.stdout, result.stderr])
    assert result.returncode == 2, result.stderr
    assert "PROGRAM RAN" not in result.stdout
    assert f"MONITOR_AGENT_PROMETHEUS_ADDR={addr!r}" in result.stderr
    assert "host:port" in result.stderr


FORK_APP = '''
def parent_only():
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass

def child_only():
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass

gevent.spawn(parent_only).join()
pid = os.fork()
if pid == 0:
    gevent.spawn(child_only).join()
    gevent.sleep(0.1)
    announce()
    wait_for("go-child")
    os._exit(0)
announce()
wait_for("go-parent")
os.waitpid(pid, 0)
'''


def test_forked_child_serves_its_own_metrics_on_the_next_port(apps: List[App], tmp_path: Path) -> None:
    """With a port range, parent and child each serve their own process's metrics."""
    base = free_port()
    app = start(apps, tmp_path, FORK_APP, MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{base}-{base + 3}")
    announced = dict((pid, url) for url, pid in app.urls(2))
    assert len(announced) == 2
    parent_pid = app.proc.pid
    child_pid = next(pid for pid in announced if pid != parent_pid)
    assert announced[parent_pid] != announced[child_pid]
    for pid, own, other in ((parent_pid, "parent_only", "child_only"), (child_pid, "child_only", "parent_only")):
        found = wait_scrape_until(announced[pid], "monitor_agent_blocked_episodes_total", 1, site=f"<string>:{own}")
        assert value(found, "monitor_agent_info", pid=str(pid)) == 1
        sites = {s.labels["site"] for s in found["monitor_agent_blocked_episodes_total"]}
        assert f"<string>:{other}" not in sites
    app.go("go-child")
    app.go("go-parent")
    _, err = app.finish()
    assert app.proc.returncode == 0, err
    assert "cannot serve" not in err


def test_uninstall_stops_the_thread_and_frees_the_port_at_once(apps: List[App], tmp_path: Path) -> None:
    port = free_port()
    app = start(apps, tmp_path, '''
        def exporter_threads():
            names = []
            for tid in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{tid}/comm") as f:
                        names.append(f.read().strip())
                except OSError:  # the thread just ended
                    pass
            return names.count("prom-exporter")
        def threads_once(expected):
            """The count once it is *expected* (the thread names itself, or ends, a moment later), or after 5 s."""
            deadline = time.perf_counter() + 5
            while exporter_threads() != expected and time.perf_counter() < deadline:
                gevent.sleep(0.02)
            return exporter_threads()
        announce()
        print("THREADS", threads_once(1), flush=True)
        monitor_agent.uninstall()
        print("UNINSTALLED", threads_once(0), flush=True)
        wait_for("go-1")
        agent = monitor_agent.install()   # a new agent serves on the same port again
        announce()
        wait_for("go-2")
        ''', MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{port}")
    ((url, _),) = app.urls()
    assert app.read_line("THREADS") == "THREADS 1"
    assert app.read_line("UNINSTALLED") == "UNINSTALLED 0"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again
    app.go("go-1")
    ((again, _),) = app.urls()
    assert again == url
    assert "monitor_agent_info" in samples(scrape(url)[0])
    app.go("go-2")
    _, err = app.finish()
    assert app.proc.returncode == 0, err
    assert "cannot serve" not in err


def test_samples_helper_sees_histograms() -> None:
    """The test's own parser helper (guards the assertions above against a vacuous parse)."""
    text = ('# TYPE x_seconds histogram\nx_seconds_bucket{le="1.0"} 1.0\nx_seconds_bucket{le="+Inf"} 2.0\n'
            'x_seconds_count 2.0\nx_seconds_sum 3.0\n')
    found = samples(text)
    assert value(found, "x_seconds_bucket", le="+Inf") == 2 and value(found, "x_seconds_sum") == 3
    assert os.path.exists(PYTHON)


def test_transport_labels_never_show_a_password(apps: List[App], tmp_path: Path) -> None:
    """The transport label is transport.describe(): the URL with its password redacted."""
    try:
        import monitor_agent_redis  # noqa: F401 - only whether the redis transport is installed
    except ImportError:
        if REQUIRE:
            pytest.fail("monitor-agent-redis is not installed and MONITOR_AGENT_REQUIRE_BROKERS=1")
        pytest.skip("monitor-agent-redis is not installed")
    down = free_port()  # nothing listens there: events are retried, counters still exported
    app = start(apps, tmp_path, 'announce()\nspin(0.2)\ngevent.sleep(0.3)\nprint("SCRAPE", flush=True)\n'
                'wait_for("go-1")\n', MONITOR_AGENT_PROMETHEUS_ADDR=f"127.0.0.1:{free_port()}",
                MONITOR_AGENT_TRANSPORTS=f"redis://:{SECRET}@127.0.0.1:{down}/0", MONITOR_AGENT_FLUSH_TIMEOUT="0.2")
    ((url, _),) = app.urls()
    app.read_line("SCRAPE")
    text, _ = scrape(url)
    assert SECRET not in text
    transports = {s.labels["transport"] for s in samples(text)["monitor_agent_transport_submitted_events_total"]}
    assert len(transports) == 1
    (label,) = transports
    assert label.startswith("redis://") and f"127.0.0.1:{down}" in label, label
    assert value(samples(text), "monitor_agent_transport_submitted_events_total", transport=label) >= 1
    app.go("go-1")
    _, err = app.finish()
    assert SECRET not in err
