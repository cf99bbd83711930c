"""What the Kubernetes API server accepts in the pod fields a ScaledModel fills (pure).

A ScaledModel's author writes tolerations, node selectors, environment variables,
resource quantities and tritonserver arguments that the operator copies into the
Deployments it renders. If any of them is something the API server refuses, every
apply fails with a 422, forever. These checks refuse them up front, in
``core/spec.py`` (so ``tritonscale validate`` and the operator) and, with the same
regular expressions, in the CRD's ``pattern`` and CEL rules (tests keep the two
equal: ``tests/unit/test_crd_agreement.py``).

The rules follow ``k8s.io/apimachinery/pkg/util/validation`` (qualified names, label
values, DNS labels, environment variable names) and
``k8s.io/apimachinery/pkg/api/resource`` (quantities). Each checker returns a list of
messages; empty means valid.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# The regular expressions below are shared with the CRD (pattern and CEL matches());
# they avoid backslashes ([.] not \.) so they read the same in YAML and CEL strings.

# -- names -----------------------------------------------------------------------

# RFC 1123 label (what Kubernetes calls a DNS label); <= 63 characters.
DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# RFC 1035 label: the Service name rule (starts with a letter).
DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = rf"{DNS1123_LABEL}([.]{DNS1123_LABEL})*"
# Name part of a qualified name (label keys, taint keys), <= 63 characters.
QUALIFIED_NAME_PART = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
# A qualified name: optional DNS subdomain prefix (<= 253, checked apart) and "/".
QUALIFIED_NAME = rf"^({DNS1123_SUBDOMAIN}/)?{QUALIFIED_NAME_PART}$"
# Prefix length rule of a qualified name (no look-ahead in RE2, so a second regex).
QUALIFIED_PREFIX = r"^[^/]{0,253}/"
# Label value: empty, or <= 63 characters of this shape.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Environment variable names as the API server checks them (IsEnvVarName, strict
# mode): [-._a-zA-Z][-._a-zA-Z0-9]*, and not ".", ".." or starting with "..".
ENV_VAR_NAME = r"^([-_a-zA-Z][-._a-zA-Z0-9]*|[.][-_a-zA-Z0-9][-._a-zA-Z0-9]*)$"
# Variant and node pool names: DNS labels without "--" (the Deployment name
# separator, see core/render.py deployment_name).
PART_NAME = r"^[a-z0-9]+(-[a-z0-9]+)*$"
# The ScaledModel's own name becomes the Service name: an RFC 1035 label.
OBJECT_NAME = rf"^{DNS1035_LABEL}$"
# A Prometheus label name the queries may use ("__" names are Prometheus-internal).
PROM_LABEL_NAME = r"^([a-zA-Z][a-zA-Z0-9_]*|_[a-zA-Z0-9][a-zA-Z0-9_]*)$"

# resource.Quantity, non-negative: a decimal number, then a binary-SI suffix
# (Ki..Ei), a decimal-SI suffix (n u m k M G T P E) or an integer exponent (e3).
QUANTITY = (
    r"^[+]?(([0-9]+([.][0-9]*)?)|([.][0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?[0-9]{1,3}))?$"
)
QUANTITY_MAX_LENGTH = 64



def re2(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` so Python matches what Go's RE2 (CEL ``matches``, OpenAPI
    ``pattern``) matches: ``$`` is the end of the text, not also before a final newline.
    Use ``.search``, like both of them."""
    return re.compile(pattern.replace("$", r"\Z"))


_QUALIFIED = re2(QUALIFIED_NAME)
_QUALIFIED_PREFIX = re2(QUALIFIED_PREFIX)
_LABEL_VALUE = re2(LABEL_VALUE)
_ENV_VAR = re2(ENV_VAR_NAME)
_QUANTITY = re2(QUANTITY)

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def qualified_name_errors(value: str) -> list[str]:
    """Label keys, node selector keys, taint/toleration keys (IsQualifiedName)."""
    if not _QUALIFIED.search(value):
        return [
            "must be a qualified name: an optional DNS subdomain prefix and '/', then "
            "at most 63 characters of [A-Za-z0-9-_.] starting and ending alphanumeric"
        ]
    if "/" in value and not _QUALIFIED_PREFIX.search(value):
        return ["the prefix before '/' must be at most 253 characters"]
    return []


