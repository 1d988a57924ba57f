"""``monitor-agent report``: summaries of JSONL event logs, as text and as one HTML page.

:class:`~.reader.LogReader` streams envelopes out of one or many files (bad
lines are counted, never fatal), :class:`~.model.ReportBuilder` aggregates
them in bounded memory, and :func:`~.text.render_text` /
:func:`~.html.render_html` present the result.
"""
from __future__ import annotations

from .model import Report, ReportBuilder
from .reader import LogReader, SkipCounter, check_paths
from .text import render_text

__all__ = ["LogReader", "Report", "ReportBuilder", "SkipCounter", "build_report", "check_paths", "render_text"]


def build_report(reader: LogReader, timeline_points: int = 4_000) -> Report:
    """Read every envelope from *reader* and return the aggregated :class:`Report`."""
    builder = ReportBuilder(timeline_points)
    add = builder.add
    for envelope in reader:
        add(envelope)
    return builder.report()
