"""A trained digits classifier in numpy (the Python backend stub has numpy, not sklearn).

``weights.npz`` beside this file holds ``W0, b0, W1, b1, ...``: dense layers with ReLU
between them and a softmax at the end (one layer = multinomial logistic regression).
Outputs: LABEL (argmax) and CONFIDENCE (the top softmax probability, in [0, 1]).
"""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights.npz")
        with np.load(path) as data:
            n = len([k for k in data.files if k.startswith("W")])
            self.layers = [(data[f"W{i}"], data[f"b{i}"]) for i in range(n)]

    def _forward(self, x):
        h = x.astype(np.float64)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        h = h - h.max(axis=1, keepdims=True)
        p = np.exp(h)
        return p / p.sum(axis=1, keepdims=True)

    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        sizes = [len(x) for x in xs]
        probs = self._forward(np.concatenate(xs, axis=0))
        out = []
        start = 0
        for n in sizes:
            p = probs[start:start + n]
            start += n
            label = np.argmax(p, axis=1).astype(np.int32).reshape(n, 1)
            conf = np.max(p, axis=1).astype(np.float32).reshape(n, 1)
            out.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("LABEL", label), pb_utils.Tensor("CONFIDENCE", conf)]))
        return out

    def finalize(self):
        pass
