"""Hostile-input handling shared by the CLI commands: read, parse and bound what users pass.

Every problem becomes an :class:`InputError` whose text is one short line naming the
file or option and what is wrong; the commands print it and exit with
:data:`EXIT_BAD_INPUT` (2), before doing any work. Nothing here echoes more than
:data:`EXCERPT` characters of the input.

Bounds (documented in docs/cli.md, the table there lists every one):

* files: at most :data:`MAX_SPEC_BYTES` for a ScaledModel, :data:`MAX_TRACE_BYTES` for
  a trace; UTF-8 text only (a NUL byte means a binary file);
* YAML: nesting at most :data:`MAX_YAML_DEPTH` levels, at most :data:`MAX_YAML_ALIASES`
  aliases and at most :data:`MAX_YAML_NODES` nodes once aliases are expanded (a
  "billion laughs" document is refused before it is built);
* ``simulate``: see :func:`check_replay_size`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from tritonscale.core.spec import (
    MAX_CLIENT_TIMEOUT_S,
    ScaledModelSpec,
    SpecError,
    parse_manifest,
    parse_spec,
)

EXIT_BAD_INPUT = 2
EXCERPT = 80
MAX_LINE = 300

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: the CRD's own limits keep real specs far smaller
MAX_TRACE_BYTES = 64 << 20  # 64 MiB of CSV, ~1.7 M Azure rows (the bundled one: 0.7 MiB)
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 1_000
MAX_YAML_NODES = 200_000


class InputError(ValueError):
    """Bad user input; ``str()`` is the one line to print."""


def excerpt(value: object, limit: int = EXCERPT) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(line: str, limit: int = MAX_LINE) -> str:
    """One printable line of at most ``limit`` characters."""
    one = " ".join(line.split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


# -- files ---------------------------------------------------------------------------


def read_text(path: str, *, max_bytes: int, stdin: Any = None) -> str:
    """The UTF-8 text of ``path`` (``-`` reads ``stdin``), refusing binary or huge files."""
    name = "<stdin>" if path == "-" else path
    stdin = sys.stdin if stdin is None else stdin
    try:
        if path == "-":
            source = stdin.buffer if hasattr(stdin, "buffer") else stdin
            data = source.read(max_bytes + 1)
            if isinstance(data, str):
                data = data.encode("utf-8", "surrogateescape")
        else:
            p = Path(path)
            if p.is_dir():
                raise InputError(f"{name}: is a directory, not a file")
            with p.open("rb") as fh:
                data = fh.read(max_bytes + 1)
    except InputError:
        raise
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or type(e).__name__}") from None
    if len(data) > max_bytes:
        raise InputError(f"{name}: larger than {max_bytes:,} bytes")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"{name}: a binary file (NUL byte at offset {nul})")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{name}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def check_output_path(path: str, option: str) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Opens it for appending (creating it, then removing it again if it did not exist):
    permission bits alone do not tell (root, read-only mounts, /proc)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{option} {excerpt(path)}: is a directory")
    if not parent.is_dir():
        raise InputError(f"{option} {excerpt(path)}: directory {excerpt(str(parent))} "
                         f"does not exist")
    existed = p.exists()
    try:
        with p.open("ab"):
            pass
    except OSError as e:
        raise InputError(f"{option} {excerpt(path)}: cannot write: "
                         f"{e.strerror or type(e).__name__}") from None
    if not existed:
        with contextlib.suppress(OSError):
            p.unlink()


# -- YAML ----------------------------------------------------------------------------


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader refusing deep nesting and alias bombs while composing (before any
    object is built), so neither the recursion limit nor memory is ever reached."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise InputError(f"line {mark.line + 1}: more than {MAX_YAML_ALIASES:,} "
                                 f"YAML aliases")
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise InputError(f"line {mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} "
                             f"levels")
        try:
            node: Node | None = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        return node


def _expanded_size(root: Node, limit: int) -> int:
    """Nodes in the tree ``root`` stands for once aliases are expanded (stops past ``limit``).

    Aliased nodes are shared objects in the composed graph; memoising by identity keeps
    this linear in the document, however large the expansion."""
    memo: dict[int, int] = {}

    def size(node: Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = limit + 1  # a cycle (recursive alias) counts as unbounded
        total = 1
        if isinstance(node, SequenceNode):
            for child in node.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(node, MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        elif not isinstance(node, ScalarNode):  # pragma: no cover - no other node kinds
            total = limit + 1
        memo[key] = total
        return total

    return size(root)


def load_yaml_documents(text: str, name: str) -> list[Any]:
    """Every document of ``text``, bounded (see the module doc); InputError otherwise."""
    docs: list[Any] = []
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
                raise InputError(f"{name}: document {len(docs) + 1} expands to more than "
                                 f"{MAX_YAML_NODES:,} YAML nodes (alias bomb?)")
            docs.append(loader.construct_document(node))
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(f"{name}:") else f"{name}: {msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(e, "problem", None) or type(e).__name__
        raise InputError(f"{name}: {where}: invalid YAML: {clip(str(problem), 120)}") from None
    except (RecursionError, MemoryError):  # pragma: no cover - bounded above
        raise InputError(f"{name}: YAML too complex") from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


def load_yaml(text: str, name: str) -> Any:
    """Exactly one YAML document (a ScaledModel for ``plan``/``simulate``)."""
    docs = [d for d in load_yaml_documents(text, name) if d is not None]
    if not docs:
        raise InputError(f"{name}: no YAML document")
    if len(docs) > 1:
        raise InputError(f"{name}: {len(docs)} YAML documents; give one ScaledModel")
    return docs[0]


def load_spec(path: str) -> ScaledModelSpec:
    """A ScaledModel file (whole object, or just its spec) for ``plan``/``simulate``."""
    doc = load_yaml(read_text(path, max_bytes=MAX_SPEC_BYTES), path)
    try:
        if isinstance(doc, dict) and "apiVersion" in doc:
            return parse_manifest(doc)[2]
        return parse_spec(doc.get("spec", doc) if isinstance(doc, dict) else doc)
    except SpecError as e:
        raise InputError(f"{path}: {summarize_errors(e.errors)}") from None


# -- numbers -------------------------------------------------------------------------


def check_number(value: float | None, option: str, *, low: float, high: float,
                 low_open: bool = False) -> None:
    """A finite number within [low, high] (or (low, high] with ``low_open``)."""
    if value is None:
        return
    if not math.isfinite(value):
        raise InputError(f"{option} must be a finite number; got {value}")
    if value < low or (low_open and value == low) or value > high:
        lo = "(" if low_open else "["
        raise InputError(f"{option} must be in {lo}{low:g}, {high:g}]; got {value:g}")


def summarize_errors(errors: Iterable[object], limit: int = 3) -> str:
    """The first ``limit`` problems on one line, then how many more."""
    items = [str(e) for e in errors]
    shown = "; ".join(items[:limit])
    more = len(items) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


# -- simulate ------------------------------------------------------------------------

# A replay costs time and memory in proportion to the requests it simulates (trace rows
# x --rate-scale) and its per-window series in proportion to the trace's duration.
# The bundled trace at the default --rate-scale 500 is ~9.7 M requests over ~1 h.
MAX_REPLAY_REQUESTS = 25_000_000
MAX_TRACE_SECONDS = 30 * 86_400.0
MAX_RATE_SCALE = 100_000.0
MAX_PREEMPTIONS_PER_HOUR = 3_600.0
MAX_HPA_LATENCY_MS = 3_600_000.0
MAX_PREROLL_S = 86_400.0


def check_replay_size(rows: int, duration_s: float, rate_scale: float) -> None:
    """Refuse a replay that cannot finish in bounded time and memory."""
    if not math.isfinite(duration_s) or duration_s > MAX_TRACE_SECONDS:
        raise InputError(
            f"the trace spans {duration_s:.3g} s; at most {MAX_TRACE_SECONDS:,.0f} s "
            f"(30 days) can be replayed"
        )
    estimate = rows * rate_scale
    if estimate > MAX_REPLAY_REQUESTS:
        raise InputError(
            f"{rows:,} arrivals x --rate-scale {rate_scale:g} = {estimate:.3g} requests; "
            f"at most {MAX_REPLAY_REQUESTS:,} can be replayed (lower --rate-scale or cut "
            f"the trace)"
        )


def simulate_inputs(args: Any) -> tuple[ScaledModelSpec, Any]:
    """Check every ``simulate`` input, then load the spec and the scaled trace.

    Options first (cheap), then the output path (before hours of replay, not after),
    then the spec, then the trace and the size of the replay it asks for."""
    from tritonscale.sim.trace import TraceError, parse_trace, scale_trace

    rate_scale = float(args.rate_scale)
    check_number(rate_scale, "--rate-scale", low=0.0, high=MAX_RATE_SCALE, low_open=True)
    check_number(getattr(args, "preemptions_per_hour", 0.0), "--preemptions-per-hour",
                 low=0.0, high=MAX_PREEMPTIONS_PER_HOUR)
    target = getattr(args, "hpa_target", None)
    if getattr(args, "hpa_metric", "utilisation") == "utilisation":
        check_number(target, "--hpa-target (utilisation)", low=0.0, high=1.0, low_open=True)
    else:
        check_number(target, "--hpa-target (latency ms)", low=0.0, high=MAX_HPA_LATENCY_MS,
                     low_open=True)
    check_number(getattr(args, "client_timeout", None), "--client-timeout", low=0.0,
                 high=MAX_CLIENT_TIMEOUT_S)
    check_number(getattr(args, "preroll", None), "--preroll", low=0.0, high=MAX_PREROLL_S)
    seed = getattr(args, "seed", 0)
    if not 0 <= seed < 2**63:
        raise InputError(f"--seed must be in [0, 2^63); got {excerpt(seed)}")
    if getattr(args, "plot", None):
        check_output_path(args.plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise InputError("--plot needs matplotlib (pip install 'tritonscale[plot]')")
    spec = load_spec(args.spec)
    text = read_text(args.trace, max_bytes=MAX_TRACE_BYTES)
    try:
        arrivals = parse_trace(text.splitlines(), args.trace)
    except TraceError as e:
        raise InputError(clip(str(e))) from None
    duration = float(arrivals[-1])
    if duration <= 0:
        raise InputError(f"{args.trace}: every arrival is at the same time; a trace needs "
                         f"arrivals spread over time")
    check_replay_size(len(arrivals), duration, rate_scale)
    scaled = scale_trace(arrivals, rate_scale, seed=seed)
    if len(scaled) == 0:
        raise InputError(f"--rate-scale {rate_scale:g} keeps no arrival of the trace")
    return spec, scaled


# -- profile -------------------------------------------------------------------------


def check_profile_args(args: Any) -> None:
    """Refuse ``profile`` options that cannot work, before connecting to Triton."""
    url = str(args.url)
    if not url or len(url) > 2048 or any(c.isspace() for c in url):
        raise InputError(f"--url must be host:port without spaces; got {excerpt(url)}")
    for option, value in (("--model", args.model), ("--accelerator", args.accelerator)):
        if not value or len(value) > 253 or any(c.isspace() or not c.isprintable()
                                                for c in value):
            raise InputError(f"{option} must be 1-253 printable characters without spaces; "
                             f"got {excerpt(value)}")
    if args.max_batch is not None and not 1 <= args.max_batch <= 4096:
        raise InputError(f"--max-batch must be in [1, 4096]; got {args.max_batch}")
    if not 1 <= args.requests_per_batch <= 100_000:
        raise InputError(f"--requests-per-batch must be in [1, 100000]; "
                         f"got {args.requests_per_batch}")
    if not 0 <= args.warmup <= 10_000:
        raise InputError(f"--warmup must be in [0, 10000]; got {args.warmup}")
    if not args.concurrency or len(args.concurrency) > 64 or max(args.concurrency) > 4096:
        raise InputError("--concurrency needs 1-64 levels, each in [1, 4096]")
    check_number(args.sweep_seconds, "--sweep-seconds", low=0.0, high=3600.0, low_open=True)
    check_number(args.timeout, "--timeout", low=0.0, high=3600.0, low_open=True)
    if args.output != "-":
        check_output_path(args.output, "--output")
