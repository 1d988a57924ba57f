"""``monitor-agent report``: ranking, memory episodes, robustness, progress, HTML (in headless Chromium), speed."""
from __future__ import annotations

import html.parser
import io
import json
import os
import struct
import subprocess
import time
import zlib
from typing import Any, Dict, Iterable, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor_agent import wire
from monitor_agent.cli.report import Progress
from monitor_agent.report import LogReader, ReportBuilder, build_report, render_text
from monitor_agent.report.html import render_html
from monitor_agent.report.model import Timeline

from .brokers import require_program
from .helpers import run_cli
from .reliability._record import observed

T0 = 1_714_564_800.0  # 2024-05-01 12:00:00 UTC
MB = 1024 * 1024


def frame(file: str, line: int, function: str, app: bool = True, code: str = "work()") -> Dict[str, Any]:
    return {"file": file, "line": line, "function": function, "code": code, "app": app}


LIB = frame("/usr/lib/python3.11/socket.py", 700, "recv", app=False, code="return self._sock.recv(n)")
SITE_A = [frame("/srv/app/main.py", 10, "handle"), frame("/srv/app/db.py", 42, "slow_query"), LIB]
SITE_B = [frame("/srv/app/main.py", 11, "handle"), frame("/srv/app/parse.py", 7, "parse_json")]
SITE_C = [frame("/srv/app/jobs.py", 99, "nightly"), frame("/srv/app/jobs.py", 120, "compress")]


def envelope(name: str, data: Dict[str, Any], *, ts: float, pid: int = 100, host: str = "web-1",
             service: str = "shop") -> Dict[str, Any]:
    """A real envelope (wire.build_envelope) with the source and time of our choosing."""
    env = wire.build_envelope(name, data, service=service)
    env["ts"] = ts
    env["source"] = {"host": host, "pid": pid, "service": service, "agent": wire.AGENT}
    return env


def block_pair(episode: int, stack: List[Dict[str, Any]], duration: float, *, start: float,
               greenlet: str = "worker-1", **source: Any) -> List[Dict[str, Any]]:
    """The blocked and unblocked envelopes of one episode, as the agent writes them."""
    common = {"threshold": 0.1, "episode": episode, "started_at": start, "culprit": "greenlet", "greenlet": greenlet,
              "detected_by": "watchdog", "held_gil": False, "stack": stack}
    inner = stack[-1] if stack[-1]["app"] else stack[-2]
    profile = [dict(inner, seconds=round(duration * 0.9, 6), share=0.9),
               dict(LIB, seconds=round(duration * 0.1, 6), share=0.1)]
    return [envelope("gevent.event_loop_blocked", dict(common, blocking_time=0.1), ts=start + 0.1, **source),
            envelope("gevent.event_loop_unblocked", dict(common, blocking_time=duration, profile=profile, samples=9),
                     ts=start + duration, **source)]


def memory_episode(start: float, peaks: Iterable[int], end_usage: int, *, threshold: int = 200 * MB,
                   **source: Any) -> List[Dict[str, Any]]:
    events = []
    ts = start
    for peak in peaks:
        events.append(envelope("gevent.memory_threshold_exceeded",
                               {"mem_usage": peak, "max_allowed": threshold, "memory_info": {"rss": peak}},
                               ts=ts, **source))
        ts += 1.0
    top = max(peaks)
    events.append(envelope("gevent.memory_under_threshold",
                           {"mem_usage": end_usage, "max_allowed": threshold, "max_memory_usage": top + MB,
                            "memory_info": {"rss": end_usage}}, ts=ts + 1.0, **source))
    return events


def write_jsonl(path: Any, envelopes: Iterable[Dict[str, Any]], tail: bytes = b"") -> str:
    with open(path, "wb") as f:
        for env in envelopes:
            f.write(wire.encode(env) + b"\n")
        f.write(tail)
    return str(path)


