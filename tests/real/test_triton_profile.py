"""The Triton statistics adapter and ``tritonscale profile`` against a real tritonserver
whose model takes a known base_ms + per_item_ms * b per batch."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from realservers import TritonServer
from realsupport import MODEL, Timing, TritonFactory, warm_up

from tritonscale.adapters import profiler
from tritonscale.adapters.triton import TritonPod
from tritonscale.core.spec import parse_spec

pytestmark = pytest.mark.triton

TIMING = Timing(base_ms=8.0, per_item_ms=2.0, max_batch=8, queue_delay_us=1000)

# The model sleeps exactly a + c*b; the Python backend adds its IPC (shared memory
# round trip to the stub, ~0.5 ms here) and sleep() overshoots by scheduler latency.
# Measured overhead is positive and, on 2 busy cores, below 3 ms.
OVERHEAD_MIN_MS = -0.2
OVERHEAD_MAX_MS = 3.0


@pytest.fixture(scope="module")
def server(triton_factory: TritonFactory) -> Iterator[TritonServer]:
    s = triton_factory.start("profile", {MODEL: TIMING})
    warm_up(s, MODEL)
    yield s
    s.stop()


def test_statistics_count_one_batch_size(server: TritonServer) -> None:
    import tritonclient.http as httpclient

    pod = TritonPod(server.url)
    before = pod.statistics(MODEL)
    client = httpclient.InferenceServerClient(server.url)
    t = httpclient.InferInput("INPUT", [4, 1], "FP32")
    t.set_data_from_numpy(np.ones((4, 1), dtype=np.float32))
    for _ in range(10):  # sequential: the dynamic batcher has nothing to merge
        client.infer(MODEL, [t])
    client.close()
    after = pod.statistics(MODEL)
    assert before is not None and after is not None
    delta = after - before
    assert delta.success.count == 10 and delta.fail.count == 0
    assert delta.inference_count == 40 and delta.execution_count == 10
    assert delta.batch(4).count == 10
    assert delta.queue.count == 10 and delta.mean_queue_ms is not None
    compute = delta.batch(4).compute_ms
    assert compute is not None
    overhead = compute - TIMING.batch_ms(4)
    print(f"\nbatch 4: compute {compute:.3f} ms, configured {TIMING.batch_ms(4)} ms")
    assert OVERHEAD_MIN_MS <= overhead <= OVERHEAD_MAX_MS
    assert delta.mean_request_ms is not None and delta.mean_request_ms >= compute


def test_profile_recovers_configured_batch_latency(server: TritonServer) -> None:
    result = profiler.profile(
        server.url,
        MODEL,
        accelerator="cpu-test",
        requests_per_batch=10,
        warmup=2,
        concurrency=(1, 4),
        sweep_seconds=1.5,
    )
    print("\n" + result.table())
    assert [b.size for b in result.batches] == [1, 2, 4, 8]
    assert result.max_batch_size == 8 and result.max_queue_delay_ms == pytest.approx(1.0)
    for b in result.batches:
        assert b.server_ms is not None, "statistics extension must have been used"
        overhead = b.measured_ms - TIMING.batch_ms(b.size)
        assert OVERHEAD_MIN_MS <= overhead <= OVERHEAD_MAX_MS, (b, TIMING.batch_ms(b.size))
        assert b.client_p50_ms >= b.server_ms  # the client also sees HTTP and queueing
        assert b.client_p50_ms <= b.client_p95_ms <= b.client_p99_ms
    # The slope recovers per_item_ms: (lat(8) - lat(1)) / 7 within 15 %.
    slope = (result.batches[-1].latency_ms - result.batches[0].latency_ms) / 7
    assert slope == pytest.approx(TIMING.per_item_ms, rel=0.15)
    lats = [b.latency_ms for b in result.batches]
    assert lats == sorted(lats)

    one, four = result.sweep
    assert one.errors == 0 and four.errors == 0 and one.requests > 10
    assert one.p50_ms <= one.p95_ms <= one.p99_ms
    # Dynamic batching pays off: 4 concurrent clients get more throughput than 1 (here
    # ~1.9x; 1.3x leaves room for a busy 2-core machine).
    assert four.throughput_rps > 1.3 * one.throughput_rps

    block = yaml.safe_load(result.to_yaml())
    assert block == {"profiles": [result.spec_profile()]}
    assert block["profiles"][0]["batches"][0] == {"size": 1, "latencyMs": round(lats[0], 3)}


def test_profile_block_is_accepted_by_the_spec(server: TritonServer, tmp_path: Path) -> None:
    out = tmp_path / "profile.yaml"
    code = profiler.main(
        [
            "--url", server.url, "--model", MODEL, "--accelerator", "T4",
            "--max-batch", "4", "--requests-per-batch", "3", "--warmup", "1",
            "--concurrency", "1", "--sweep-seconds", "0.5", "--output", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    profiles = yaml.safe_load(out.read_text())["profiles"]
    assert [b["size"] for b in profiles[0]["batches"]] == [1, 2, 4]
    example = Path(__file__).resolve().parents[2] / "examples" / "resnet50.yaml"
    manifest = yaml.safe_load(example.read_text())
    spec = copy.deepcopy(manifest["spec"])
    fp16 = spec["variants"][0]
    fp16["profiles"] = [p for p in fp16["profiles"] if p["accelerator"] != "T4"] + profiles
    parsed = parse_spec(spec)
    got = next(p for p in parsed.variants[0].profiles if p.accelerator == "T4")
    assert got.max_batch_size == 4
    assert [b.size for b in got.batches] == [1, 2, 4]


def test_profile_errors_are_reported(server: TritonServer) -> None:
    with pytest.raises(profiler.ProfileError, match="not ready"):
        profiler.profile(server.url, "no-such-model", accelerator="x")
    with pytest.raises(profiler.ProfileError, match="exceeds"):
        profiler.profile(server.url, MODEL, 64, accelerator="x")
    assert profiler.main(["--url", "127.0.0.1:9", "--model", MODEL, "--accelerator", "x"]) == 1
