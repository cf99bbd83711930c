"""Repository-wide pytest policy.

A skipped or xfailed test is reported as a failure of the run: every marker
(`e2e`, `triton`, `prometheus`) needs real components that `.ci/run` installs,
so a skip would only hide a broken environment. Set TRITONSCALE_ALLOW_SKIPS=1
for a local run on a machine without those components.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The harness package (tests/harness: one free_port, one OperatorProcess) and the
# other support packages import as ``tests.*`` from every suite.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


# hack/test.sh runs the suites side by side (pytest-xdist, ``--dist loadgroup``):
# the e2e and real suites are mostly waiting (decision intervals, pods starting,
# Prometheus scrapes) while the unit suite wants a CPU. A group runs on one worker,
# in order, with its session fixtures started once there: the real suite's Triton
# fleet is one group; the e2e suite is two groups of about equal length, each on
# its own control plane (every e2e test already has its own namespace, pools and
# operator). E2E files not in E2E_GROUP_A form group e2e-b. Unit and artifact tests
# spread. Test modules import under --import-mode=importlib: basenames may repeat
# across suites, and shared code comes from tests.harness, never from a sibling test.
E2E_GROUP_A = {"test_closed_loop.py", "test_faults.py", "test_cluster.py", "test_invalid.py"}


def xdist_group_of(path: Path) -> str | None:
    """The pytest-xdist group of a test file: None to spread its tests."""
    suite = path.parent.name
    if suite == "real":
        return "real"
    if suite == "e2e":
        return "e2e-a" if path.name in E2E_GROUP_A else "e2e-b"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = xdist_group_of(item.path)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("TRITONSCALE_ALLOW_SKIPS") == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", [])) + len(reporter.stats.get("xfailed", []))
    if skipped and session.exitstatus == pytest.ExitCode.OK:
        reporter.write_line(
            f"tritonscale: {skipped} test(s) skipped or xfailed; skips are failures here "
            "(set TRITONSCALE_ALLOW_SKIPS=1 to allow them locally)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
