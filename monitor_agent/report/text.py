"""The plain-text report: aligned columns for a terminal."""
from __future__ import annotations

from typing import List

from ._fmt import clean, format_bytes, format_duration, format_span, format_time, process_label, table
from .model import Report
from .reader import SkipCounter

__all__ = ["render_text"]

PROFILE_FRAMES = 3


def _sites(report: Report, top: int) -> List[str]:
    lines = [f"Top blocking sites (by total blocked time; {len(report.sites)} sites, "
             f"{report.block_count} blocks)"]
    if not report.sites:
        return [*lines, "  none", ""]
    rows = []
    details: List[List[str]] = []
    for rank, site in enumerate(report.sites[:top], 1):
        extra = []
        if site.suppressed:
            extra.append(f"+{site.suppressed} suppressed")
        if site.unfinished:
            extra.append(f"{site.unfinished} unfinished")
        rows.append([f"{rank}", f"{site.count}", format_duration(site.total), format_duration(site.max),
                     f"{len(site.processes)}", clean(site.where()) + (f" ({', '.join(extra)})" if extra else "")])
        profile = "; ".join(f"{100 * share:.0f}% {clean(label)}" for label, share in site.top_profile(PROFILE_FRAMES))
        details.append([f"by {clean(site.who())}", f"profile: {profile or 'no samples'}"])
    rendered = table(["#", "count", "total", "max", "procs", "culprit (file:line function)"], rows,
                     right=(0, 1, 2, 3, 4))
    lines.append(rendered[0])
    pad = " " * (rendered[0].index("culprit"))
    for row_line, detail in zip(rendered[1:], details, strict=True):
        lines.append(row_line)
        lines.extend(pad + d for d in detail)
    if len(report.sites) > top:
        lines.append(f"  … {len(report.sites) - top} more sites (--top N)")
    return [*lines, ""]


def _memory(report: Report, top: int) -> List[str]:
    lines = [f"Memory episodes (threshold exceeded → back under; {report.memory_episode_count} in all, "
             "highest peaks first)"]
    if not report.memory_episodes:
        return [*lines, "  none", ""]
    rows = [[clean(process_label(e.process)), format_time(e.start), format_time(e.end) if e.end else "(still over)",
             format_duration(e.duration) if e.duration is not None else "?", format_bytes(e.peak),
             format_bytes(e.threshold)]
            for e in report.memory_episodes[:top]]
    lines += table(["process", "exceeded at", "under at", "duration", "peak", "threshold"], rows, right=(3, 4, 5))
    if report.memory_episode_count > top:
        lines.append(f"  … {report.memory_episode_count - top} more episodes")
    return [*lines, ""]


def _processes(report: Report, top: int) -> List[str]:
    procs = sorted(report.processes, key=lambda p: (-p.blocked, -p.events))
    lines = [f"Processes ({len(procs)}, by total blocked time)"]
    if not procs:
        return [*lines, "  none", ""]
    limit = max(top, 20)
    rows = [[clean(p.key[0]), f"{p.key[1]}", clean(p.key[2]), f"{p.events}", f"{p.blocks}", format_duration(p.blocked),
             format_duration(p.max_block), format_bytes(p.memory_peak) if p.memory_peak else "-",
             format_time(p.first), format_duration(p.last - p.first)]
            for p in procs[:limit]]
    lines += table(["host", "pid", "service", "events", "blocks", "blocked", "max block", "mem peak",
                    "first event (UTC)", "span"], rows, right=(1, 3, 4, 5, 6, 7, 9))
    if len(procs) > limit:
        lines.append(f"  … {len(procs) - limit} more processes")
    return [*lines, ""]


def _skipped(skipped: SkipCounter, errors: List[str]) -> List[str]:
    lines = [f"Skipped lines: {skipped.total}"]
    rows = [[reason, f"{count}", clean(skipped.first_seen[reason])]
            for reason, count in sorted(skipped.counts.items(), key=lambda kv: -kv[1])]
    if rows:
        lines += table(["reason", "lines", "first at"], rows, right=(1,))
    lines += [f"  read error: {clean(e)}" for e in errors]
    return lines


def render_text(report: Report, skipped: SkipCounter, *, files: int, lines: int, top: int = 10,
                errors: List[str] | None = None) -> str:
    """The whole text report.

    Args:
        report: The aggregates.
        skipped: Lines that were not events, by reason.
        files: How many files were read; ``lines`` how many lines.
        top: Rows per section.
        errors: Files that failed while being read.
    """
    head = [f"monitor-agent report: {files} file{'s' if files != 1 else ''}, {lines} lines, "
            f"{report.events} events from {len(report.processes)} process"
            f"{'es' if len(report.processes) != 1 else ''}",
            f"  {format_span(report.first, report.last)}", ""]
    body = _sites(report, top) + _memory(report, top) + _processes(report, top) + _skipped(skipped, errors or [])
    return "\n".join(head + body) + "\n"
