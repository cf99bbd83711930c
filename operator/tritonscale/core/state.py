"""The autoscaler's memory between steps: a typed value and its versioned JSON codec.

:func:`tritonscale.core.autoscale.decide` reads an :class:`AutoscalerState` and
returns the next one; the operator persists it as JSON in
``status.autoscaler`` (``simulate`` round-trips it through JSON too), so a
restart resumes where it stopped.

Whatever sits in ``status.autoscaler`` is untrusted: anyone who may patch the
status subresource can write it, and older operators wrote another layout.
:func:`decode` therefore never raises. It migrates older versions, checks every
field (type, finite, within physical bounds, times not in the future, replica
counts within ``maxReplicas``), resets each field that fails to its default and
says so in :attr:`Decoded.problems`; the decision carries that text so the
operator emits one ``AutoscalerStateReset`` event (the next step writes a
valid state, so the event is not repeated). A document from an unknown
(newer) version, or one that is not a JSON object, resets the whole state.

JSON layout, version 3 (``version`` is required)::

    {"version": 3,
     "forecast": {"l": level, "b": trend, "s": deviation, "t": time, "y": last},
     "loadWindow": [[t, rps], ...], "load": rps,        # stabilised observed demand
     "forecastWindow": [[t, rps], ...], "forecastLoad": rps,  # stabilised look-ahead
     "odWindow": [[t, rps], ...], "odLoad": rps,        # load spot protection holds
     "correction": {"variant/pool": factor, ...},      # THE online correction (:mod:`.correction`)
     "level": 0..3, "recoveringSince": t | null,        # degradation ladder
     "failures": n,                                     # consecutive unknown signals
     "target": [[variant, pool, replicas], ...],        # last target mix
     "idleSince": t | null,                             # rate 0 since (scale to zero)
     "binding": [signature, text],                      # cached binding constraint
     "threshold": t, "escalationScale": s,              # cascades only
     "accuracyServed": [t, requests, accuracy],         # cascades only (rolling window)
     "readySince": [[variant, pool, ready, t | null], ...]}  # Ready replicas since

Migrated on first read: version 2 (the same layout plus ``"loadCorrection": c``,
a fleet-wide load multiplier in [1, 2] kept beside the per-placement factors) and
version 1 (single-letter keys ``v f w L wo Lo c cf lvl rec fail p idle bc thr esc``,
written by operators before this module). The two corrections are one now: a load
multiplier ``c`` asked for ``c`` times the capacity, which is what a service-time
factor ``c`` gives, so ``c`` is folded into the factor of every placement of the
stored target and of every stored factor (``f x c``, within the factor bounds).

An optional key added within a version (``accuracyServed``, ``readySince``) is
ignored by an operator that does not know it, so it needs no new version.

Pure code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VERSION = 3

# Physical bounds of what may be stored (and of the signals decide() accepts).
MAX_RPS = 1e9  # requests/second: above any real fleet by orders of magnitude
MAX_LATENCY_MS = 1e7  # ~2.8 hours
MAX_LOAD = 1e11  # a stored planning load (MAX_RPS x headroom x correction)
MAX_FAILURES = 1_000_000
MAX_TEXT = 1024
MAX_WINDOW = 4096
# Clock skew tolerated between the writer of a state and its reader.
CLOCK_SKEW_SECONDS = 60.0
# Bounds of a correction factor (see :mod:`.correction`).
MIN_FACTOR = 0.5
MAX_FACTOR = 3.0
LEVELS = 4
# Bounds of a cascade's escalation scale (see :mod:`.cascade_step`).
ESC_MIN, ESC_MAX = 0.25, 4.0
MAX_LOAD_CORRECTION = 2.0
# Requests a cascade's rolling accuracy window may weigh (MAX_RPS for a day).
MAX_SERVED = MAX_RPS * 86_400.0
# Ready replicas one placement may report (far above any real Deployment).
MAX_READY = 1_000_000

Key = tuple[str, str]
Window = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class AutoscalerState:
    """Everything ``decide`` remembers between steps (all defaults = a fresh start)."""

    forecast: Mapping[str, float] | None = None
    load_window: Window = ()
    load: float | None = None
    # The forecast's look-ahead, held for at most its horizon (see autoscale step 4).
    forecast_window: Window = ()
    forecast_load: float | None = None
    od_window: Window = ()
    od_load: float | None = None
    # The online correction: service-time factor per "variant/pool".
    correction: Mapping[str, float] = field(default_factory=dict)
    level: int = 0
    recovering_since: float | None = None
    failures: int = 0
    target: Mapping[Key, int] = field(default_factory=dict)
    idle_since: float | None = None
    binding: tuple[str, str] | None = None
    # Cascades (:mod:`.cascade_step`): the router's threshold and the online
    # correction of the escalated fraction.
    threshold: float | None = None
    escalation_scale: float = 1.0
    # The accuracy served over a rolling window (:mod:`.cascade_step`): (time of
    # the last update, requests weighed, their mean expected accuracy).
    accuracy_served: tuple[float, float, float] | None = None
    # Bursts (:mod:`.burst`): recent rate history and the panic deadline.
    burst_history: Window = ()
    panic_until: float | None = None
    # The online correction's settling (:func:`.correction.settle`): per placement,
    # its Ready count and since when it has had Ready replicas (None: since before
    # the record).
    ready_since: Mapping[Key, tuple[int, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoded:
    state: AutoscalerState
    # One line per field that was reset (empty when the document was valid).
    problems: tuple[str, ...] = ()

    @property
    def reset(self) -> bool:
        return bool(self.problems)


# ----------------------------------------------------------------------- encode


def _r(x: float, nd: int = 6) -> float:
    return round(float(x), nd)


def encode(state: AutoscalerState) -> dict[str, Any]:
    """The JSON object persisted in ``status.autoscaler`` (current version)."""
    out: dict[str, Any] = {"version": VERSION}
    if state.forecast is not None:
        out["forecast"] = {k: _r(v) for k, v in sorted(state.forecast.items())}
    if state.load_window:
        out["loadWindow"] = [[_r(t, 3), _r(v, 3)] for t, v in state.load_window]
    if state.load is not None:
        out["load"] = _r(state.load, 3)
    if state.forecast_window:
        out["forecastWindow"] = [[_r(t, 3), _r(v, 3)] for t, v in state.forecast_window]
    if state.forecast_load is not None:
        out["forecastLoad"] = _r(state.forecast_load, 3)
    if state.od_window:
        out["odWindow"] = [[_r(t, 3), _r(v, 3)] for t, v in state.od_window]
    if state.od_load is not None:
        out["odLoad"] = _r(state.od_load, 3)
    if state.correction:
        out["correction"] = {k: _r(v, 4) for k, v in sorted(state.correction.items())}
    out["level"] = state.level
    out["recoveringSince"] = state.recovering_since
    out["failures"] = state.failures
    out["target"] = [[v, p, n] for (v, p), n in sorted(state.target.items()) if n > 0]
    out["idleSince"] = state.idle_since
    if state.binding is not None:
        out["binding"] = list(state.binding)
    if state.threshold is not None:
        out["threshold"] = state.threshold
    if state.escalation_scale != 1.0:
        out["escalationScale"] = _r(state.escalation_scale, 4)
    if state.accuracy_served is not None:
        t, n, a = state.accuracy_served
        out["accuracyServed"] = [_r(t, 3), _r(n, 3), _r(a, 6)]
    if state.burst_history:
        out["burstHistory"] = [[_r(t, 3), _r(v, 3)] for t, v in state.burst_history]
    if state.panic_until is not None:
        out["panicUntil"] = _r(state.panic_until, 3)
    if state.ready_since:
        out["readySince"] = [[v, p, n, None if t is None else _r(t, 3)]
                             for (v, p), (n, t) in sorted(state.ready_since.items())]
    return out


# ----------------------------------------------------------------------- decode


class _Bad(ValueError):
    pass


def _num(x: Any, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise _Bad(f"{_show(x)} is not a number")
    f = float(x)
    if not math.isfinite(f) or f < lo or f > hi:
        raise _Bad(f"{_show(x)} is outside [{lo:g}, {hi:g}]")
    return f


def _int(x: Any, lo: int, hi: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise _Bad(f"{_show(x)} is not an integer")
    if x < lo or x > hi:
        raise _Bad(f"{_show(x)} is outside [{lo}, {hi}]")
    return x


def _time(x: Any, now: float) -> float:
    return _num(x, 0.0, now + CLOCK_SKEW_SECONDS)


def _opt_time(x: Any, now: float) -> float | None:
    return None if x is None else _time(x, now)


def _show(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _window(x: Any, now: float) -> Window:
    if not isinstance(x, list):
        raise _Bad(f"{_show(x)} is not a list of [time, rps]")
    if len(x) > MAX_WINDOW:
        raise _Bad(f"{len(x)} entries (at most {MAX_WINDOW})")
    out: list[tuple[float, float]] = []
    for item in x:
        if not isinstance(item, list) or len(item) != 2:
            raise _Bad(f"entry {_show(item)} is not [time, rps]")
        out.append((_time(item[0], now), _num(item[1], 0.0, MAX_LOAD)))
    return tuple(out)


def _forecast(x: Any, now: float) -> dict[str, float]:
    if not isinstance(x, Mapping):
        raise _Bad(f"{_show(x)} is not an object")
    want = {"l", "b", "s", "t", "y"}
    if set(x) != want:
        raise _Bad(f"keys {sorted(map(str, x))} are not {sorted(want)}")
    return {
        "l": _num(x["l"], 0.0, MAX_LOAD),
        "b": _num(x["b"], -MAX_LOAD, MAX_LOAD),
        "s": _num(x["s"], 0.0, MAX_LOAD),
        "t": _time(x["t"], now),
        "y": _num(x["y"], 0.0, MAX_LOAD),
    }


def _correction(x: Any) -> dict[str, float]:
    if not isinstance(x, Mapping):
        raise _Bad(f"{_show(x)} is not an object")
    if len(x) > MAX_WINDOW:
        raise _Bad(f"{len(x)} entries (at most {MAX_WINDOW})")
    out: dict[str, float] = {}
    for k, v in x.items():
        if not isinstance(k, str) or "/" not in k or len(k) > MAX_TEXT:
            raise _Bad(f"key {_show(k)} is not 'variant/pool'")
        out[k] = _num(v, MIN_FACTOR, MAX_FACTOR)
    return out


def _target(x: Any, max_replicas: int) -> dict[Key, int]:
    if not isinstance(x, list):
        raise _Bad(f"{_show(x)} is not a list of [variant, pool, replicas]")
    out: dict[Key, int] = {}
    for item in x:
        if not isinstance(item, list) or len(item) != 3:
            raise _Bad(f"entry {_show(item)} is not [variant, pool, replicas]")
        v, p, n = item
        if not isinstance(v, str) or not isinstance(p, str) or len(v) + len(p) > MAX_TEXT:
            raise _Bad(f"entry {_show(item)} does not name a variant and a pool")
        out[(v, p)] = out.get((v, p), 0) + _int(n, 1, max_replicas)
    if sum(out.values()) > max_replicas:
        raise _Bad(f"{sum(out.values())} replicas exceed maxReplicas ({max_replicas})")
    return out


def _served(x: Any, now: float) -> tuple[float, float, float]:
    if not isinstance(x, list) or len(x) != 3:
        raise _Bad(f"{_show(x)} is not [time, requests, accuracy]")
    return (_time(x[0], now), _num(x[1], 0.0, MAX_SERVED), _num(x[2], 0.0, 1.0))


def _ready_since(x: Any, now: float) -> dict[Key, tuple[int, float | None]]:
    if not isinstance(x, list):
        raise _Bad(f"{_show(x)} is not a list of [variant, pool, ready, since]")
    if len(x) > MAX_WINDOW:
        raise _Bad(f"{len(x)} entries (at most {MAX_WINDOW})")
    out: dict[Key, tuple[int, float | None]] = {}
    for item in x:
        if not isinstance(item, list) or len(item) != 4:
            raise _Bad(f"entry {_show(item)} is not [variant, pool, ready, since]")
        v, p, n, t = item
        if not isinstance(v, str) or not isinstance(p, str) or len(v) + len(p) > MAX_TEXT:
            raise _Bad(f"entry {_show(item)} does not name a variant and a pool")
        out[(v, p)] = (_int(n, 0, MAX_READY), _opt_time(t, now))
    return out


def _binding(x: Any) -> tuple[str, str]:
    if (
        not isinstance(x, list)
        or len(x) != 2
        or not all(isinstance(s, str) and len(s) <= MAX_TEXT for s in x)
    ):
        raise _Bad(f"{_show(x)} is not [signature, text]")
    return (x[0], x[1])


# v1 single-letter key -> v2 key (``c`` and ``v`` have no counterpart).
_V1_KEYS = {
    "f": "forecast", "w": "loadWindow", "L": "load", "wo": "odWindow", "Lo": "odLoad",
    "cf": "correction", "c": "loadCorrection", "lvl": "level", "rec": "recoveringSince",
    "fail": "failures", "p": "target", "idle": "idleSince", "bc": "binding",
    "thr": "threshold", "esc": "escalationScale", "vh": "burstHistory", "pz": "panicUntil",
}


def _migrate_v1(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"version": 2}
    for old, new in _V1_KEYS.items():
        if old in raw:
            out[new] = raw[old]
    return out


def _fold(factors: Mapping[str, float], target: Mapping[Key, int], c: float
          ) -> dict[str, float]:
    """Version 2's load multiplier ``c`` folded into the per-placement factors."""
    out = {k: float(v) for k, v in factors.items()}
    if c == 1.0:
        return out
    for v, p in target:
        out.setdefault(f"{v}/{p}", 1.0)
    return {k: min(MAX_FACTOR, max(MIN_FACTOR, f * c)) for k, f in out.items()}