def ranking_log() -> List[Dict[str, Any]]:
    """Site A: 3 x 0.5 s (1.5 s), site B: 10 x 0.1 s (1.0 s), site C: 1 x 0.9 s; two processes; one memory episode."""
    events: List[Dict[str, Any]] = []
    episode = 0
    t = T0
    for i in range(10):
        episode += 1
        events += block_pair(episode, SITE_B, 0.1, start=t + i * 2)
    for i in range(3):
        events += block_pair(i + 1, SITE_A, 0.5, start=t + 1 + i * 3, pid=200, host="web-2")
    events += block_pair(episode + 1, SITE_C, 0.9, start=t + 30, greenlet="cron")
    events += memory_episode(T0 + 5, [210 * MB, 250 * MB], 150 * MB, pid=200, host="web-2")
    events.sort(key=lambda e: e["ts"])
    return events


def report_of(path: str, top: int = 10) -> Tuple[str, LogReader]:
    reader = LogReader([path])
    report = build_report(reader)
    return render_text(report, reader.skipped, files=1, lines=reader.lines, top=top), reader


# -- ranking, memory, processes --------------------------------------------------


def test_top_sites_ranked_by_total_time_with_culprit_and_profile(tmp_path: Any) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", ranking_log())
    reader = LogReader([path])
    report = build_report(reader)
    assert [s.culprit["function"] for s in report.sites if s.culprit] == ["slow_query", "parse_json", "compress"]
    a, b, c = report.sites
    assert (a.count, round(a.total, 6), round(a.max, 6)) == (3, 1.5, 0.5)
    assert (b.count, round(b.total, 6), round(b.max, 6)) == (10, 1.0, 0.1)
    assert (c.count, round(c.max, 6), c.greenlet) == (1, 0.9, "cron")
    assert a.top_profile(1)[0][0] == "/srv/app/db.py:42 slow_query"
    assert a.top_profile(2)[1][0].endswith("socket.py:700 recv")
    assert round(a.top_profile(1)[0][1], 3) == 0.9
    assert reader.skipped.total == 0

    result = run_cli("report", path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("/srv/app/db.py:42 slow_query") < out.index("/srv/app/parse.py:7 parse_json") \
        < out.index("/srv/app/jobs.py:120 compress")
    assert "1.500s" in out and "90% /srv/app/db.py:42 slow_query" in out
    assert "from 2 processes" in out and "Skipped lines: 0" in out


def test_memory_episode_and_process_totals(tmp_path: Any) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", ranking_log())
    report = build_report(LogReader([path]))
    (episode,) = report.memory_episodes
    assert episode.process == ("web-2", 200, "shop")
    assert episode.peak == 251 * MB  # the under event's max_memory_usage is the highest figure
    assert episode.duration == pytest.approx(3.0)
    procs = {p.key: p for p in report.processes}
    web1, web2 = procs[("web-1", 100, "shop")], procs[("web-2", 200, "shop")]
    assert (web1.blocks, round(web1.blocked, 6), web1.memory_peak) == (11, 1.9, None)
    assert (web2.blocks, round(web2.blocked, 6), web2.memory_peak, web2.memory_episodes) == (3, 1.5, 251 * MB, 1)
    assert web2.events == 6 + 3
    text, _ = report_of(path)
    assert "251.0MiB" in text and "200.0MiB" in text and "3.000s" in text


def test_open_episodes_are_reported_as_unfinished_or_still_over(tmp_path: Any) -> None:
    events = block_pair(1, SITE_A, 0.7, start=T0)[:1]  # blocked, never unblocked
    events.append(envelope("gevent.memory_threshold_exceeded", {"mem_usage": 300 * MB, "max_allowed": 200 * MB},
                           ts=T0 + 1))
    path = write_jsonl(tmp_path / "open.jsonl", events)
    report = build_report(LogReader([path]))
    (site,) = report.sites
    assert (site.count, site.unfinished, site.total) == (1, 1, 0.1)
    (episode,) = report.memory_episodes
    assert episode.end is None and episode.peak == 300 * MB
    text, _ = report_of(path)
    assert "1 unfinished" in text and "(still over)" in text


def test_several_files_are_one_report(tmp_path: Any) -> None:
    events = ranking_log()
    first = write_jsonl(tmp_path / "a.jsonl", [e for e in events if e["source"]["pid"] == 100])
    second = write_jsonl(tmp_path / "b.jsonl", [e for e in events if e["source"]["pid"] == 200])
    result = run_cli("report", first, second, "--top", "2")
    assert result.returncode == 0, result.stderr
    assert "2 files" in result.stdout and "from 2 processes" in result.stdout
    assert "slow_query" in result.stdout and "parse_json" in result.stdout
    assert "compress" not in result.stdout.split("Memory episodes")[0]  # --top 2
    assert "1 more sites" in result.stdout


# -- robustness -------------------------------------------------------------------


def test_bad_lines_are_counted_and_skipped_never_fatal(tmp_path: Any) -> None:
    good = ranking_log()[:4]
    no_source = dict(good[0])
    del no_source["source"]
    bad_data = envelope("gevent.event_loop_unblocked", {"blocking_time": "slow", "stack": "nope", "profile": [1, {}],
                                                        "episode": -3}, ts=T0 + 2)
    lines = [wire.encode(e) for e in good] + [
        b"this is not json",
        b"[1, 2, 3]",
        b'"just a string"',
        json.dumps(dict(good[0], schema=99)).encode(),
        json.dumps(no_source).encode(),
        json.dumps(dict(good[0], event="some.other_event")).encode(),
        b'{"event": "gevent.event_loop_blocked", "schema": 1, "ts": NaN}',
        b'\xff\xfe{"not": "utf-8"}',
        b"[" * 100_000 + b"]" * 100_000,
        b"x" * (5 * MB),  # longer than any envelope the agent accepts
        b"",
        b"   ",
        wire.encode(bad_data),  # valid envelope, nonsense data: used leniently
    ]
    tail = wire.encode(good[1])[:-20]  # the writer was killed mid-line
    path = write_jsonl(tmp_path / "messy.jsonl", [], tail=b"\n".join(lines) + b"\n" + tail)
    result = run_cli("report", path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""
    _, reader = report_of(path)
    assert reader.events == 5
    assert reader.skipped.counts == {
        "not JSON": 2, "not a JSON object": 2, "wrong or missing schema": 1, "missing source": 1,
        "unknown event name": 1, "not UTF-8": 1, "line too long": 1, "truncated last line": 1,
        "nested too deeply": 1}
    assert reader.skipped.first_seen["line too long"] == f"{path}:14"
    out = result.stdout
    assert "Skipped lines: 11" in out and "truncated last line" in out and f"{path}:5" in out
    observed("a hostile JSONL file for monitor-agent report", "non-JSON, non-objects, wrong schema, missing source, "
             "unknown names, NaN, invalid UTF-8, 100,000-deep nesting, a 5 MiB line, a truncated last line",
             "11 lines skipped and counted by reason with where each first occurred; exit 0; nothing on stderr",
             "11 bad lines skipped (counted), 0 good events lost")


def test_empty_file(tmp_path: Any) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = run_cli("report", str(path), "--html", str(tmp_path / "out.html"))
    assert result.returncode == 0, result.stderr
    assert "0 events from 0 processes" in result.stdout and "none" in result.stdout
    assert "No blocking episodes" in (tmp_path / "out.html").read_text()


@pytest.mark.parametrize("kind", ["missing", "directory", "unwritable html"])
def test_unusable_paths_are_one_line_errors(tmp_path: Any, kind: str) -> None:
    log = write_jsonl(tmp_path / "ok.jsonl", ranking_log())
    if kind == "missing":
        args = ["report", log, str(tmp_path / "nope.jsonl")]
        expected = "nope.jsonl: no such file"
    elif kind == "directory":
        args = ["report", str(tmp_path)]
        expected = "is a directory"
    else:
        args = ["report", log, "--html", str(tmp_path / "no" / "such" / "dir.html")]
        expected = "cannot write"
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("monitor-agent: report: ")
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_terminal_output_neutralises_control_characters(tmp_path: Any) -> None:
    stack = [frame("/srv/\x1b[31mred\x1b[0m.py", 1, "evil\nline")]
    path = write_jsonl(tmp_path / "ansi.jsonl", block_pair(1, stack, 0.2, start=T0, greenlet="g\x07",
                                                           service="svc\r"))
    text, _ = report_of(path)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "\\x1b[31mred" in text and "evil\\x0aline" in text


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                   max_size=4), max_leaves=12)
_data_keys = st.sampled_from(["blocking_time", "episode", "started_at", "stack", "profile", "culprit", "greenlet",
                              "suppressed_before", "mem_usage", "max_allowed", "max_memory_usage", "seconds"])
