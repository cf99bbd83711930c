"""Python-backend test model that records what it computes.

Each request's INPUT is ``[id, extra_ms]``. A batch sleeps ``base_ms`` plus the largest
``extra_ms`` of its requests, then answers each request with its INPUT doubled. Before
and after the sleep it appends one line to ``ledger_path`` (config.pbtxt
``parameters``): ``start|done <monotonic seconds> <id>,<id>,...`` -- the server's own
record of which requests it computed and when (``time.monotonic`` is the system-wide
CLOCK_MONOTONIC, the test process's clock too). No multiprocessing: the model runs in
the Python backend stub's own process.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.base_s = float(params.get("base_ms", {}).get("string_value", "0")) / 1000.0
        self.ledger = params.get("ledger_path", {}).get("string_value", "")

    def _record(self, what, ids):
        if self.ledger:
            with open(self.ledger, "a", encoding="utf-8") as fh:
                fh.write(f"{what} {time.monotonic():.6f} {','.join(ids)}\n")

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        ids = [str(int(row[0])) for x in inputs for row in x]
        extra_s = max(float(np.max(x[:, 1])) for x in inputs) / 1000.0
        self._record("start", ids)
        deadline = time.monotonic() + self.base_s + max(extra_s, 0.0)
        remaining = deadline - time.monotonic()
        while remaining > 0:
            time.sleep(remaining)
            remaining = deadline - time.monotonic()
        self._record("done", ids)
        responses = []
        for x in inputs:
            out = pb_utils.Tensor("OUTPUT", np.asarray(x, dtype=np.float32) * 2.0)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def finalize(self):
        pass