def decode(raw: Any, *, now: float, max_replicas: int) -> Decoded:
    """Read ``status.autoscaler`` (any version, untrusted); never raises.

    ``now`` bounds the stored times (a time in the future would freeze a
    window or the ladder); ``max_replicas`` bounds the stored target mix.
    """
    if raw is None or (isinstance(raw, Mapping) and not raw):
        return Decoded(AutoscalerState())
    if not isinstance(raw, Mapping):
        return Decoded(AutoscalerState(), (f"status.autoscaler: {_show(raw)} is not an object",))
    version = raw.get("version")
    if version is None:
        v1 = raw.get("v", 1)
        if v1 != 1 or isinstance(v1, bool):
            return Decoded(
                AutoscalerState(), (f"status.autoscaler.v: unknown version {_show(v1)}",)
            )
        doc = _migrate_v1(raw)
    elif version in (2, VERSION) and not isinstance(version, bool):
        doc = dict(raw)
    else:
        return Decoded(
            AutoscalerState(),
            (f"status.autoscaler.version: unknown version {_show(version)} "
             f"(this operator reads 1 to {VERSION})",),
        )
    if not math.isfinite(now):
        now = 0.0
    max_replicas = max(1, int(max_replicas))
    problems: list[str] = []
    values: dict[str, Any] = {}
    parsers: dict[str, tuple[str, Any]] = {
        "forecast": ("forecast", lambda x: _forecast(x, now)),
        "loadWindow": ("load_window", lambda x: _window(x, now)),
        "load": ("load", lambda x: None if x is None else _num(x, 0.0, MAX_LOAD)),
        "forecastWindow": ("forecast_window", lambda x: _window(x, now)),
        "forecastLoad": ("forecast_load", lambda x: None if x is None else _num(x, 0.0, MAX_LOAD)),
        "odWindow": ("od_window", lambda x: _window(x, now)),
        "odLoad": ("od_load", lambda x: None if x is None else _num(x, 0.0, MAX_LOAD)),
        "correction": ("correction", _correction),
        "level": ("level", lambda x: _int(x, 0, LEVELS - 1)),
        "recoveringSince": ("recovering_since", lambda x: _opt_time(x, now)),
        "failures": ("failures", lambda x: _int(x, 0, MAX_FAILURES)),
        "target": ("target", lambda x: _target(x, max_replicas)),
        "idleSince": ("idle_since", lambda x: _opt_time(x, now)),
        "binding": ("binding", lambda x: None if x is None else _binding(x)),
        "threshold": ("threshold", lambda x: None if x is None else _num(x, -1e6, 1e6)),
        "escalationScale": ("escalation_scale", lambda x: _num(x, ESC_MIN, ESC_MAX)),
        "accuracyServed": ("accuracy_served",
                           lambda x: None if x is None else _served(x, now)),
        "burstHistory": ("burst_history", lambda x: _window(x, now)),
        "panicUntil": ("panic_until", lambda x: None if x is None else _num(x, 0.0, 1e12)),
        "readySince": ("ready_since", lambda x: _ready_since(x, now)),
    }
    for key, (attr, parse) in parsers.items():
        if key not in doc:
            continue
        try:
            values[attr] = parse(doc[key])
        except _Bad as e:
            problems.append(f"status.autoscaler.{key}: {e}")
        except (TypeError, ValueError, OverflowError, RecursionError) as e:
            problems.append(f"status.autoscaler.{key}: unreadable ({type(e).__name__})")
    if doc.get("version") == 2 and "loadCorrection" in doc:
        # Version 2 kept a fleet-wide load multiplier beside the factors: fold it in.
        try:
            c = _num(doc["loadCorrection"], 1.0, MAX_LOAD_CORRECTION)
        except _Bad as e:
            problems.append(f"status.autoscaler.loadCorrection: {e}")
        else:
            values["correction"] = _fold(values.get("correction", {}),
                                         values.get("target", {}), c)
    return Decoded(AutoscalerState(**values), tuple(problems))
