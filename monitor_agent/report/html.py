"""The HTML report: one self-contained page with timelines and tables.

Everything is inline: CSS, the charts (SVG drawn here, in Python) and a few
lines of JavaScript that only toggle series on and off. A Content-Security-
Policy forbids every fetch and allows only that script (by its hash), so the
page loads nothing from anywhere even if a log string slipped through. Every
string from the log is HTML-escaped; none is used as a URL or evaluated.
"""
from __future__ import annotations

import base64
import hashlib
import html
import math
from typing import Dict, List, Optional, Sequence, Tuple

from ._fmt import format_bytes, format_duration, format_span, format_time, process_label
from .model import MemoryEpisode, Process, Report, Timeline
from .reader import SkipCounter

__all__ = ["render_html"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")
WIDTH, HEIGHT = 1000, 260
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 26, 28
LEGEND_MAX = 40

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.summary{color:#555;margin:0 0 12px}
table{border-collapse:collapse;margin:4px 0 8px}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f5f5f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.profile{color:#555;font-size:12px}
svg{background:#fcfcfc;border:1px solid #ddd;max-width:100%;height:auto}
svg text{font:11px sans-serif;fill:#555}svg .grid{stroke:#e8e8e8}svg .axis{stroke:#999}
.legend{list-style:none;padding:0;margin:6px 0;display:flex;flex-wrap:wrap;gap:4px 14px}
.legend li{cursor:pointer;user-select:none}.legend li.off{opacity:.35}
.sw{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:5px}
.empty{color:#888;font-style:italic}
"""

# Clicking a legend entry hides or shows that process's points and lines.
_JS = """
(function(){
  var items=document.querySelectorAll('.legend li[data-s]');
  for(var i=0;i<items.length;i++){
    items[i].addEventListener('click',function(){
      var s=this.getAttribute('data-s');var off=this.classList.toggle('off');
      var els=document.querySelectorAll('svg [data-s="'+s+'"]');
      for(var j=0;j<els.length;j++){els[j].style.display=off?'none':'';}
    });
  }
  document.body.setAttribute('data-ready','1');
})();
"""


def _e(text: object) -> str:
    """HTML-escape anything (quotes too, so it is safe in attributes)."""
    return html.escape(str(text), quote=True)


def _color(series: int) -> str:
    return PALETTE[series % len(PALETTE)]


def _nice_max(value: float) -> float:
    """A round number at or above *value* for an axis."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = float(step * 10.0 ** exponent)
        if candidate >= value:
            return candidate
    return float(10.0 ** (exponent + 1))  # pragma: no cover


class _Chart:
    """Scales from (time, value) to SVG coordinates, and the axes."""

    def __init__(self, first: float, last: float, y_max: float) -> None:
        span = last - first
        if not math.isfinite(span) or span < 1e-3:  # one instant (or absurd timestamps): a one-second axis
            span = 1.0
            first -= 0.5
        self.first, self.span, self.y_max = first, span, y_max
        self.last = first + span

    def x(self, ts: float) -> float:
        x = LEFT + (WIDTH - LEFT - RIGHT) * (ts - self.first) / self.span
        return min(max(x, LEFT), WIDTH - RIGHT) if math.isfinite(x) else LEFT

    def y(self, value: float) -> float:
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * min(value, self.y_max) / self.y_max

    def axes(self, label: str, fmt_value: str) -> List[str]:
        parts = []
        for i in range(5):
            value = self.y_max * i / 4
            y = self.y(value)
            parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
            text = format_bytes(value) if fmt_value == "bytes" else format_duration(value)
            parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(text)}</text>')
        for i in range(5):
            ts = self.first + self.span * i / 4
            x = self.x(ts)
            anchor = "start" if i == 0 else "end" if i == 4 else "middle"
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                         f'{_e(format_time(ts, with_date=False))}</text>')
        parts.append(f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>')
        parts.append(f'<line class="axis" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
                     f'y2="{HEIGHT - BOTTOM}"/>')
        parts.append(f'<text x="{LEFT}" y="15">{_e(label)}</text>')
        return parts


def _svg(parts: Sequence[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" aria-label="{_e(title)}">' + "".join(parts) + "</svg>")


def _span(report: Report, timelines: Sequence[Timeline]) -> Tuple[float, float]:
    stamps = [ts for tl in timelines for entry in tl.bins.values() for ts in (entry[0], entry[2])]
    if report.first is not None:
        stamps += [report.first, report.last or report.first]
    return (min(stamps), max(stamps)) if stamps else (0.0, 1.0)


def _labels(report: Report) -> Dict[int, str]:
    return {i: process_label(p.key) for i, p in enumerate(report.processes)}


def _blocks_chart(report: Report, span: Tuple[float, float]) -> str:
    timeline = report.blocks
    if not timeline.bins:
        return '<p class="empty">No blocking episodes in these logs.</p>'
    labels = _labels(report)
    y_max = _nice_max(max(entry[1] for entry in timeline.bins.values()))
    chart = _Chart(span[0], span[1], y_max)
    parts = chart.axes("block duration", "seconds")
    for series in timeline.series():
        color = _color(series)
        for ts, duration in timeline.points(series):
            tip = f"{labels.get(series, '?')}\n{format_time(ts)} UTC\nblocked {format_duration(duration)}"
            parts.append(f'<circle data-s="{series}" cx="{chart.x(ts):.1f}" cy="{chart.y(duration):.1f}" r="3" '
                         f'fill="{color}" fill-opacity=".75"><title>{_e(tip)}</title></circle>')
    note = (f'<p class="summary">Each dot is a block: when it started and how long it lasted '
            f'(the longest per time bin of {format_duration(timeline.width)}; '
            f'{len(timeline.bins)} dots for {report.block_count} blocks).</p>')
    return _svg(parts, "blocks over time") + note


def _memory_chart(report: Report, span: Tuple[float, float]) -> str:
    timeline = report.memory
    if not timeline.bins:
        return '<p class="empty">No memory events in these logs.</p>'
    labels = _labels(report)
    top = max([entry[1] for entry in timeline.bins.values()] + list(report.thresholds.values()))
    chart = _Chart(span[0], span[1], _nice_max(top * 1.05))
    parts = chart.axes("memory", "bytes")
    for threshold in sorted(set(report.thresholds.values())):
        y = chart.y(threshold)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728" '
                     f'stroke-dasharray="6 4"><title>{_e("threshold " + format_bytes(threshold))}</title></line>')
    for series in timeline.series():
        color = _color(series)
        points = timeline.points(series)
        # A step line: a figure holds until the next one (the agent reports changes, not a series).
        steps = [(ts, prev) for (ts, _), (_, prev) in zip(points[1:], points[:-1], strict=True)]
        coords = " ".join(f"{chart.x(ts):.1f},{chart.y(v):.1f}"
                          for ts, v in sorted(points + steps, key=lambda p: p[0]))
        parts.append(f'<polyline data-s="{series}" points="{coords}" fill="none" stroke="{color}" '
                     f'stroke-width="1.5"/>')
        for ts, value in points:
            tip = f"{labels.get(series, '?')}\n{format_time(ts)} UTC\n{format_bytes(value)}"
            parts.append(f'<circle data-s="{series}" cx="{chart.x(ts):.1f}" cy="{chart.y(value):.1f}" r="3" '
                         f'fill="{color}"><title>{_e(tip)}</title></circle>')
    note = ('<p class="summary">Memory figures reported by the agent (it reports when usage crosses the '
            'threshold, at each new peak above it, and when it falls back under); dashed: threshold.</p>')
    return _svg(parts, "memory over time") + note


def _legend(report: Report) -> str:
    items = [f'<li data-s="{i}" title="click to hide or show"><span class="sw" style="background:{_color(i)}">'
             f'</span>{_e(process_label(p.key))}</li>' for i, p in enumerate(report.processes[:LEGEND_MAX])]
    more = len(report.processes) - LEGEND_MAX
    if more > 0:
        items.append(f"<li>… {more} more (colours repeat)</li>")
    return f'<ul class="legend">{"".join(items)}</ul>' if items else ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Tuple[str, bool]]], css_id: str) -> str:
    """*rows* hold ``(escaped_html, numeric)`` cells."""
    if not rows:
        return '<p class="empty">none</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if num else f"<td>{c}</td>" for c, num in row)
                   + "</tr>" for row in rows)
    return f'<table id="{css_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _sites_table(report: Report, top: int) -> str:
    rows = []
    for rank, site in enumerate(report.sites[:top], 1):
        profile = "<br>".join(f"{100 * share:.0f}% <code>{_e(label)}</code>" for label, share in site.top_profile(5))
        extra = f"<br>+{site.suppressed} suppressed by the rate limit" if site.suppressed else ""
        extra += f"<br>{site.unfinished} without an unblocked event" if site.unfinished else ""
        rows.append([(str(rank), True), (str(site.count), True), (_e(format_duration(site.total)), True),
                     (_e(format_duration(site.max)), True), (str(len(site.processes)), True),
                     (f"<code>{_e(site.where())}</code><br>by {_e(site.who())}{extra}", False),
                     (f'<span class="profile">{profile or "no samples"}</span>', False)])
    more = (f'<p class="summary">… {len(report.sites) - top} more sites.</p>' if len(report.sites) > top else "")
    return _table(["#", "count", "total", "max", "procs", "culprit", "sampled profile (top frames)"], rows,
                  "sites") + more


def _episode_row(e: MemoryEpisode) -> List[Tuple[str, bool]]:
    return [(_e(process_label(e.process)), False), (_e(format_time(e.start)), False),
            (_e(format_time(e.end) if e.end else "(still over)"), False),
            (_e(format_duration(e.duration) if e.duration is not None else "?"), True),
            (_e(format_bytes(e.peak)), True), (_e(format_bytes(e.threshold)), True)]


def _process_row(p: Process) -> List[Tuple[str, bool]]:
    return [(_e(p.key[0]), False), (str(p.key[1]), True), (_e(p.key[2]), False), (str(p.events), True),
            (str(p.blocks), True), (_e(format_duration(p.blocked)), True), (_e(format_duration(p.max_block)), True),
            (_e(format_bytes(p.memory_peak) if p.memory_peak else "-"), True), (_e(format_time(p.first)), False),
            (_e(format_duration(p.last - p.first)), True)]


def _skipped_table(skipped: SkipCounter) -> str:
    rows = [[(_e(reason), False), (str(count), True), (f"<code>{_e(skipped.first_seen[reason])}</code>", False)]
            for reason, count in sorted(skipped.counts.items(), key=lambda kv: -kv[1])]
    return _table(["reason", "lines", "first at"], rows, "skipped")


def _script_hash(script: str) -> str:
    return base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


def render_html(report: Report, skipped: SkipCounter, *, files: int, lines: int, top: int = 10,
                title: Optional[str] = None) -> str:
    """The whole report as one HTML page (no external resources, no fetches)."""
    span = _span(report, (report.blocks, report.memory))
    procs = sorted(report.processes, key=lambda p: (-p.blocked, -p.events))
    csp = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_script_hash(_JS)}'"
    summary = (f"{files} file{'s' if files != 1 else ''}, {lines} lines, {report.events} events from "
               f"{len(report.processes)} processes; {report.block_count} blocks at {len(report.sites)} sites; "
               f"{report.memory_episode_count} memory episodes; {skipped.total} lines skipped. "
               f"{format_span(report.first, report.last)}")
    body = [
        f"<h1>{_e(title or 'monitor-agent report')}</h1>",
        f'<p class="summary">{_e(summary)}</p>',
        _legend(report),
        '<h2 id="timeline">Blocks over time</h2>', _blocks_chart(report, span),
        '<h2 id="memory">Memory over time</h2>', _memory_chart(report, span),
        f'<h2 id="top-sites">Top blocking sites (of {len(report.sites)})</h2>', _sites_table(report, top),
        f"<h2>Memory episodes ({report.memory_episode_count}, highest peaks first)</h2>",
        _table(["process", "exceeded at (UTC)", "under at (UTC)", "duration", "peak", "threshold"],
               [_episode_row(e) for e in report.memory_episodes[:top]], "memory-episodes"),
        f"<h2>Processes ({len(procs)})</h2>",
        _table(["host", "pid", "service", "events", "blocks", "blocked", "max block", "mem peak",
                "first event (UTC)", "span"], [_process_row(p) for p in procs[:max(top, 50)]], "processes"),
        f"<h2>Skipped lines ({skipped.total})</h2>", _skipped_table(skipped),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title or 'monitor-agent report')}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{_JS}</script>\n</body></html>\n")
