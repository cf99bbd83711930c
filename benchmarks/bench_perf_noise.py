"""Sampling noise of a measured percentile against the perf model, with the simulator's
exact batcher: how often a window of a given length misses the prediction by more
than a tolerance, from noise alone (tests/real/test_perf_model_real.py's docstring).

    PYTHONPATH=operator python benchmarks/bench_perf_noise.py [--seeds 1000] \\
        [--load 0.8:16 --load 0.8:48 ...] [--tolerance 0.25]

The profile is that test's sleepy model (a batch of b takes 40 + 10*b ms plus ~2 ms
of Python-backend IPC; max batch 8, queue delay 10 ms).  Each seed draws Poisson
arrivals for the window (plus 2 s of warm-up, left out), runs ``core.batcher.serve``
with Triton's growth and takes the window's p50/p95/p99; error = (predicted -
measured) / measured.  Then the same for the test's own schedules: its load generator
draws arrivals from a fixed seed (``poisson_arrivals(rate, seconds, 40 + i)``), so a
run does not sample a new window: the schedule's own percentiles (the exact batcher
on exactly those arrivals) are what the prediction meets, up to how far the real
server strays from that batcher.  Prints, never asserts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT))

from tests.harness.real.load import poisson_arrivals  # noqa: E402

from tritonscale.core import batcher, perf  # noqa: E402
from tritonscale.core.spec import BatchPoint, Profile  # noqa: E402

PROFILE = Profile("cpu", 8, tuple(BatchPoint(b, 40.0 + 10.0 * b + 2.0) for b in range(1, 9)),
                  10.0)
PERCENTILES = (50, 95, 99)
WARMUP_S = 2.0


def window_percentiles(lam: float, seconds: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    t = 0.0
    arrivals: list[float] = []
    while t < seconds + WARMUP_S:
        t += rng.expovariate(lam)
        arrivals.append(t)
    return served_percentiles(arrivals)


def served_percentiles(arrivals: list[float]) -> list[float]:
    """p50/p95/p99 (ms) of the exact batcher on ``arrivals`` (s), warm-up left out."""
    b = batcher.Batcher.of(PROFILE)
    served = batcher.serve(arrivals, 0.0, b.max_batch, b.delay_s, b.svc, 1e9,
                           growth=batcher.TRITON_GROWTH)
    lat: list[float] = []
    k = 0
    for done, size in zip(served.dones, served.sizes, strict=True):
        lat.extend((done - a) * 1000.0 for a in arrivals[k:k + size] if a >= WARMUP_S)
        k += size
    lat.sort()
    return [lat[int(p / 100 * len(lat))] for p in PERCENTILES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--load", action="append", default=None,
                    help="fraction:seconds (default 0.3:30 0.55:20 0.8:16 0.8:48)")
    ap.add_argument("--tolerance", type=float, default=0.25)
    ap.add_argument("--test-load", action="append", default=None,
                    help="fraction:seconds:seed of the test's schedules "
                         "(default 0.3:30:40 0.55:20:41 0.8:48:42, and 0.8:16:42 as it was)")
    args = ap.parse_args(argv)
    loads = [(float(f), float(s)) for f, s in
             (x.split(":") for x in (args.load or ["0.3:30", "0.55:20", "0.8:16", "0.8:48"]))]
    top = perf.max_throughput_rps(PROFILE)
    tol = args.tolerance
    print(f"profile 40 + 10*b + 2 ms, max batch 8, delay 10 ms; {args.seeds} seeds; "
          f"tolerance +-{tol:.0%}")
    for frac, seconds in loads:
        lam = frac * top
        pred = [perf.predict_replica(PROFILE, lam, p).latency_ms for p in PERCENTILES]
        runs = [window_percentiles(lam, seconds, seed) for seed in range(args.seeds)]
        for i, p in enumerate(PERCENTILES):
            xs = [r[i] for r in runs]
            mean = statistics.mean(xs)
            errs = sorted((pred[i] - x) / x for x in xs)
            n = len(errs)
            print(f"{frac:4.0%} {seconds:4.0f} s p{p}: predicted {pred[i]:6.1f} ms, measured "
                  f"mean {mean:6.1f} sd {statistics.pstdev(xs) / mean:5.1%}; error 5/50/95 %: "
                  f"{errs[n // 20]:+.0%} {errs[n // 2]:+.0%} {errs[n * 19 // 20]:+.0%}; "
                  f"beyond +{tol:.0%}: {sum(e > tol for e in errs) / n:.1%}, "
                  f"below -{tol:.0%}: {sum(e < -tol for e in errs) / n:.1%}")
    print("the test's own schedules (fixed seeds), exact batcher:")
    for x in args.test_load or ["0.3:30:40", "0.55:20:41", "0.8:48:42", "0.8:16:42"]:
        f, s, seed = x.split(":")
        frac, seconds = float(f), float(s)
        lam = frac * top
        pred = [perf.predict_replica(PROFILE, lam, p).latency_ms for p in PERCENTILES]
        got = served_percentiles([a for a, _ in poisson_arrivals(lam, seconds, int(seed))])
        print(f"{frac:4.0%} {seconds:4.0f} s seed {seed}: predicted "
              + "/".join(f"{v:.1f}" for v in pred) + " ms, schedule "
              + "/".join(f"{v:.1f}" for v in got) + " ms, error "
              + "/".join(f"{a / b - 1:+.0%}" for a, b in zip(pred, got, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