def label_value_errors(value: str) -> list[str]:
    if len(value) > 63 or not _LABEL_VALUE.search(value):
        return [
            "must be a label value: empty, or at most 63 characters of [A-Za-z0-9-_.] "
            "starting and ending alphanumeric"
        ]
    return []


def env_var_name_errors(value: str) -> list[str]:
    if not _ENV_VAR.search(value):
        return [
            "must be an environment variable name: [-._a-zA-Z][-._a-zA-Z0-9]*, not "
            "'.' or '..' and not starting with '..'"
        ]
    return []


def parse_quantity(value: str | int) -> Decimal:
    """A non-negative Kubernetes quantity as a Decimal; ValueError if it is not one."""
    if isinstance(value, bool):
        raise ValueError("must be a quantity such as 500m, 2, 4Gi")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        if value >= 2**63:
            raise ValueError("integer quantities must fit 64 bits; write e.g. 8Ei")
        return Decimal(value)
    if len(value) > QUANTITY_MAX_LENGTH or not _QUANTITY.search(value):
        raise ValueError("must be a quantity such as 500m, 2, 4Gi (not negative)")
    m = re.fullmatch(r"\+?([0-9.]+)(.*)", value)
    assert m is not None  # guaranteed by _QUANTITY
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as e:  # pragma: no cover - excluded by _QUANTITY
        raise ValueError("must be a quantity such as 500m, 2, 4Gi") from e
    suffix = m.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))  # e/E exponent


# Container resources a ScaledModel may request; GPUs come from the node pool.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


# -- tritonserver flags the operator owns ---------------------------------------------

# The operator sets these (ports its probes, Service and metrics scraping rely on,
# the model it loads, how long shutdown takes); ScaledModel args must not touch them.
OPERATOR_FLAGS: tuple[str, ...] = (
    "allow-grpc",
    "allow-http",
    "allow-metrics",
    "exit-timeout-secs",
    "grpc-address",
    "grpc-port",
    "http-address",
    "http-port",
    "load-model",
    "metrics-address",
    "metrics-port",
    "model-config-name",
    "model-control-mode",
    "model-repository",
    "model-store",
)


_Trie = dict[str, "_Trie"]


def _prefix_regex(words: tuple[str, ...]) -> str:
    """Regex matching every non-empty prefix of any of ``words`` (a trie, no look-around)."""
    assert all(re.fullmatch(r"[a-z][-a-z]*", w) for w in words)  # no regex metacharacters
    trie: _Trie = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})

    def emit(node: _Trie) -> str:
        alts = []
        for ch, sub in sorted(node.items()):
            inner = emit(sub)
            alts.append(f"{ch}({inner})?" if inner else ch)
        if len(alts) <= 1:
            return "".join(alts)
        return "(" + "|".join(alts) + ")"

    return emit(trie)


# tritonserver parses options with getopt_long, which accepts any unambiguous prefix
# of a long option (--http-p=9000 is --http-port): refuse every prefix too.
OPERATOR_FLAG_ARG = rf"^--{_prefix_regex(OPERATOR_FLAGS)}(=|$)"
_OPERATOR_FLAG_ARG = re2(OPERATOR_FLAG_ARG)
# The last of model.args must not be a bare "--flag": it would take the operator's
# first flag (rendered right after) as its value.
DANGLING_FLAG = r"^--[^=]*$"
_DANGLING_FLAG = re2(DANGLING_FLAG)


def dangling_flag(arg: str) -> bool:
    return _DANGLING_FLAG.search(arg) is not None


def arg_errors(arg: str) -> list[str]:
    if _OPERATOR_FLAG_ARG.search(arg):
        return [
            f"must not set the operator's own tritonserver flags "
            f"(--{', --'.join(OPERATOR_FLAGS)}, or an abbreviation of one); got {arg[:80]!r}"
        ]
    return []
