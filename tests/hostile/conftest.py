"""The hostile-input suite prints how many inputs ended each way, whatever the verdict."""

from __future__ import annotations

import pytest

from tests.support.hostile import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("hostile input: outcomes")
        for line in SUMMARY:
            terminalreporter.write_line(line)
