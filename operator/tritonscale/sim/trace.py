"""Arrival traces: loading and rate scaling.

Two CSV formats are read (a header row is required):

* the Azure LLM inference trace (``TIMESTAMP`` column, e.g.
  ``2023-11-16 18:15:46.6805900``; other columns are ignored);
* a plain trace with a ``timestamp_s`` column: one arrival per row, seconds.

Arrival times are returned sorted and shifted so the first arrival is at 0.

Rate scaling (``--rate-scale K``) superposes copies of the trace: copy 0 is the
trace itself, copies 1..floor(K)-1 are the trace shifted in time by an offset
drawn uniformly from [0, ``shift_window_s``) with the seed (arrivals pushed past
the end wrap around to the start), and a fractional K adds one more shifted
copy thinned to keep each arrival with probability ``K - floor(K)``; K < 1
thins the trace itself. This models K independent populations of users that
follow the trace's shape: the per-minute shape is kept (smoothed by at most
the shift window), while sub-second bursts of different copies are
independent, as they are for independent users. The result is deterministic
for a given seed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

DEFAULT_SHIFT_WINDOW_S = 60.0


class TraceError(ValueError):
    """A trace file that cannot be read."""


def _parse_timestamp(text: str) -> float:
    s = text.strip()
    # Python's fromisoformat takes at most 6 fractional digits.
    if "." in s:
        head, frac = s.split(".", 1)
        s = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(s).timestamp()


def load_trace(path: str | Path) -> NDArray[np.float64]:
    """Read arrival times (seconds from the first arrival, sorted)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            return parse_trace(fh, str(p))
    except UnicodeDecodeError as e:
        raise TraceError(f"{p}: not UTF-8 text (offset {e.start})") from None


def parse_trace(lines: Iterable[str], name: str) -> NDArray[np.float64]:
    """Arrival times from CSV ``lines`` (see the module doc); TraceError names ``name``."""
    p = name
    try:
        return _parse(csv.reader(lines), p)
    except csv.Error as e:
        raise TraceError(f"{p}: not a CSV trace: {str(e)[:100]}") from None


def _parse(reader: Iterable[list[str]], p: str) -> NDArray[np.float64]:
    rows = iter(reader)
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration:
        raise TraceError(f"{p}: empty file") from None
    parse: Callable[[str], float]
    if "timestamp_s" in header:
        col, parse = header.index("timestamp_s"), float
    elif "TIMESTAMP" in header:
        col, parse = header.index("TIMESTAMP"), _parse_timestamp
    else:
        got = ", ".join(header)
        raise TraceError(
            f"{p}: need a 'timestamp_s' column (seconds) or an Azure 'TIMESTAMP' column; "
            f"got {got[:80] + '...' if len(got) > 80 else got}"
        )
    values: list[float] = []
    for lineno, row in enumerate(rows, start=2):
        if not row or col >= len(row) or not row[col].strip():
            continue
        try:
            values.append(parse(row[col]))
        except (ValueError, OverflowError, OSError) as e:
            raise TraceError(
                f"{p}:{lineno}: bad timestamp {row[col][:40]!r}: {str(e)[:80]}"
            ) from None
    if not values:
        raise TraceError(f"{p}: no arrivals")
    t = np.sort(np.asarray(values, dtype=np.float64))
    if not np.all(np.isfinite(t)):
        raise TraceError(f"{p}: non-finite timestamps")
    out: NDArray[np.float64] = t - t[0]
    return out


def scale_trace(
    arrivals: NDArray[np.float64],
    k: float,
    seed: int = 0,
    shift_window_s: float = DEFAULT_SHIFT_WINDOW_S,
) -> NDArray[np.float64]:
    """Multiply the arrival rate by ``k`` keeping the trace's shape (see module doc)."""
    if k <= 0 or not math.isfinite(k):
        raise ValueError(f"rate scale must be > 0; got {k}")
    rng = np.random.default_rng(seed)
    n_full = math.floor(k)
    frac = k - n_full
    duration = float(arrivals[-1]) + 1e-9 if len(arrivals) else 0.0
    parts: list[NDArray[np.float64]] = []
    if n_full >= 1:
        parts.append(arrivals)
    shifts = rng.uniform(0.0, shift_window_s, size=max(n_full, 1))
    for i in range(1, n_full):
        parts.append(np.mod(arrivals + shifts[i], duration))
    if frac > 1e-12:
        keep = rng.random(len(arrivals)) < frac
        extra = arrivals[keep]
        if n_full >= 1:
            extra = np.mod(extra + shifts[0], duration)
        parts.append(extra)
    out: NDArray[np.float64] = np.concatenate(parts) if parts else np.empty(0)
    out.sort(kind="stable")
    return out


def per_window_rate(
    arrivals: NDArray[np.float64], window_s: float, duration_s: float | None = None
) -> NDArray[np.float64]:
    """Mean arrival rate (rps) in consecutive windows of ``window_s``."""
    end = float(arrivals[-1]) if duration_s is None else duration_s
    n = max(1, math.ceil((end + 1e-9) / window_s))
    counts = np.bincount(
        np.minimum((arrivals // window_s).astype(np.int64), n - 1), minlength=n
    )
    return counts.astype(np.float64) / window_s
