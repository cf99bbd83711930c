"""Hostile input to the offline CLI: one line naming the problem, exit 2, bounded output.

Several hundred generated cases over YAML files (validate, plan, simulate --spec),
trace files (simulate --trace) and command-line options (plan, simulate, profile,
validate) run the CLI in-process through ``tritonscale.cli.main`` (a few through a
real subprocess). Each must end without a traceback, within its timeout, with exit
code 2 and ONE line of at most a few hundred characters that names the file or the
option. ``validate`` is the one exception it documents: a file that parses as a
Kubernetes object but is an invalid ScaledModel gets one line per problem and exit 1.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tritonscale.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "resnet50.yaml"
MAX_OUTPUT = 400  # characters of output any case may print

# -- hostile YAML documents -------------------------------------------------------------


def _laughs(levels: int, width: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _deep_flow(n: int) -> str:
    return "a: " + "[" * n + "]" * n + "\n"


def _deep_block(n: int) -> str:
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(n)) + f"{'  ' * n}v\n"


def _deep_map_flow(n: int) -> str:
    return "{a: " * n + "1" + "}" * n + "\n"


def _random_bytes(seed: int, n: int, nul: bool) -> bytes:
    rnd = random.Random(seed)
    data = bytearray(rnd.randrange(128, 256) for _ in range(n))
    if nul:
        data[rnd.randrange(n)] = 0
    return bytes(data)


def _manifest(**over: object) -> str:
    doc = yaml.safe_load(SPEC.read_text())
    doc.update(over)
    return yaml.safe_dump(doc)


def _yaml_cases() -> Iterator[tuple[str, bytes]]:
    """(id, file content): none of these is a usable ScaledModel."""
    for seed in range(12):
        yield f"non-utf8-{seed}", _random_bytes(seed, 64 + seed * 97, nul=False)
    for seed in range(8):
        yield f"binary-{seed}", _random_bytes(100 + seed, 300, nul=True)
    yield "utf16", "kind: ScaledModel\n".encode("utf-16")
    yield "latin1", "name: caf\xe9\n".encode("latin-1")
    yield "overlong-utf8", b"a: \xc0\xaf\n"
    yield "nul-in-text", b"kind: ScaledModel\x00\n"
    for n in (65, 200, 5000):
        yield f"deep-flow-{n}", _deep_flow(n).encode()
        yield f"deep-block-{n}", _deep_block(n).encode()
        yield f"deep-flow-map-{n}", _deep_map_flow(n).encode()
    for levels, width in ((6, 10), (7, 9), (9, 9), (12, 3), (20, 2)):
        yield f"laughs-{levels}x{width}", _laughs(levels, width).encode()
    yield "many-aliases", ("a: &a 1\nb: [" + ", ".join(["*a"] * 2001) + "]\n").encode()
    yield "recursive-alias", b"a: &a [*a]\n"
    yield "recursive-map-alias", b"a: &a {b: *a}\n"
    yield "undefined-alias", b"a: *nope\n"
    for name, meta in (("list", [1, 2]), ("string", "x"), ("int", 3), ("null", None),
                       ("bool", True)):
        yield f"metadata-{name}", _manifest(metadata=meta).encode()
    for name, spec in (("list", [1]), ("string", "s"), ("int", 1), ("null", None)):
        yield f"spec-{name}", _manifest(spec=spec).encode()
    for i, top in enumerate(("1", "'text'", "[1, 2]", "null", "true", "~", "-1e999",
                             "!!binary aGk=")):
        yield f"top-scalar-{i}", f"{top}\n".encode()
    for i, bad in enumerate(("a: [unclosed", "a: {b", "a: b: c", "- a\nb: c", "\t- tab",
                             "a: 'unterminated", "%YAML 9.9\n---\na: 1",
                             "a: !!python/object:os.system x",
                             "[a, b]: c", "? [a]\n: b", "a: |\n bad\n  indent\nb", "@x: 1")):
        yield f"syntax-{i}", (bad + "\n").encode()
    yield "empty", b""
    yield "comments-only", b"# nothing\n# here\n"
    yield "doc-markers-only", b"---\n...\n---\n"
    yield "huge", b"a: " + b"x" * (2 << 20) + b"\n"
    yield "long-kind", ("kind: " + "K" * 100_000 + "\nmetadata: {name: x}\n").encode()
    yield "long-name", _manifest(metadata={"name": "n" * 100_000}).encode()
    yield "long-key", ("apiVersion: tritonscale.io/v1alpha1\nkind: ScaledModel\nspec:\n  "
                       + "k" * 50_000 + ": 1\n").encode()
    yield "control-chars", b"a: \x07\x1b[31m\n"
    yield "many-docs-invalid", b"---\na: 1\n---\n[unclosed\n"
    yield "bom-then-binary", b"\xef\xbb\xbf\x00\x01"
    yield "big-int", _manifest(spec={"scaling": {"maxReplicas": 10**400}}).encode()
    yield "float-overflow", (b"apiVersion: tritonscale.io/v1alpha1\nkind: ScaledModel\n"
                             b"metadata: {name: x}\nspec: {slo: {latency: {targetMs: 1.0e999}}}\n")


YAML_CASES = list(_yaml_cases())


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def lines(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.strip()]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return Outcome(code, cap.out, cap.err)


def _assert_refused(res: Outcome, names: str) -> None:
    assert "Traceback" not in res.text, res.text[:2000]
    assert res.code == 2, (res.code, res.text[:2000])
    assert len(res.lines()) == 1, res.text[:2000]
    assert len(res.text) <= MAX_OUTPUT, res.text[:2000]
    assert names in res.text, (names, res.text)


def _validate_ok(res: Outcome, path: Path) -> None:
    """validate: unreadable -> one line, exit 2; readable but invalid -> exit 1, one
    bounded line per problem, each naming the file."""
    assert "Traceback" not in res.text, res.text[:2000]
    if res.code == 2:
        _assert_refused(res, str(path))
        return
    lines = res.lines()
    if res.code == 0:  # another kind of object: skipped with a note
        assert len(lines) == 1 and "(not a ScaledModel)" in lines[0], res.text[:2000]
        assert len(res.text) <= MAX_OUTPUT, res.text[:2000]
        return
    assert res.code == 1, (res.code, res.text[:2000])
    assert 1 <= len(lines) <= 60 and all(ln.startswith(str(path)) for ln in lines), lines
    assert all(len(ln) <= 300 for ln in lines), lines


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    out: dict[str, Path] = {}
    for cid, content in YAML_CASES:
        p = d / f"{cid}.yaml"
        p.write_bytes(content)
        out[cid] = p
    return out


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("trace") / "ok.csv"
    p.write_text("timestamp_s\n" + "".join(f"{i * 0.5}\n" for i in range(40)))
    return p


YAML_IDS = [c for c, _ in YAML_CASES]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", YAML_IDS)
def test_validate_hostile_yaml(case: str, files: dict[str, Path],
                               capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(["validate", str(files[case])], capsys)
    _validate_ok(res, files[case])
    if case.startswith(("binary", "non-utf8", "deep", "laughs", "many-aliases", "recursive",
                        "syntax", "empty", "huge", "utf16", "latin1", "overlong")):
        assert res.code == 2, res.text


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", YAML_IDS)
def test_plan_hostile_spec(case: str, files: dict[str, Path],
                           capsys: pytest.CaptureFixture[str]) -> None:
    _assert_refused(_run(["plan", "--spec", str(files[case]), "--rps", "10"], capsys),
                    str(files[case]))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", YAML_IDS)
def test_simulate_hostile_spec(case: str, files: dict[str, Path], small_trace: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    _assert_refused(_run(["simulate", "--spec", str(files[case]), "--trace", str(small_trace)],
                         capsys), str(files[case]))


# -- hostile traces ---------------------------------------------------------------------


def _trace_cases() -> Iterator[tuple[str, bytes]]:
    yield "empty", b""
    yield "header-only", b"timestamp_s\n"
    yield "no-known-column", b"time,x\n1,2\n"
    yield "long-header", ("c" * 100_000 + "\n1\n").encode()
    yield "span-1e9", b"timestamp_s\n0\n1e9\n"
    yield "span-1e300", b"timestamp_s\n-1e300\n1e300\n"
    yield "nan", b"timestamp_s\n0\nnan\n"
    yield "inf", b"timestamp_s\n0\ninf\n"
    yield "overflow", b"timestamp_s\n0\n1e999\n"
    yield "word", b"timestamp_s\n0\nsoon\n"
    yield "same-time", b"timestamp_s\n" + b"5\n" * 10
    yield "single", b"timestamp_s\n3\n"
    yield "azure-bad-date", b"TIMESTAMP\n2023-13-45 99:99:99\n"
    yield "azure-year-1", b"TIMESTAMP\n0001-01-01 00:00:00\n9999-12-31 23:59:59\n"
    yield "azure-text", b"TIMESTAMP\nyesterday\n"
    yield "huge-field", b"timestamp_s\n\"" + b"1" * 200_000 + b"\"\n"
    yield "unterminated-quote", b'timestamp_s\n"1\n2\n'
    yield "nul", b"timestamp_s\n0\x00\n1\n"
    yield "binary", _random_bytes(7, 500, nul=True)
    for seed in range(6):
        yield f"non-utf8-{seed}", b"timestamp_s\n" + _random_bytes(200 + seed, 100, nul=False)
    yield "too-many-requests", b"timestamp_s\n" + b"".join(
        f"{i / 1000:.3f}\n".encode() for i in range(60_000))  # x 500 = 30 M requests
    yield "huge-file", b"timestamp_s\n" + b"1\n" * (33 << 20)


TRACE_CASES = list(_trace_cases())


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("traces")
    out = {}
    for cid, content in TRACE_CASES:
        p = d / f"{cid}.csv"
        p.write_bytes(content)
        out[cid] = p
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", [c for c, _ in TRACE_CASES])
def test_simulate_hostile_trace(case: str, traces: dict[str, Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(["simulate", "--spec", str(SPEC), "--trace", str(traces[case])], capsys)
    _assert_refused(res, "")
    assert str(traces[case]) in res.text or "--rate-scale" in res.text or "trace" in res.text


# -- hostile options --------------------------------------------------------------------

Args = Callable[[Path], list[str]]


def _sim(*extra: str) -> Args:
    return lambda trace: ["simulate", "--spec", str(SPEC), "--trace", str(trace), *extra]


def _plan(*extra: str) -> Args:
    return lambda _trace: ["plan", "--spec", str(SPEC), *extra]


def _profile(*extra: str) -> Args:
    base = ["--model", "m", "--accelerator", "T4", "--url", "127.0.0.1:9"]
    return lambda _trace: ["profile", *base, *extra]


OPTION_CASES: list[tuple[str, Args, str]] = []
for v in ("nan", "inf", "-inf", "-1", "1e300", "1e10", "abc", "", "0x10", "1e", "--", "1" * 5000):
    OPTION_CASES.append((f"plan-rps-{v[:12]}", _plan("--rps", v), "--rps"))
for v in ("0", "-1", "nan", "inf", "1e7", "1e6", "abc", "-0", "1e-400"):
    OPTION_CASES.append((f"rate-scale-{v}", _sim("--rate-scale", v), "--rate-scale"))
for v in ("nan", "inf", "-inf", "1e9", "-1", "3601", "x"):
    OPTION_CASES.append((f"preemptions-{v}", _sim("--preemptions-per-hour", v),
                         "--preemptions-per-hour"))
for v in ("0", "-1", "nan", "inf", "1.5", "x"):
    OPTION_CASES.append((f"hpa-target-{v}", _sim("--hpa-target", v), "--hpa-target"))
for v in ("0", "-5", "nan", "1e12"):
    OPTION_CASES.append((f"hpa-latency-target-{v}", _sim("--hpa-metric", "latency",
                                                          "--hpa-target", v), "--hpa-target"))
for v in ("-1", "nan", "inf", "1e9"):
    OPTION_CASES.append((f"client-timeout-{v}", _sim("--client-timeout", v), "--client-timeout"))
for v in ("-1", str(2**64), "x", "1.5"):
    OPTION_CASES.append((f"seed-{v[:8]}", _sim("--seed", v), "--seed"))
for v in ("/nonexistent-dir/out.png", "/", "/proc/out.png", "/proc/self", "/dev/null/x.png"):
    OPTION_CASES.append((f"plot-{v}", _sim("--plot", v), "--plot"))
OPTION_CASES += [
    ("policy-unknown", _sim("--policy", "magic"), "--policy"),
    ("hpa-metric-unknown", _sim("--hpa-metric", "vibes"), "--hpa-metric"),
    ("baseline-pool-unknown", _sim("--policy", "hpa", "--baseline-pool", "nope"), "nope"),
    ("baseline-variant-unknown", _sim("--policy", "hpa", "--baseline-variant", "nope"), "nope"),
    ("simulate-missing-trace", lambda _t: ["simulate", "--spec", str(SPEC)], "--trace"),
    ("simulate-trace-dir", lambda _t: ["simulate", "--spec", str(SPEC), "--trace", "/"], "/"),
    ("simulate-trace-missing", lambda _t: ["simulate", "--spec", str(SPEC), "--trace",
                                           "/nonexistent.csv"], "/nonexistent.csv"),
    ("simulate-spec-missing", lambda t: ["simulate", "--spec", "/nope.yaml", "--trace", str(t)],
     "/nope.yaml"),
    ("simulate-unknown-option", _sim("--warp", "9"), "--warp"),
    ("plan-no-rps", lambda _t: ["plan", "--spec", str(SPEC)], "--rps"),
    ("plan-spec-dir", lambda _t: ["plan", "--spec", "/", "--rps", "1"], "/"),
    ("plan-spec-devzero-like", lambda _t: ["plan", "--spec", "/proc/self/mem", "--rps", "1"],
     "/proc/self/mem"),
    ("validate-no-files", lambda _t: ["validate"], "FILE"),
    ("validate-missing", lambda _t: ["validate", "/nonexistent.yaml"], "/nonexistent.yaml"),
    ("validate-dir", lambda _t: ["validate", "/"], "/"),
    ("no-command", lambda _t: [], "COMMAND"),
    ("unknown-command", lambda _t: ["explode"], "explode"),
]
for opt, vals in (("--max-batch", ("0", "-1", "99999", "x")),
                  ("--requests-per-batch", ("0", "-3", "1000000")),
                  ("--warmup", ("-1", "100000")),
                  ("--concurrency", ("0", "a", "1,-2", ",", "99999")),
                  ("--sweep-seconds", ("0", "nan", "inf", "-1", "1e9")),
                  ("--timeout", ("0", "nan", "-inf", "1e9")),
                  ("--url", ("", "a b", "x" * 3000)),
                  ("--model", ("", "a b", "m" * 300)),
                  ("--output", ("/nonexistent-dir/p.yaml", "/", "/proc/p.yaml"))):
    for v in vals:
        OPTION_CASES.append((f"profile{opt}-{v[:10]}", _profile(opt, v), opt))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("args", "names"), [pytest.param(a, n, id=i) for i, a, n in OPTION_CASES])
def test_hostile_options(args: Args, names: str, small_trace: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    _assert_refused(_run(args(small_trace), capsys), names)


def test_the_suite_is_large_enough() -> None:
    n = 3 * len(YAML_CASES) + len(TRACE_CASES) + len(OPTION_CASES) + len(SUBPROCESS_CASES)
    assert n >= 300, n


def test_valid_inputs_still_work(small_trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Control: the same commands with sound input succeed (the refusals are specific)."""
    assert _run(["validate", str(SPEC)], capsys).code == 0
    assert _run(["plan", "--spec", str(SPEC), "--rps", "100"], capsys).code == 0
    res = _run(["simulate", "--spec", str(SPEC), "--trace", str(small_trace), "--policy",
                "hpa", "--rate-scale", "2", "--json"], capsys)
    assert res.code == 0 and '"policy": "hpa"' in res.out, res.text


# -- a few through a real process (argv, stdin, exit status as a shell sees them) ----------

SUBPROCESS_CASES: list[tuple[str, list[str], bytes, str]] = [
    ("stdin-binary", ["validate", "-"], _random_bytes(1, 200, nul=True), "<stdin>"),
    ("stdin-laughs", ["validate", "-"], _laughs(9, 9).encode(), "<stdin>"),
    ("stdin-deep", ["validate", "-"], _deep_flow(5000).encode(), "<stdin>"),
    ("argv-rps-nan", ["plan", "--spec", str(SPEC), "--rps", "nan"], b"", "--rps"),
    ("argv-rate-scale", ["simulate", "--spec", str(SPEC), "--trace", "x.csv", "--rate-scale",
                         "1e7"], b"", "--rate-scale"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "stdin", "names"),
                         [pytest.param(a, s, n, id=i) for i, a, s, n in SUBPROCESS_CASES])
def test_hostile_subprocess(argv: list[str], stdin: bytes, names: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "tritonscale", *argv], input=stdin,
                          capture_output=True, timeout=50, check=False)
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    _assert_refused(Outcome(proc.returncode, text, ""), names)
