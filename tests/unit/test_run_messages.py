"""What `shardmc run` tells its user at the end: every diagnostic warning, on the console
and in run.log."""

from __future__ import annotations

from shardmc.workflow.runs import _report_warnings, run_log


def test_warnings_reach_the_console_and_the_run_log(tmp_path):
    printed: list[str] = []
    summary = {"warnings": ["shard 2: R-hat > 1.01 for J_rates[0]",
                            "shard 3: 12 divergent transitions"]}
    with run_log(tmp_path / "run.log"):
        _report_warnings(summary, printed.append)
    assert printed[:2] == [f"warning: {w}" for w in summary["warnings"]]
    assert "2 warning(s)" in printed[2] and "report.html" in printed[2]
    log = (tmp_path / "run.log").read_text()
    assert all(w in log for w in summary["warnings"])


def test_a_clean_run_prints_no_warning_line(tmp_path):
    printed: list[str] = []
    _report_warnings({"warnings": []}, printed.append)
    assert printed == []
