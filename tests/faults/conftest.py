"""The fault-injection suite (marker `faults`, not in the default run; `./dev test` runs it).

DB_TOOL_FAULT_ROUNDS (default 3) rounds per command, within DB_TOOL_FAULT_SECONDS (default 20
unless DB_TOOL_FAULT_ROUNDS is set; 0: no limit) seconds per command; DB_TOOL_FAULT_SEED replays
a run. The tally (rounds, faults, survived per command) is printed at the end of the session."""

from __future__ import annotations

import pytest

from tests.faults import harness


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.TALLY:
        return
    tr = terminalreporter
    tr.section("fault injection tally")
    tr.write_line(f"seed {harness.seed()} (replay: DB_TOOL_FAULT_SEED={harness.seed()} "
                  f"DB_TOOL_FAULT_ROUNDS=<rounds>), as uid {__import__('os').geteuid()}")
    tr.write_line(f"{'command':<14} {'rounds':>6} {'faults':>6} {'survived':>8} {'seconds':>8}")
    total = harness.Tally()
    for name, t in harness.TALLY.items():
        tr.write_line(f"{name:<14} {t.rounds:>6} {t.faults:>6} {t.survived:>8} "
                      f"{t.seconds:>8.1f}")
        total.rounds += t.rounds
        total.faults += t.faults
        total.survived += t.survived
        total.seconds += t.seconds
    tr.write_line(f"{'total':<14} {total.rounds:>6} {total.faults:>6} {total.survived:>8} "
                  f"{total.seconds:>8.1f}")
