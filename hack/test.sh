#!/usr/bin/env bash
# README's test command: set up everything (hack/setup.sh), then lint, type-check,
# check the layering, and run every test. No test may be skipped (tests/conftest.py
# turns skips into failures) and "no tests collected" fails (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export PYTHONPATH="$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"

echo "== ruff"
ruff check operator tests benchmarks hack
echo "== mypy"
mypy
echo "== import-linter"
lint-imports pyproject.toml
echo "== pytest"
exec python -m pytest "$@"
