"""``tritonscale validate FILE...``: check ScaledModel YAML offline.

Each document is checked twice: against the CRD's OpenAPI schema (what the API
server enforces structurally) and by ``core/spec.py`` (the same cross-field rules
the CRD's CEL expressions enforce at admission, plus the operator's own). Errors
print as ``FILE: field.path: message``; the exit code is 1 if any document fails.
Documents of other kinds are skipped with a note, so a file may also carry e.g. a
Namespace.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

import yaml

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


def validate_stream(name: str, text: str, out: TextIO, quiet: bool = False) -> int:
    """Validate every document in ``text``; print findings; return the error count."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        print(f"{name}: {where}: invalid YAML: {getattr(e, 'problem', e)}", file=out)
        return 1
    errors = 0
    seen = 0
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        seen += 1
        if not _is_scaledmodel(doc):
            if not quiet:
                kind = doc.get("kind", "?")
                meta = doc.get("metadata") or {}
                print(f"{name}: skipped {kind}/{meta.get('name', '?')} (not a ScaledModel)",
                      file=out)
            continue
        problems = validate_document(doc)
        label = name if len(docs) == 1 else f"{name}[{i}]"
        for p in problems:
            print(f"{label}: {p.path}: {p.message}", file=out)
        errors += len(problems)
        if not problems and not quiet:
            _, obj_name, spec = parse_manifest(doc)
            ns = (doc.get("metadata") or {}).get("namespace", "default")
            print(
                f"{label}: OK ScaledModel {ns}/{obj_name} "
                f"({len(spec.variants)} variants, {len(spec.node_pools)} node pools)",
                file=out,
            )
    if seen == 0:
        print(f"{name}: no documents", file=out)
        return 1
    return errors


def run(args: argparse.Namespace) -> int:
    failures = 0
    for f in args.files:
        try:
            text = sys.stdin.read() if f == "-" else Path(f).read_text(encoding="utf-8")
        except OSError as e:
            print(f"{f}: cannot read: {e.strerror or e}", file=sys.stdout)
            failures += 1
            continue
        failures += validate_stream(f, text, sys.stdout, quiet=args.quiet)
    return 1 if failures else 0
