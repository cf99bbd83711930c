#!/usr/bin/env bash
# README's test command: set up everything (hack/setup.sh), then lint, type-check,
# check the layering and, at the same time, run every test. No test may be skipped (tests/conftest.py
# turns skips into failures) and "no tests collected" fails (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
export PYTHONPATH="$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"

# The static checks run beside pytest (mypy alone needs about a minute on a clean
# clone, pytest mostly waits); their output follows pytest's, and either failing
# fails the run.
checks_log=$(mktemp)
(
  rc=0
  echo "== ruff"; ruff check operator tests benchmarks hack || rc=1
  echo "== mypy"; mypy || rc=1
  echo "== import-linter"; lint-imports pyproject.toml || rc=1
  exit "$rc"
) >"$checks_log" 2>&1 &
checks=$!

echo "== pytest"
# Four workers (pytest-xdist): the e2e and real suites mostly wait (decision
# intervals, pods starting, scrapes), so they run beside each other and the unit
# suite; tests/conftest.py says which tests share a worker.
# TRITONSCALE_TEST_WORKERS=0 runs everything in this one process.
pytest_rc=0
python -m pytest -n "${TRITONSCALE_TEST_WORKERS:-4}" --dist loadgroup "$@" || pytest_rc=$?
checks_rc=0
wait "$checks" || checks_rc=$?
cat "$checks_log"
rm -f "$checks_log"
if [ "$checks_rc" -ne 0 ]; then
  echo "== static checks FAILED (ruff, mypy or import-linter; see above)"
fi
if [ "$pytest_rc" -ne 0 ]; then
  exit "$pytest_rc"
fi
exit "$checks_rc"
