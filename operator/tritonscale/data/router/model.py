"""tritonscale's cascade router: a Triton Python-backend model in every tier-1 pod.

For each batch it receives: call the tier-1 model in the same server through BLS;
rows whose confidence (``confidence_output``) is below the threshold go to the tier-2
model over the KServe v2 HTTP/JSON protocol (standard library only: the stub
environment and the stock Triton image carry numpy but not tritonclient); their
tier-2 answers replace tier 1's. If tier 2 fails, the rows keep tier 1's answer and a
fallback is counted (the cascade degrades to tier 1, it does not fail requests).

The threshold comes from ``threshold_file`` (a ConfigMap mounted as a directory: the
kubelet swaps the file in place), re-read whenever its modification time changes, so
it changes without a restart; a request parameter ``threshold`` overrides it for
that request. Counters exported through Triton's custom metrics API, on the
server's metrics port: ``tritonscale_cascade_requests_total``,
``tritonscale_cascade_escalated_total``, ``tritonscale_cascade_fallback_total``.

Parameters (config.pbtxt ``parameters``): tier1_model, tier2_url (http://host:port),
tier2_model, confidence_output, threshold (initial), threshold_file (optional),
tier2_timeout_s (default 10).
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_DATATYPES = {
    "float32": "FP32", "float64": "FP64", "float16": "FP16", "int8": "INT8",
    "int16": "INT16", "int32": "INT32", "int64": "INT64", "uint8": "UINT8",
    "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64", "bool": "BOOL",
}
_NUMPY = {v: k for k, v in _DATATYPES.items()}


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config: dict[str, Any] = json.loads(args["model_config"])
        params: dict[str, str] = {
            k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.name = args.get("model_name", config.get("name", "router"))
        self.tier1 = params["tier1_model"]
        self.tier2_url = params["tier2_url"].rstrip("/")
        self.tier2 = params["tier2_model"]
        self.conf_name = params.get("confidence_output", "CONFIDENCE")
        self.threshold = float(params.get("threshold", "0.5"))
        self.threshold_file = params.get("threshold_file", "")
        self.timeout = float(params.get("tier2_timeout_s", "10"))
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self._mtime: int | None = None
        self._families: list[Any] = []
        labels = {"model": self.name}
        self.m_requests = self._counter(
            "tritonscale_cascade_requests_total", "Inferences the cascade router answered",
            labels)
        self.m_escalated = self._counter(
            "tritonscale_cascade_escalated_total",
            "Inferences escalated to the last tier (confidence below the threshold)", labels)
        self.m_fallback = self._counter(
            "tritonscale_cascade_fallback_total",
            "Escalated inferences answered by tier 1 because tier 2 failed", labels)
        self._reload()

    def _counter(self, name: str, description: str, labels: dict[str, str]) -> Any:
        # A MetricFamily must outlive its Metric objects: keep both.
        family = pb_utils.MetricFamily(
            name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
        self._families.append(family)
        return family.Metric(labels=labels)

    def _reload(self) -> None:
        """Re-read the threshold file when it changed; keep the last value on error."""
        if not self.threshold_file:
            return
        try:
            mtime = os.stat(self.threshold_file).st_mtime_ns
            if mtime == self._mtime:
                return
            with open(self.threshold_file, encoding="utf-8") as fh:
                value = float(fh.read().strip())
        except (OSError, ValueError):
            return
        if 0.0 <= value <= 1.0:
            self.threshold = value
            self._mtime = mtime

    def _request_threshold(self, request: Any) -> float:
        try:
            params = json.loads(request.parameters() or "{}")
            value = float(params["threshold"])
        except (KeyError, TypeError, ValueError):
            return self.threshold
        return value if 0.0 <= value <= 1.0 else self.threshold

    def _tier2(self, inputs: dict[str, Any]) -> dict[str, Any]:
        body = {"inputs": [
            {"name": n, "shape": list(a.shape), "datatype": _DATATYPES[str(a.dtype)],
             "data": a.ravel().tolist()} for n, a in inputs.items()],
            "outputs": [{"name": n} for n in self.outputs]}
        req = urllib.request.Request(
            f"{self.tier2_url}/v2/models/{self.tier2}/infer",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
            method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            payload: dict[str, Any] = json.loads(resp.read())
        out: dict[str, Any] = {}
        for o in payload["outputs"]:
            out[o["name"]] = np.asarray(o["data"], dtype=_NUMPY[o["datatype"]]).reshape(
                o["shape"])
        return out

    def execute(self, requests: list[Any]) -> list[Any]:
        self._reload()
        arrays = {n: [pb_utils.get_input_tensor_by_name(r, n).as_numpy() for r in requests]
                  for n in self.inputs}
        sizes = [len(a) for a in arrays[self.inputs[0]]]
        batch = {n: np.concatenate(v, axis=0) for n, v in arrays.items()}
        bls = pb_utils.InferenceRequest(
            model_name=self.tier1, requested_output_names=self.outputs,
            inputs=[pb_utils.Tensor(n, a) for n, a in batch.items()])
        resp = bls.exec()
        if resp.has_error():
            err = pb_utils.TritonError(f"tier 1 ({self.tier1}): {resp.error().message()}")
            return [pb_utils.InferenceResponse(error=err) for _ in requests]
        outs = {n: pb_utils.get_output_tensor_by_name(resp, n).as_numpy().copy()
                for n in self.outputs}
        conf = outs[self.conf_name].reshape(len(outs[self.conf_name]), -1)[:, 0]
        thr = np.concatenate([np.full(n, self._request_threshold(r))
                              for r, n in zip(requests, sizes, strict=True)])
        esc = conf < thr
        n_esc = int(esc.sum())
        if n_esc:
            try:
                answers = self._tier2({n: a[esc] for n, a in batch.items()})
                for n in self.outputs:
                    if n in answers:
                        outs[n][esc] = answers[n].astype(outs[n].dtype).reshape(
                            outs[n][esc].shape)
            except Exception:  # any tier-2 failure: keep tier 1's answer
                self.m_fallback.increment(n_esc)
        self.m_requests.increment(len(conf))
        if n_esc:
            self.m_escalated.increment(n_esc)
        responses = []
        start = 0
        for n in sizes:
            tensors = [pb_utils.Tensor(k, v[start:start + n]) for k, v in outs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += n
        return responses

    def finalize(self) -> None:
        pass
