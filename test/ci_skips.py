"""In CI (``CI`` set), a test that would skip fails instead, unless its skip is one of
the few that CI accepts, listed here and nowhere else.

A missing dependency (``pytest.importorskip``), fixture or build skips a test on a
developer's machine, which is convenient there; in CI the same skip would leave a
broken install green. So this plugin (loaded by ``conftest.py``) turns every skip
into a failure that names the reason, and prints the accepted skips in the summary.
"""

from __future__ import annotations

import os
import re

import pytest

#: the skips CI accepts: a pattern matched against the skip reason, and why it is fine
ALLOWED_IN_CI: dict[str, str] = {
    r"run by scripts/check_colcon\.sh": "runs in CI's colcon step, against the colcon install space",
    r"TensorRT is installed here": "a TensorRT machine runs the TensorRT tests instead of this refusal check",
    r"this machine has CUDA": "a CUDA machine runs the GPU check instead of this refusal check",
}

_accepted: list[tuple[str, str]] = []


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def allowed(reason: str) -> str | None:
    """Why CI accepts a skip with this reason, or None."""
    return next((why for pattern, why in ALLOWED_IN_CI.items() if re.search(pattern, reason)), None)


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _police(report) -> None:
    if not (in_ci() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    if allowed(reason):
        _accepted.append((report.nodeid, reason))
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI: {reason}\n(CI=true turns skips into failures; the accepted ones are "
                       f"listed in test/ci_skips.py)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _police(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield  # a module-level importorskip / skip(allow_module_level=True)
    _police(outcome.get_result())


def pytest_terminal_summary(terminalreporter):
    if in_ci() and _accepted:
        terminalreporter.write_sep("-", "skips CI accepts (test/ci_skips.py)")
        for nodeid, reason in _accepted:
            terminalreporter.write_line(f"{nodeid}: {reason}")
