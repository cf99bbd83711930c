"""Offered load for the closed loop: a real arrival trace, compressed in time.

The Azure LLM conversation trace (examples/traces/azure_llm_conv_2023.csv) is
counted per minute; its first and last minutes are partial and dropped. Each
trace-minute is replayed for ``seconds_per_minute`` wall seconds, and its count is
mapped affinely onto ``[low_rps, peak_rps]`` (the quietest minute -> ``low_rps``,
the busiest -> ``peak_rps``): the trace's shape, with its floor removed so the
fleet has to go from one replica to several and back. Between minutes the rate is
interpolated linearly (a rate, not a step, is what the trace's minute counts say).
Before the trace, ``lead_s`` seconds at ``low_rps`` let the fleet settle.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
TRACE = REPO_ROOT / "examples" / "traces" / "azure_llm_conv_2023.csv"


def minute_counts(path: Path = TRACE) -> list[int]:
    """Requests per whole minute of the trace, in order (partial first/last dropped)."""
    counts: Counter[str] = Counter()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            counts[row["TIMESTAMP"][:16]] += 1  # "YYYY-MM-DD HH:MM"
    ordered = [counts[k] for k in sorted(counts)]
    return ordered[1:-1]


@dataclass(frozen=True)
class CompressedTrace:
    counts: tuple[int, ...]
    seconds_per_minute: float
    low_rps: float
    peak_rps: float
    lead_s: float = 0.0
    tail_s: float = 0.0

    @classmethod
    def from_trace(
        cls,
        seconds_per_minute: float,
        low_rps: float,
        peak_rps: float,
        lead_s: float = 0.0,
        tail_s: float = 0.0,
        path: Path = TRACE,
    ) -> CompressedTrace:
        return cls(
            tuple(minute_counts(path)), seconds_per_minute, low_rps, peak_rps, lead_s, tail_s
        )

    @property
    def duration_s(self) -> float:
        return self.lead_s + len(self.counts) * self.seconds_per_minute + self.tail_s

    @property
    def peak_time_s(self) -> float:
        """Wall time (from start) of the busiest trace-minute."""
        i = max(range(len(self.counts)), key=self.counts.__getitem__)
        return self.lead_s + (i + 0.5) * self.seconds_per_minute

    def _map(self, count: float) -> float:
        lo, hi = min(self.counts), max(self.counts)
        return self.low_rps + (self.peak_rps - self.low_rps) * (count - lo) / (hi - lo)

    def __call__(self, t: float) -> float:
        """Offered requests/second at ``t`` seconds from the start."""
        x = (t - self.lead_s) / self.seconds_per_minute - 0.5  # centre of each minute
        n = len(self.counts)
        if t < self.lead_s:
            return self.low_rps
        if x <= 0:
            c = float(self.counts[0])
        elif x >= n - 1:
            c = float(self.counts[-1])
        else:
            i = int(x)
            f = x - i
            c = self.counts[i] * (1 - f) + self.counts[i + 1] * f
        if t >= self.lead_s + n * self.seconds_per_minute:
            return self.low_rps
        return self._map(c)
