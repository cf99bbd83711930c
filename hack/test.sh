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
# Two workers (pytest-xdist): the e2e and real suites mostly wait, so they run
# beside each other and the unit suite; tests/conftest.py says which tests share a
# worker. TRITONSCALE_TEST_WORKERS=0 runs everything in this one process.
exec python -m pytest -n "${TRITONSCALE_TEST_WORKERS:-2}" --dist loadgroup "$@"
