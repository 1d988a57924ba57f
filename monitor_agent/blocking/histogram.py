"""A fixed-memory histogram of loop lag (seconds), log-linear like HdrHistogram.

Values from 1 µs to ~1000 s fall into buckets ~2 % wide; anything smaller
counts as zero, anything larger as the top bucket. ``record`` is called on the
hub thread every heartbeat tick, so it is a handful of arithmetic operations.
Reads (``snapshot``) may happen from any thread; they copy the counts.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

__all__ = ["QUANTILES", "LagHistogram"]

QUANTILES = (0.5, 0.9, 0.99, 0.999)
_MIN = 1e-6
_GROWTH = 1.02
_LOG_GROWTH = math.log(_GROWTH)
_BUCKETS = int(math.log(1e9) / _LOG_GROWTH) + 2  # 1 µs .. 1000 s


class LagHistogram:
    """Counts of lag values in ~2 %-wide buckets, plus exact count, sum, min and max."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: List[int] = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    @staticmethod
    def bucket_of(value: float) -> int:
        """The bucket index for *value* seconds."""
        if value < _MIN:
            return 0
        return min(_BUCKETS - 1, 1 + int(math.log(value / _MIN) / _LOG_GROWTH))

    @staticmethod
    def upper_bound(index: int) -> float:
        """The largest value (seconds) counted in bucket *index*."""
        return 0.0 if index == 0 else _MIN * _GROWTH ** index

    def record(self, value: float) -> None:
        """Count one lag of *value* seconds (negative values count as zero)."""
        if value < 0.0:
            value = 0.0
        self.counts[self.bucket_of(value)] += 1
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def quantile(self, q: float, counts: Sequence[int] = ()) -> float:
        """The value at quantile *q* (0..1), accurate to the bucket width (~2 %)."""
        counts = counts or self.counts
        n = sum(counts)
        if not n:
            return 0.0
        rank = q * n
        seen = 0
        for index, c in enumerate(counts):
            seen += c
            if seen >= rank and c:
                return min(self.upper_bound(index), self.max)
        return self.max

    def count_at_or_below(self, bound: float) -> int:
        """How many values were at most *bound* seconds (for exporting fixed buckets)."""
        top = self.bucket_of(bound)
        if top > 0 and self.upper_bound(top) > bound * 1.0000001:
            top -= 1
        return sum(self.counts[: top + 1])

    def snapshot(self) -> Dict[str, float]:
        """min, max, mean, p50, p90, p99, p99.9 (seconds) and count."""
        counts = list(self.counts)
        result: Dict[str, float] = {
            "count": self.count,
            "min": 0.0 if self.count == 0 else self.min,
            "max": self.max,
            "mean": self.total / self.count if self.count else 0.0,
        }
        for q in QUANTILES:
            result[f"p{q * 100:g}"] = self.quantile(q, counts)
        return {k: (round(v, 7) if isinstance(v, float) else v) for k, v in result.items()}

    def reset(self) -> None:
        """Forget everything (a forked child starts its own)."""
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0