_frame = st.fixed_dictionaries({}, optional={"file": _json, "line": _json, "function": _json, "app": _json,
                                             "seconds": _json, "code": _json})
_data = st.dictionaries(_data_keys, _json | st.lists(_frame, max_size=4), max_size=8)


@st.composite
def _lines(draw: Any) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return bytes(draw(st.binary(max_size=200)))
    if kind == 1:
        return json.dumps(draw(_json)).encode()
    env = {"event": draw(st.sampled_from(sorted(wire.EVENT_NAMES))), "schema": 1, "id": "x", "seq": 1,
           "ts": draw(st.floats(allow_nan=False, allow_infinity=False) | st.integers()),
           "source": {"host": draw(st.text(max_size=5)), "pid": draw(st.integers()), "service": "s"},
           "data": draw(_data)}
    return json.dumps(env).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_lines(), max_size=30))
def test_random_lines_never_crash_the_report(lines: List[bytes]) -> None:
    reader = LogReader(["-"])
    stream = io.BytesIO(b"\n".join(lines))
    builder = ReportBuilder(timeline_points=50)
    for env in reader._read_stream(stream, "-"):
        builder.add(env)
    report = builder.report()
    assert reader.events + reader.skipped.total <= reader.lines
    render_text(report, reader.skipped, files=1, lines=reader.lines)
    render_html(report, reader.skipped, files=1, lines=reader.lines)


