"""Host name lookups with a deadline (adapters/resolve.py) for ``tritonscale profile``:
tritonclient's geventhttpclient looks the server up with no deadline of its own."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from tests.harness.net import HUNG_HOST

from tritonscale.adapters import resolve
from tritonscale.adapters.cascade_profiler import CascadeProfileError, measure
from tritonscale.adapters.profiler import ProfileError, profile

# The fixture's resolver hangs 30 s; a 1-s lookup ends far sooner even when starved.
BOUNDED_S = 10.0


def test_pinned_replaces_the_host_by_its_address() -> None:
    assert resolve.pinned("127.0.0.1:8000", 1.0) == "127.0.0.1:8000"
    assert resolve.pinned("[::1]:8000", 1.0) == "[::1]:8000"
    assert resolve.pinned("localhost:8000", 5.0) in ("127.0.0.1:8000", "[::1]:8000")
    for bad in ("localhost", ":8000", "localhost:x"):
        with pytest.raises(ValueError):
            resolve.pinned(bad, 1.0)
    with pytest.raises(ValueError, match=r"^nohost\.invalid does not resolve"):
        resolve.pinned("nohost.invalid:8000", 5.0)


def test_profile_gives_up_on_a_hung_resolver(hung_resolver: threading.Event) -> None:
    started = time.monotonic()
    with pytest.raises(ProfileError, match=rf"looking up {HUNG_HOST} took over 1 s"):
        profile(f"http://{HUNG_HOST}:8000", "m", accelerator="T4", timeout_s=1.0)
    assert time.monotonic() - started < BOUNDED_S
    started = time.monotonic()
    with pytest.raises(CascadeProfileError, match=r"took over 1 s"):
        measure("127.0.0.1:1", "t1", f"{HUNG_HOST}:8000", "t2", np.zeros((1, 1)),
                np.zeros(1), input_name="I", confidence="C", label="L", timeout_s=1.0)
    assert time.monotonic() - started < BOUNDED_S


def test_a_triton_pod_reports_a_hung_resolver_instead_of_hanging(
    hung_resolver: threading.Event,
) -> None:
    from tritonscale.adapters.triton import TritonPod

    pod = TritonPod(f"{HUNG_HOST}:8000", timeout_s=1.0)
    started = time.monotonic()
    assert pod.statistics("m") is None
    assert not pod.readiness("m").live
    assert time.monotonic() - started < 2 * BOUNDED_S
    assert f"looking up {HUNG_HOST} took over 1 s" in pod.last_error
    pod.close()
