"""``tritonscale validate FILE...``: check ScaledModel YAML offline.

Each document is checked twice: against the CRD's OpenAPI schema (what the API
server enforces structurally) and by ``core/spec.py`` (the same cross-field rules
the CRD's CEL expressions enforce at admission, plus the operator's own). Errors
print as ``FILE: field.path: message``. Exit codes: 0 all valid, 1 a ScaledModel
has problems (one line each), 2 a file could not be read as YAML at all (one line
naming the file and why: missing, binary, not UTF-8, too large, invalid or hostile
YAML; see :mod:`tritonscale.commands.inputs` for the bounds). Documents of other
kinds are skipped with a note, so a file may also carry e.g. a Namespace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tritonscale.commands.inputs import (
    EXIT_BAD_INPUT,
    MAX_SPEC_BYTES,
    InputError,
    clip,
    load_yaml_documents,
    read_text,
)
from tritonscale.core.spec import FieldError, SpecError, parse_manifest

HELP = "check ScaledModel YAML files offline against the CRD schema and core rules"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML files ('-' for stdin)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def _merge(schema: Iterable[FieldError], core: Iterable[FieldError]) -> list[FieldError]:
    """Schema errors first; a core error on a path the schema already flagged is noise."""
    out = list(schema)
    seen = {e.path for e in out}
    out.extend(e for e in core if e.path not in seen)
    return out


def validate_document(doc: Any) -> list[FieldError]:
    """Every problem in one ScaledModel document (empty list: valid)."""
    from tritonscale import crd  # jsonschema is only needed here

    schema_errs = crd.schema_errors(doc)
    try:
        parse_manifest(doc)
        core_errs: list[FieldError] = []
    except SpecError as e:
        core_errs = list(e.errors)
    return _merge(schema_errs, core_errs)


def _is_scaledmodel(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return True  # report it: a bare scalar or list is not a Kubernetes object
    api = str(doc.get("apiVersion", ""))
    return doc.get("kind") == "ScaledModel" or api.startswith("tritonscale.io/")


def _meta(doc: dict[str, Any]) -> dict[str, Any]:
    meta = doc.get("metadata")
    return meta if isinstance(meta, dict) else {}


def validate_stream(name: str, text: str, out: TextIO, quiet: bool = False) -> int:
    """Validate every document in ``text``; print findings; return the error count.

    Raises :class:`InputError` when ``text`` is not (bounded, valid) YAML."""
    docs = load_yaml_documents(text, name)
    errors = 0
    seen = 0
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        seen += 1
        if not _is_scaledmodel(doc):
            if not quiet:
                kind = clip(str(doc.get("kind", "?")), 60)
                obj = clip(str(_meta(doc).get("name", "?")), 60)
                print(clip(f"{name}: skipped {kind}/{obj} (not a ScaledModel)"), file=out)
            continue
        problems = validate_document(doc)
        label = name if len(docs) == 1 else f"{name}[{i}]"
        for p in problems:
            print(clip(f"{label}: {p.path}: {p.message}"), file=out)
        errors += len(problems)
        if not problems and not quiet:
            ns, obj_name, spec = parse_manifest(doc)
            print(
                f"{label}: OK ScaledModel {ns}/{obj_name} "
                f"({len(spec.variants)} variants, {len(spec.node_pools)} node pools)",
                file=out,
            )
    if seen == 0:
        raise InputError(f"{name}: no YAML documents")
    return errors


def run(args: argparse.Namespace) -> int:
    failures = 0
    unreadable = 0
    for f in args.files:
        try:
            text = read_text(f, max_bytes=MAX_SPEC_BYTES, stdin=sys.stdin)
            name = "<stdin>" if f == "-" else f
            failures += validate_stream(name, text, sys.stdout, quiet=args.quiet)
        except InputError as e:
            print(clip(str(e)), file=sys.stdout)
            unreadable += 1
    if unreadable:
        return EXIT_BAD_INPUT
    return 1 if failures else 0
