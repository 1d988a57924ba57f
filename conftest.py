"""Suite-wide checks for the core's tests and every plugin's (pytest applies a conftest to its folder only)."""
from __future__ import annotations

import pytest

from tests.helpers import CAPTURED, SECRET

_leaks: list = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Look for the test password in everything pytest captured from each test (logs, stdout, stderr)."""
    for name, content in report.sections:
        if SECRET in content:
            _leaks.append(f"{report.nodeid} ({name})")
    while CAPTURED:
        if SECRET in CAPTURED.pop():
            _leaks.append(f"{report.nodeid} (subprocess output or file read back)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any output of the whole suite showed the test password."""
    if _leaks:
        session.exitstatus = 1
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"SECRET LEAKED: the test password appeared in the output of {len(_leaks)} "
                                f"place(s):", red=True)
            for where in sorted(set(_leaks)):
                reporter.write_line(f"  {where}", red=True)
