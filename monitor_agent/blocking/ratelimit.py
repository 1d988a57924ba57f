"""Per-site rate limiting of blocking reports, with nothing silently lost.

A site is the fingerprint of the culprit stack. Each site may be reported
``limit`` times per ``period``; further episodes are counted as suppressed and
the count rides on the site's next report (``suppressed_before``) and in
``Agent.stats()``.
"""
from __future__ import annotations

import collections
from typing import Dict, Tuple

__all__ = ["SiteRateLimiter"]


class _Window:
    __slots__ = ("reported", "start", "suppressed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.reported = 0
        self.suppressed = 0


class SiteRateLimiter:
    """At most *limit* reports per *period* seconds for each site.

    Args:
        rate: ``(limit, period)``, or ``None`` for no limit.
        max_sites: Sites remembered; the least recently seen is forgotten first.
    """

    def __init__(self, rate: Tuple[int, float] | None, max_sites: int = 1000) -> None:
        self.rate = rate
        self.max_sites = max_sites
        self._sites: "collections.OrderedDict[str, _Window]" = collections.OrderedDict()
        self.suppressed_total = 0

    def allow(self, site: str, now: float) -> Tuple[bool, int]:
        """Decide for one episode at *site*.

        Returns:
            ``(report, suppressed_before)``: whether to report it, and how many
            episodes of this site were suppressed since its last report.
        """
        if self.rate is None:
            return True, 0
        limit, period = self.rate
        window = self._sites.get(site)
        if window is None:
            window = self._sites[site] = _Window(now)
            if len(self._sites) > self.max_sites:
                self._sites.popitem(last=False)
        else:
            self._sites.move_to_end(site)
            if now - window.start >= period:
                window.start, window.reported = now, 0
        if window.reported < limit:
            window.reported += 1
            suppressed, window.suppressed = window.suppressed, 0
            return True, suppressed
        window.suppressed += 1
        self.suppressed_total += 1
        return False, 0

    def pending(self) -> Dict[str, int]:
        """Suppressed episodes per site not yet carried by a report."""
        return {site: w.suppressed for site, w in self._sites.items() if w.suppressed}
