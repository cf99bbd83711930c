"""Python-backend test model that a client steers row by row and that records what it
computes: a cascade tier for the router's bound tests.

A row of INPUT is ``[confidence, tier-1 wait, tier-2 wait, id, ...]``. The model answers
LABEL = its ``label`` parameter (which tier answered) and CONFIDENCE = the row's
``confidence`` (the client decides what escalates). Before answering, a batch waits the
largest of its rows' column ``wait_column`` (1 in tier 1, 2 in tier 2) in milliseconds;
a negative wait holds the batch until the file ``gate_file`` exists (at most 120 s).
Each batch appends to ``ledger_path``: ``start <monotonic> <id>:<timeout_us>,...`` (the
request's own timeout, microseconds, as Triton handed it over) and ``done <monotonic>
<id>,...`` (``time.monotonic`` is the system-wide CLOCK_MONOTONIC, the test's clock too).
"""

import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})

        def param(key, default):
            return params.get(key, {}).get("string_value", default)

        self.label = int(param("label", "1"))
        self.column = int(param("wait_column", "1"))
        self.ledger = param("ledger_path", "")
        self.gate = param("gate_file", "")

    def _record(self, line):
        if self.ledger:
            with open(self.ledger, "a", encoding="utf-8") as fh:
                fh.write(f"{line}\n")

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        timeouts = [int(r.timeout()) for r in requests]
        ids = [str(int(row[3])) for x in xs for row in x]
        seen = ",".join(f"{int(row[3])}:{t}"
                        for x, t in zip(xs, timeouts, strict=True) for row in x)
        self._record(f"start {time.monotonic():.6f} {seen}")
        wait_ms = max(float(np.max(x[:, self.column])) for x in xs)
        if wait_ms < 0:
            until = time.monotonic() + 120.0
            while not os.path.exists(self.gate) and time.monotonic() < until:
                time.sleep(0.01)
        elif wait_ms > 0:
            time.sleep(wait_ms / 1000.0)
        self._record(f"done {time.monotonic():.6f} {','.join(ids)}")
        out = []
        for x in xs:
            n = len(x)
            label = np.full((n, 1), self.label, dtype=np.int32)
            conf = x[:, :1].astype(np.float32)
            out.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LABEL", label), pb_utils.Tensor("CONFIDENCE", conf)]))
        return out

    def finalize(self):
        pass
