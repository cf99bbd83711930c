"""The cascade as the operator deploys it, on the real tritonserver and Prometheus.

The router ConfigMap the operator renders (core/cascade_render.py) is laid out on disk
the way the kubelet lays out a ConfigMap volume (a timestamped directory, a ``..data``
symlink swapped atomically on update, each item a symlink through it) and passed to a
real tritonserver as a second ``--model-repository``, next to the tier-1 model; tier 2
is another real tritonserver serving the *same* model name (as tier-2 pods do). The
rendered ``config.pbtxt`` is used as rendered, except for the two cluster-only values
(the tier-2 Service URL and the ConfigMap mount path), pointed at their local
stand-ins. Two scikit-learn digits classifiers are trained at setup.

Checks: the router loads from that layout and answers exactly as tier 1 + tier 2 do
at the threshold the threshold ConfigMap holds; a kubelet-style update of that
ConfigMap changes the threshold without a restart; and the escalation rate the
operator's Prometheus adapter reads (adapters/prometheus.py, through the operator's
signal source) is the router's own count ratio; with tier 2 gone, the escalated
rows keep tier 1's answers, counted as fallbacks.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.harness.real.digits import ask, cascade_spec, counter, train, write_model
from tests.harness.real.servers import (
    PrometheusServer,
    ScrapeTarget,
    TritonServer,
    find_triton,
    prometheus_query,
    wait_until_scraped,
)

from tritonscale.adapters.cascade_profiler import measure
from tritonscale.core import cascade_render as cr
from tritonscale.core.render import DEFAULT_OPTIONS, Owner, get_cascade_objects
from tritonscale.core.spec import ScaledModelSpec, parse_spec
from tritonscale.handlers.signals import SpecSignalSource
from tritonscale.router import router_source

pytestmark = pytest.mark.triton
MODEL = "digits"
SM, NS = "digits", "serving"


def _spec(prometheus_url: str) -> ScaledModelSpec:
    body = cascade_spec([{"threshold": 0.5, "escalated": 0.05, "accuracy": 0.93},
                         {"threshold": 0.9, "escalated": 0.3, "accuracy": 0.96}])
    body["metrics"] = {"source": "prometheus", "prometheus": {"url": prometheus_url}}
    return parse_spec(body)


class ConfigMapVolume:
    """A ConfigMap volume as the kubelet's atomic writer keeps it: the files live in a
    timestamped directory, ``..data`` points at it, and every top-level entry is a
    symlink through ``..data``; an update writes a new directory and renames a new
    ``..data`` link over the old one."""

    def __init__(self, root: Path, items: dict[str, str]) -> None:
        self.root = root
        self.root.mkdir(parents=True)
        self.version = 0
        self.update(items)
        for top in {p.split("/", 1)[0] for p in items}:
            (root / top).symlink_to(Path("..data") / top)

    def update(self, items: dict[str, str]) -> None:
        self.version += 1
        stamp = self.root / f"..2026_01_01_00_00_0{self.version}.{os.getpid()}"
        for path, text in items.items():
            (stamp / path).parent.mkdir(parents=True, exist_ok=True)
            (stamp / path).write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp.name)
        tmp.replace(self.root / "..data")


def test_rendered_router_serves_from_a_configmap_volume_and_prometheus_reads_it(
    real_log_dir: Path,
) -> None:
    d = train()
    xte, yte = d.x, d.y
    work = real_log_dir / "cascade-serving"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    tier2 = TritonServer(workdir=work / "tier2", models=[MODEL], install=find_triton())
    tier2.repo.mkdir(parents=True)
    write_model(tier2.repo, MODEL, d.tier2)
    tier1 = TritonServer(workdir=work / "tier1", models=[MODEL, f"{MODEL}-cascade"],
                         install=find_triton(), extra_repositories=[work / "cascade-models"])
    tier1.repo.mkdir(parents=True)
    write_model(tier1.repo, MODEL, d.tier1)
    prom = PrometheusServer(work / "prom", [
        ScrapeTarget(f"127.0.0.1:{tier1.metrics_port}", {"namespace": NS})])

    # What the operator renders for this ScaledModel.
    spec = _spec(prom.url)
    owner = Owner(SM, NS, "uid")
    options = replace(DEFAULT_OPTIONS, router_source=router_source())
    objs = {o["metadata"]["name"]: o for o in get_cascade_objects(owner, spec, 0.5, options)}
    router_cm = objs[cr.router_configmap_name(SM)]["data"]
    threshold_cm = objs[cr.threshold_configmap_name(SM)]["data"]
    # The volume items of the tier-1 pod template map keys to repository paths.
    _, volumes, _, _ = cr.tier1_pod_parts(spec, SM, "h")
    items = {i["path"]: router_cm[i["key"]] for i in volumes[0]["configMap"]["items"]}
    threshold_dir = work / "cascade-threshold"
    local = {cr.tier2_url(SM, NS): f"http://{tier2.url}",
             cr.THRESHOLD_FILE: str(threshold_dir / cr.THRESHOLD_KEY)}
    for key, value in local.items():
        path = f"{MODEL}-cascade/config.pbtxt"
        assert key in items[path]
        items[path] = items[path].replace(key, value)
    ConfigMapVolume(work / "cascade-models", items)
    thr_volume = ConfigMapVolume(threshold_dir, dict(threshold_cm))

    conf = right1 = right2 = None
    try:
        tier2.start()
        tier1.start()
        prom.start()
        wait_until_scraped(prom, 1)
        ans: Any = measure(tier1.url, MODEL, tier2.url, MODEL, xte, yte, input_name="INPUT",
                           confidence="CONFIDENCE", label="LABEL")
        conf, right1, right2 = ans.confidence, ans.tier1_right, ans.tier2_right
        sent = escalated = 0
        for thr in (0.5, 0.9):
            if thr != 0.5:  # the operator's ConfigMap update, as the kubelet applies it
                new = get_cascade_objects(owner, spec, thr, options)
                thr_volume.update(dict(next(o for o in new if o["metadata"]["name"] ==
                                            cr.threshold_configmap_name(SM))["data"]))
            before = counter(tier1.metrics_url, "tritonscale_cascade_escalated_total")
            got = ask(tier1.url, f"{MODEL}-cascade", xte)
            esc = counter(tier1.metrics_url, "tritonscale_cascade_escalated_total") - before
            want = int(np.count_nonzero(conf < thr))
            assert esc == want, (thr, esc, want)
            assert float(np.mean(got == yte)) == pytest.approx(
                float(np.mean(np.where(conf < thr, right2, right1))), abs=1e-9), thr
            sent += len(xte)
            escalated += want
        assert counter(tier1.metrics_url, "tritonscale_cascade_fallback_total") == 0
        assert counter(tier1.metrics_url, "tritonscale_cascade_requests_total") == sent

        # Once Prometheus has scraped the final counts, the operator's signal source
        # reads the router's escalation ratio (its 60 s window holds every request).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            res = prometheus_query(prom.url, "tritonscale_cascade_requests_total")
            if res and float(res[0]["value"][1]) == sent:  # type: ignore[index]
                break
            time.sleep(0.5)
        time.sleep(1.5)  # one more scrape: every series of the router is at its final count
        obs = SpecSignalSource().observe(NS, SM, spec)
        assert obs.escalated == pytest.approx(escalated / sent, rel=1e-6), obs
        assert 0 < escalated < sent
        assert obs.rps is not None and obs.rps > 0  # the router's requests are the demand
        # The end-to-end latency is the router's own summary: Triton's of the router
        # ends when its execute hands the request off, well before the answer.
        q = f'{{model="{MODEL}-cascade",quantile="0.{spec.slo.latency.percentile:g}"}}'
        own, hand_off = (float(prometheus_query(prom.url, f"max({m}{q})")[0]["value"][1])
                         / 1000.0 for m in ("tritonscale_cascade_request_summary_us",
                                            "nv_inference_request_summary_us"))
        assert obs.latency_ms == pytest.approx(own, rel=1e-6), (obs, own)
        assert own > hand_off, (own, hand_off)

        # Tier 2 gone (its Service without endpoints): the escalated rows keep tier 1's
        # answers, counted as fallbacks; no request fails.
        tier2.stop()
        before = counter(tier1.metrics_url, "tritonscale_cascade_fallback_total")
        got = ask(tier1.url, f"{MODEL}-cascade", xte)
        want = int(np.count_nonzero(conf < 0.9))
        assert counter(tier1.metrics_url, "tritonscale_cascade_fallback_total") - before == want
        assert float(np.mean(got == yte)) == pytest.approx(float(np.mean(right1)), abs=1e-9)
    finally:
        prom.stop()
        tier1.stop()
        tier2.stop()
