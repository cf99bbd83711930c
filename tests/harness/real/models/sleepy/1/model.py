"""Python-backend test model with a controllable, GPU-like batch service time.

A batch of ``b`` items takes ``base_ms + per_item_ms * b + extra`` milliseconds
(sleep based), where ``b`` is the sum of the batch dimensions of all requests that
Triton's dynamic batcher handed to one ``execute`` call, and ``extra`` is the largest
INPUT value in the batch (clipped at 0): a request can ask for extra compute time, so
tests can shape a latency distribution; send zeros for the plain a + c*b model.  Both
parameters come from ``config.pbtxt`` ``parameters``.  No multiprocessing is used: the model runs
inside the Python backend stub's own process.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.base_s = float(params.get("base_ms", {}).get("string_value", "10")) / 1000.0
        self.per_item_s = float(params.get("per_item_ms", {}).get("string_value", "2")) / 1000.0

    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        batch = sum(int(x.shape[0]) for x in inputs)
        extra_s = max(max(float(np.max(x)) for x in inputs), 0.0) / 1000.0
        deadline = time.monotonic() + self.base_s + self.per_item_s * batch + extra_s
        remaining = deadline - time.monotonic()
        while remaining > 0:
            time.sleep(remaining)
            remaining = deadline - time.monotonic()
        responses = []
        for x in inputs:
            out = pb_utils.Tensor("OUTPUT", np.asarray(x, dtype=np.float32) * 2.0)
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses

    def finalize(self):
        pass