def test_timeline_stays_bounded() -> None:
    timeline = Timeline(max_points=100)
    for i in range(100_000):
        timeline.add(i % 3, T0 + i * 0.01, float(i % 97))
    assert len(timeline.bins) <= 100
    assert max(v for s in timeline.series() for _, v in timeline.points(s)) == 96.0  # spikes survive binning
    many = Timeline(max_points=10)
    for series in range(50):  # more series than points allowed: must still terminate
        many.add(series, T0, 1.0)
    assert len(many.bins) == 50


# -- progress ----------------------------------------------------------------------


def test_progress_is_throttled_and_erased() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(stream, interval=1.0, clock=lambda: now[0])
    for i in range(256 * 40):
        now[0] = i / 2560  # 4 s in all
        progress(i * 100, 256 * 40 * 100, "/logs/big.jsonl")
    progress.finish()
    updates = stream.getvalue().count("\rmonitor-agent report:")
    assert 2 <= updates <= 5
    assert "% (" in stream.getvalue() and "big.jsonl" in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[K")


def test_no_progress_when_stderr_is_not_a_terminal(tmp_path: Any) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", ranking_log())
    assert run_cli("report", path).stderr == ""


# -- HTML ---------------------------------------------------------------------------

EVIL = '<script>alert("x")</script>'


def evil_log() -> List[Dict[str, Any]]:
    stack = [frame(f'/srv/"><img src=x onerror=alert(1)>{EVIL}.py', 5, EVIL, code=EVIL)]
    events = ranking_log()
    events += block_pair(1, stack, 0.3, start=T0 + 12, greenlet=EVIL, pid=300, host=EVIL, service="<b>svc</b>")
    events += memory_episode(T0 + 40, [230 * MB], 100 * MB, pid=300, host=EVIL, service="<b>svc</b>")
    return events


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: List[Tuple[str, Dict[str, Optional[str]]]] = []
        self.scripts: List[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)
            self._in_script = False


def test_html_is_self_contained_and_escapes_everything(tmp_path: Any) -> None:
    path = write_jsonl(tmp_path / "evil.jsonl", evil_log())
    out = tmp_path / "report.html"
    result = run_cli("report", path, "--html", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert EVIL not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    parser = _Tags()
    parser.feed(page)
    names = {tag for tag, _ in parser.tags}
    assert names <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "ul", "li", "span", "svg",
                     "line", "text", "circle", "polyline", "table", "thead", "tbody", "tr", "th", "td",
                     "code", "br", "script"}, names
    for tag, attrs in parser.tags:
        assert not {"src", "href", "xlink:href", "action", "srcset"} & set(attrs), (tag, attrs)
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)
    assert [t for t, _ in parser.tags].count("script") == 1
    assert "url(" not in page and "@import" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    csp = next(a["content"] for t, a in parser.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert csp is not None and "default-src 'none'" in csp and "'sha256-" in csp
    assert page.count("<circle") >= 14 + 1 + 4  # one dot per block, one per memory figure


def _png_colours(png: bytes) -> int:
    """Distinct RGB(A) pixel values in a non-interlaced 8-bit PNG (Chromium's screenshots)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    previous = bytearray(stride)
    colours = set()
    for row in range(height):
        filt = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            upleft = previous[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + left) & 255
            elif filt == 2:
                line[i] = (line[i] + up) & 255
            elif filt == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif filt == 4:
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else upleft)) & 255
        if row % 4 == 0:
            colours.update(bytes(line[i:i + channels]) for i in range(0, stride, channels * 4))
        previous = line
    return len(colours)


def test_html_opens_in_headless_chromium_without_console_errors(tmp_path: Any) -> None:
    chromium = require_program("chromium")
    path = write_jsonl(tmp_path / "evil.jsonl", evil_log())
    out = tmp_path / "report.html"
    assert run_cli("report", path, "--html", str(out)).returncode == 0
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,1400"]
    dom = subprocess.run([*flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no script error, no fetch blocked by the CSP
    assert 'data-ready="1"' in dom.stdout  # the inline script ran (its CSP hash is right)
    assert dom.stdout.count("<tr>") >= 6 and "slow_query" in dom.stdout
    assert "<script>alert" not in dom.stdout
    shot = tmp_path / "shot.png"
    taken = subprocess.run([*flags, f"--screenshot={shot}", out.as_uri()], capture_output=True, text=True,
                           timeout=120)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    assert _png_colours(shot.read_bytes()) > 20  # charts and text, not a blank page


def test_chromium_console_check_would_catch_an_error(tmp_path: Any) -> None:
    """The console check above is real: a page with a script error is caught by the same flags."""
    chromium = require_program("chromium")
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>missingFunction();</script></body></html>")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert any(":CONSOLE" in line and "missingFunction" in line for line in dom.stderr.splitlines())


# -- size and speed ------------------------------------------------------------------


def big_log(path: Any, n: int, processes: int = 4) -> str:
    """*n* realistic envelopes from several processes: block pairs at 6 sites, memory episodes."""
    sites = [SITE_A, SITE_B, SITE_C,
             [frame("/srv/app/main.py", 20, "handle"), frame("/srv/app/render.py", 8, "render_page")],
             [frame("/srv/app/cache.py", 3, "warm"), frame("/usr/lib/python3.11/json/decoder.py", 353, "raw_decode",
                                                            app=False)],
             [frame("/srv/app/auth.py", 60, "check"), frame("/srv/app/auth.py", 77, "hash_password")]]
    written = 0
    episode = [0] * processes
    with open(path, "wb") as f:
        i = 0
        while written < n:
            p = i % processes
            source = {"pid": 1000 + p, "host": f"web-{p % 2}", "service": "shop"}
            t = T0 + i * 0.05
            if i % 50 == 49:
                batch = memory_episode(t, [210 * MB + i], 120 * MB, **source)
            else:
                episode[p] += 1
                site = (i // processes) % len(sites)  # every process hits every site; later sites block longer
                batch = block_pair(episode[p], sites[site], 0.1 + 0.03 * site + (i % 5) * 0.002, start=t,
                                   greenlet=f"g-{i % 40}", **source)
            for env in batch:
                f.write(wire.encode(env) + b"\n")
            written += len(batch)
            i += 1
    return str(path)


def test_report_on_100k_events_is_fast_and_bounded(tmp_path: Any, capsys: Any) -> None:
    path = big_log(tmp_path / "big.jsonl", 100_000)
    size = os.path.getsize(path)
    out = tmp_path / "big.html"
    started = time.monotonic()
    result = run_cli("report", path, "--html", str(out), "--progress", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "100000 events from 4 processes" in result.stdout
    assert "Skipped lines: 0" in result.stdout
    assert "(by total blocked time; 6 sites, 49000 blocks)" in result.stdout
    ranked = [result.stdout.index(f) for f in ("auth.py:77", "cache.py:3", "render.py:8", "jobs.py:120")]
    assert ranked == sorted(ranked)  # the longer-blocking sites first (equal counts)
    assert "% (" in result.stderr  # --progress: shown although stderr is a pipe
    page = out.read_text(encoding="utf-8")
    assert page.count("<circle") <= 2 * 4_000 + 10  # the timelines are binned, not one dot per event
    assert elapsed < 60, elapsed  # generous: a loaded 2-core machine; typically a few seconds
    with capsys.disabled():
        print(f"\n[report] 100,000 events, {size / MB:.1f} MiB: text+html in {elapsed:.2f}s "
              f"(HTML {len(page) / 1024:.0f} KiB)")


def test_absurd_numbers_render(tmp_path: Any) -> None:
    events = [envelope("gevent.event_loop_unblocked", {"blocking_time": 1e308, "seconds": 1e308,
                                                       "profile": [{"seconds": 1e308, "file": "a"}]}, ts=1e300),
              envelope("gevent.event_loop_unblocked", {"blocking_time": 5.0, "started_at": -1e308}, ts=-1e300),
              envelope("gevent.memory_under_threshold", {"mem_usage": 10**30, "max_memory_usage": 2**52}, ts=0)]
    path = write_jsonl(tmp_path / "absurd.jsonl", events)
    reader = LogReader([path])
    report = build_report(reader)
    assert reader.events == 3 and report.block_count == 2
    render_text(report, reader.skipped, files=1, lines=reader.lines)
    render_html(report, reader.skipped, files=1, lines=reader.lines)


def test_integers_beyond_any_float_are_skipped_or_ignored(tmp_path: Any) -> None:
    """10**400 as ts skips the line; as episode, duration or memory it is ignored (it used to raise OverflowError)."""
    huge = 10**400
    good = envelope("gevent.event_loop_unblocked", {"blocking_time": 0.2}, ts=T0)
    lines = [json.dumps(dict(good, ts=huge)).encode(),
             wire.encode(envelope("gevent.event_loop_blocked", {"episode": huge, "blocking_time": huge}, ts=T0)),
             wire.encode(envelope("gevent.memory_threshold_exceeded", {"mem_usage": huge, "max_allowed": 1}, ts=T0)),
             wire.encode(good)]
    path = write_jsonl(tmp_path / "huge.jsonl", [], tail=b"\n".join(lines) + b"\n")
    result = run_cli("report", path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    _, reader = report_of(path)
    assert reader.events == 3 and reader.skipped.counts == {"missing or bad ts": 1}
    assert wire.finite_number(huge) is None and wire.finite_number(2.5) == 2.5 and wire.finite_number(True) is None
