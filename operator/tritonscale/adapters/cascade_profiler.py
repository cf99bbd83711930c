"""``tritonscale profile --cascade``: measure a cascade's curve on the live tier models.

Sends a labelled sample (an ``.npz`` with ``x``: inputs, first axis = samples, and
``y``: the right labels) to the tier-1 and tier-2 models through tritonclient, reads
tier 1's confidence output and both tiers' label outputs, and prints the
``escalateBelow`` block (:mod:`tritonscale.core.cascade_profile` does the arithmetic).
Every call has a timeout; nothing is retried silently.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonscale.adapters import resolve
from tritonscale.core import cascade_profile as cp


class CascadeProfileError(RuntimeError):
    """The sample or a tier model cannot be used; the message says which."""


@dataclass(frozen=True)
class Answers:
    confidence: npt.NDArray[np.float64]
    tier1_right: npt.NDArray[np.bool_]
    tier2_right: npt.NDArray[np.bool_]


def load_sample(path: Path) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            x, y = np.asarray(data["x"]), np.asarray(data["y"])
    except (OSError, KeyError, ValueError) as exc:
        raise CascadeProfileError(f"--sample {path}: an .npz with arrays x and y is needed "
                                  f"({exc})") from exc
    if x.ndim < 1 or len(x) == 0 or len(x) != len(y):
        raise CascadeProfileError(f"--sample {path}: x and y need the same, non-zero length")
    return x, y


def _infer(client: Any, model: str, input_name: str, x: npt.NDArray[Any],
           outputs: Sequence[str], batch: int) -> dict[str, npt.NDArray[Any]]:
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    got: dict[str, list[npt.NDArray[Any]]] = {o: [] for o in outputs}
    for i in range(0, len(x), batch):
        part = np.ascontiguousarray(x[i:i + batch])
        t = httpclient.InferInput(input_name, list(part.shape), np_to_triton_dtype(part.dtype))
        t.set_data_from_numpy(part)
        try:
            res = client.infer(model, [t], outputs=[httpclient.InferRequestedOutput(o)
                                                    for o in outputs])
        except InferenceServerException as exc:
            raise CascadeProfileError(f"model {model!r}: {exc}") from exc
        for o in outputs:
            arr = res.as_numpy(o)
            if arr is None:
                raise CascadeProfileError(f"model {model!r} returned no output {o!r}")
            got[o].append(arr.reshape(len(part), -1)[:, 0])
    return {o: np.concatenate(v) for o, v in got.items()}


def measure(url1: str, tier1: str, url2: str, tier2: str, x: npt.NDArray[Any],
            y: npt.NDArray[Any], *, input_name: str, confidence: str, label: str,
            batch: int = 32, timeout_s: float = 30.0) -> Answers:
    """Both tiers' answers to the sample."""
    import tritonclient.http as httpclient

    try:  # tritonclient's own lookups have no deadline: connect to the addresses
        url1, url2 = (resolve.pinned(u.removeprefix("http://"), timeout_s) for u in (url1, url2))
    except ValueError as e:
        raise CascadeProfileError(f"Triton server: {e}") from None
    c1 = httpclient.InferenceServerClient(url1, connection_timeout=timeout_s,
                                          network_timeout=timeout_s)
    c2 = httpclient.InferenceServerClient(url2, connection_timeout=timeout_s,
                                          network_timeout=timeout_s)
    try:
        a1 = _infer(c1, tier1, input_name, x, (confidence, label), batch)
        a2 = _infer(c2, tier2, input_name, x, (label,), batch)
    finally:
        c1.close()
        c2.close()
    truth = y.reshape(len(y))
    return Answers(
        confidence=a1[confidence].astype(np.float64),
        tier1_right=a1[label].astype(truth.dtype) == truth,
        tier2_right=a2[label].astype(truth.dtype) == truth,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("--cascade (measure a cascade's escalateBelow curve)")
    g.add_argument("--cascade", action="store_true",
                   help="measure escalated and accuracy per threshold (needs --sample)")
    g.add_argument("--tier2-model", help="the last tier's model (--model is tier 1)")
    g.add_argument("--tier2-url", help="Triton HTTP host:port of tier 2 (default --url)")
    g.add_argument("--sample", type=Path, help=".npz with x (inputs) and y (right labels)")
    g.add_argument("--input", dest="input_name", default="INPUT", help="input tensor name")
    g.add_argument("--confidence-output", default="CONFIDENCE",
                   help="tier 1's confidence output (spec.cascade.confidence.output)")
    g.add_argument("--label-output", default="LABEL", help="output holding the answer")
    g.add_argument("--thresholds", type=float, nargs="+", default=list(cp.DEFAULT_THRESHOLDS))


def run(args: argparse.Namespace) -> int:
    if not args.tier2_model or args.sample is None:
        print("tritonscale profile --cascade: --tier2-model and --sample are required",
              file=sys.stderr)
        return 2
    try:
        x, y = load_sample(args.sample)
        ans = measure(args.url, args.model, args.tier2_url or args.url, args.tier2_model, x, y,
                      input_name=args.input_name, confidence=args.confidence_output,
                      label=args.label_output, timeout_s=args.timeout)
        points = cp.curve(ans.confidence, ans.tier1_right, ans.tier2_right, args.thresholds)
    except (CascadeProfileError, ValueError) as exc:
        print(f"tritonscale profile --cascade: {exc}", file=sys.stderr)
        return 1
    print(f"{len(x)} samples: tier 1 alone {ans.tier1_right.mean():.4f}, tier 2 alone "
          f"{ans.tier2_right.mean():.4f}", file=sys.stderr)
    text = cp.to_yaml(points)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
