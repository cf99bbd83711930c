"""TritonPod.statistics_after: Triton records a request's statistics after replying,
so a read right after the reply polls until that request (and its batch) is in."""

from __future__ import annotations

from collections.abc import Iterator

from tritonscale.adapters.triton import Duration, ModelStatistics, TritonPod


def _snap(requests: int, executions: int) -> ModelStatistics:
    return ModelStatistics(
        "m",
        inference_count=requests,
        execution_count=executions,
        success=Duration(requests, requests * 1_000_000),
    )


class _Scripted(TritonPod):
    def __init__(self, snaps: list[ModelStatistics | None]) -> None:
        super().__init__("127.0.0.1:1")
        self._snaps: Iterator[ModelStatistics | None] = iter(snaps)
        self.reads = 0

    def statistics(self, model: str, version: str = "") -> ModelStatistics | None:
        self.reads += 1
        return next(self._snaps)


def test_waits_for_the_request_and_its_batch() -> None:
    before = _snap(3, 2)
    # the reply arrived; the request's count lands first, its batch after
    pod = _Scripted([_snap(3, 2), _snap(4, 2), _snap(4, 3), _snap(9, 9)])
    after = pod.statistics_after("m", before, 1)
    assert after == _snap(4, 3) and pod.reads == 3


def test_returns_at_once_when_already_recorded() -> None:
    pod = _Scripted([_snap(5, 4)])
    assert pod.statistics_after("m", _snap(4, 3), 1) == _snap(5, 4) and pod.reads == 1


def test_gives_up_after_settle_time_with_the_last_snapshot() -> None:
    pod = _Scripted([_snap(3, 2)] * 1000)
    after = pod.statistics_after("m", _snap(3, 2), 1, settle_s=0.05)
    assert after == _snap(3, 2) and 1 < pod.reads < 1000


def test_unavailable_statistics_end_the_wait() -> None:
    pod = _Scripted([None, _snap(4, 3)])
    assert pod.statistics_after("m", _snap(3, 2), 1) is None and pod.reads == 1


def test_failed_requests_count_as_recorded() -> None:
    failed = ModelStatistics("m", execution_count=3, fail=Duration(1, 5))
    pod = _Scripted([failed])
    assert pod.statistics_after("m", _snap(0, 2), 1) == failed
