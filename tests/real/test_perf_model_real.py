"""The performance model (core/perf.py) against a real tritonserver: ``tritonscale
profile`` measures the sleepy model, then open-loop Poisson load at 30, 55 and 80 % of
the profile's saturation throughput is compared with ``predict_replica``.

Setup.  One model instance, dynamic batching, max batch 8, max queue delay 10 ms, and
a batch of b takes 40 + 10*b ms (sleep based).  Saturation is then ~66 req/s, so the
three loads are ~20, 36 and 53 req/s: the load generator and Triton's HTTP front end
cost a few % of one core, which matters on this 2-core machine whose load average is
often above 10 (at 5 + 2*b ms the same fractions mean 110-300 req/s, the load
generator and the server compete for the CPU, batches slow down by ~20 % and the
comparison measures the machine, not the model).  Long batches also keep the few ms
of scheduler jitter small relative to the latencies.

What is compared.  The model predicts a replica's time (queue + compute) for each
request.  Two measurements of it:

* the client's percentiles minus the idle client overhead: client latency minus
  Triton's own request duration on isolated requests (HTTP, tritonclient's Python,
  Triton's front end; ~1 ms here), which the model does not contain and which would
  otherwise be counted as model error;
* Triton's own ``nv_inference_request_summary_us`` quantiles (the model is reloaded
  before each load, which resets them).

Tolerance (relative error e = (predicted - measured) / measured, per percentile and
load): |e| <= 0.25 against Triton's own summary, -0.35 <= e <= +0.25 against the
overhead-corrected client view.  The issue's goal is |e| <= 0.20; benchmarks/
bench_perf_real.py reports it per point and docs/comparison.md shows its table
(see there for the latest run).  The margin over the goal is
for this 2-core machine, whose load average is often above 10: p99 comes from 600-2,500
samples per load, and the client's view (a Python load generator sharing the cores)
once showed a single-point p99 spike of -68 % while Triton's summary of the same
requests stayed within 20 %.
A load whose generator sent any request more than 100 ms late did not apply the asked
load (a starved machine, not the model): it is repeated, as in test_cascade_real.py.

Sampling noise, and why 80 % runs 48 s (numbers: benchmarks/bench_perf_noise.py, the
simulator's exact batcher on this profile).  A p95/p99 of a short window at high load
is set by the few congestion episodes it contains: over 1,000 Poisson windows at 80 %
the p95 and p99 of 16 s have sd 11 % and 12 %, of 48 s 6.6 % and 9.4 %.  The load
generator's seed is fixed, so each run replays the same schedule and meets that
schedule's own percentiles (small arrival jitter moves them by 1-1.5 %): 16 s of seed
42 at 80 % is a calm one, p95/p99 259.6/306.4 ms on the exact batcher against 292/340
on average.  The former model (it summed the parts' percentiles: 339/392 ms) was
+31 %/+28 % above that schedule; real Triton on a busy machine runs 9-22 % slower
(p50-p99) than the exact batcher at this load and hid it, an idle CI machine did not ("p95 at
80 % vs server: +27 %").  The current model predicts 298.6/355.7 ms: +15 %/+16 %
against the 16-s schedule, +7 %/+10 % against the 48-s one (278.9/323.5 ms), whose
percentiles are within 4 %/7 % of the average window's; measured here (load average
1.4-2), real Triton at 48 s read -1..-13 % at p95/p99 (five runs on 2026-11-30, the
client's view and Triton's summary alike; p50 -4..+4 %).  So the margin to the +-25 %
bounds is 12-15 % either way, for an idle server (the exact batcher) and a busy one
alike.  30 % (30 s, seed 40) and 55 % (20 s, seed 41): -1..-7 % and 0..+1 % at
p95/p99 against their schedules.  A repeated (disturbed) load runs seed + 1000: a
new schedule, with the window noise above.

What made the model meet the goal (it was 20-35 % optimistic before): Triton
prepares the next batch while the instance computes, and that prepared batch stops
growing part-way through the running batch (core/batcher.py, TRITON_GROWTH = 0.5)
instead of taking everything queued when the instance frees up; a request at the
p-th percentile rides in a larger-than-mean batch; and the percentile is that of
the mixture of what a request meets, not a sum of percentiles (core/perf.py).  The
finer checks do not depend on latency noise: the mean batch size in Triton's
statistics must match the model's fixed point within 20 %, and the compute time per
batch must match S(b) of the profile within 15 %.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.harness.real.servers import TritonServer
from tests.harness.real.support import (
    MODEL,
    PerfRow,
    Timing,
    TritonFactory,
    idle_client_overhead_ms,
    measure_on_schedule,
    perf_table,
    spec_profile_of,
    warm_up,
)

from tritonscale.adapters import profiler
from tritonscale.core import perf
from tritonscale.core.spec import Profile

pytestmark = pytest.mark.triton

TIMING = Timing(base_ms=40.0, per_item_ms=10.0, max_batch=8, queue_delay_us=10_000)
LOADS = ((0.30, 30.0), (0.55, 20.0), (0.80, 48.0))  # fraction of capacity, seconds
OPTIMISTIC = {"server": 0.25, "client": 0.35}  # see the docstring
PESSIMISTIC = 0.25
BATCH_TOLERANCE = 0.20
COMPUTE_TOLERANCE = 0.15
# A load whose worst send is later than this did not run open loop at the asked rate
# (the shared machine starved the load generator, as test_cascade_real.py checks):
# it is printed and repeated, up to MAX_ATTEMPTS loads per point, never judged.
MAX_LATENESS_MS = 100.0
MAX_ATTEMPTS = 3


@pytest.fixture(scope="module")
def server(triton_factory: TritonFactory) -> Iterator[TritonServer]:
    s = triton_factory.start("perf", {MODEL: TIMING})
    warm_up(s, MODEL)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def profile(server: TritonServer) -> Profile:
    result = profiler.profile(
        server.url,
        MODEL,
        accelerator="cpu-test",
        requests_per_batch=10,
        warmup=2,
        concurrency=(1,),
        sweep_seconds=1.0,
    )
    print("\n" + result.table())
    return spec_profile_of(result.spec_profile())


def test_profile_matches_the_configured_model(profile: Profile) -> None:
    assert profile.max_batch_size == TIMING.max_batch
    assert profile.max_queue_delay_ms == pytest.approx(TIMING.queue_delay_us / 1000)
    for b in profile.batches:  # sleep + Python-backend IPC: 0-4 ms over the configured
        assert 0.0 <= b.latency_ms - TIMING.batch_ms(b.size) <= 4.0, b
    assert perf.max_throughput_rps(profile) == pytest.approx(
        1000 * 8 / TIMING.batch_ms(8), rel=0.05
    )


def test_prediction_matches_measured_percentiles(server: TritonServer, profile: Profile) -> None:
    overhead = idle_client_overhead_ms(server, MODEL)
    assert 0.0 < overhead < 10.0, overhead
    rows: list[PerfRow] = []
    disturbed: list[str] = []
    for i, (fraction, seconds) in enumerate(LOADS):
        tried = measure_on_schedule(server, MODEL, profile, fraction, overhead_ms=overhead,
                                    duration_s=seconds, seed=40 + i,
                                    attempts=MAX_ATTEMPTS, max_late_ms=MAX_LATENESS_MS)
        for row in tried:
            if row.max_lateness_ms > MAX_LATENESS_MS:
                disturbed.append(f"{fraction:.0%}: sends up to {row.max_lateness_ms:.0f} ms "
                                 "late")
                print(f"\ndisturbed load {disturbed[-1]}, repeated:\n{perf_table([row])}")
        if tried[-1].max_lateness_ms > MAX_LATENESS_MS:
            pytest.fail(f"no load at {fraction:.0%} kept its schedule in {MAX_ATTEMPTS} "
                        f"attempts (the machine is starved): {disturbed}")
        rows.append(tried[-1])
    print(
        f"\nidle client overhead {overhead:.2f} ms; tolerance -{OPTIMISTIC['server']:.0%}"
        f"(client -{OPTIMISTIC['client']:.0%})..+{PESSIMISTIC:.0%} (goal +-20 %); "
        f"max_throughput_rps {perf.max_throughput_rps(profile):.1f}"
    )
    print(perf_table(rows, goal=0.20))

    for r in rows:
        where = f"at {r.fraction:.0%} ({r.rps:.1f} req/s)"
        assert r.errors == 0, where
        # The load generator delivered the load it was asked for.
        assert r.achieved_rps == pytest.approx(r.rps, rel=0.15), where
        # The batcher's fixed point and the per-batch compute time, from Triton's
        # statistics: what the latency prediction is built on.
        assert r.mean_batch == pytest.approx(r.predicted_batch, rel=BATCH_TOLERANCE), where
        assert r.mean_batch_ms == pytest.approx(r.predicted_batch_ms, rel=COMPUTE_TOLERANCE), where
        for which in ("client", "server"):
            for p, e in zip((50, 95, 99), r.rel_errors(which), strict=True):
                assert -OPTIMISTIC[which] <= e <= PESSIMISTIC, f"p{p} {where} vs {which}: {e:+.0%}"
        # The overhead-corrected client view and Triton's own summary agree (25 %: on
        # an idle 2-core CI box the Python client's p50 once read 19 % above Triton's).
        for c, s in zip(r.client, r.server, strict=True):
            assert c == pytest.approx(s, rel=0.25, abs=3.0), (where, r.client, r.server)
    # Latency grows with load, measured and predicted.
    for which in ("predicted", "client", "server"):
        p99s = [getattr(r, which)[2] for r in rows]
        assert p99s == sorted(p99s), (which, p99s)
