"""What ``flagroll demo`` prints from decision records: the statistical guardrail's estimate and
confidence bound beneath each cycle, and which guardrail tripped first and why."""

from __future__ import annotations

import re

from controller.demo import report
from tests.demo.records import fixed, not_judged, record, statistical


def lower_bound(line: str) -> float:
    found = re.search(r"excess ≥ ([+-]\d+\.\d+) pt", line)
    assert found, line
    return float(found.group(1))


def test_beneath_each_cycle_the_comparison_shows_both_estimates_and_the_lower_bound() -> None:
    cycle = record("hold", [fixed("error-rate", 0.021, 0.2), statistical(21, 1000, 10, 1000)])
    [line] = report.comparison_lines(cycle)
    assert "errors-vs-control: treatment 2.1 % vs control 1.0 % (n 1000/1000 since exposure)" in line
    assert line.endswith("(bound 0)")
    assert lower_bound(line) < 0  # a difference this size at 1000 requests is within chance
    # The cycle's own line keeps the fixed guardrails and leaves the comparison to the line beneath.
    main = report.cycle_line(cycle, "+ 20.0s")
    assert "error-rate 0.021 ≤ 0.2" in main
    assert "errors-vs-control" not in main
    assert "(n treatment/control 600/610)" in main


def test_the_bound_tightens_as_requests_accumulate_until_it_trips() -> None:
    looks = [statistical(4 * n / 100, n, n / 100, n) for n in (100, 400, 1000, 2500)]  # 4 % vs 1 %
    lines = [report.comparison(check) for check in looks]
    bounds = [lower_bound(line) for line in lines]
    assert bounds == sorted(bounds), lines
    assert bounds[0] < 0 < bounds[-1], lines
    assert lines[0].endswith("(bound 0)")
    assert lines[-1].endswith("(above 0)")


def test_a_bound_from_a_handful_of_requests_is_shown_no_lower_than_the_excess_can_be() -> None:
    check = statistical(5, 86, 4, 85, inflation=8.0)
    assert check["sequential"]["excess_lower"] < -1  # the normal approximation at 86 requests
    assert lower_bound(report.comparison(check)) == -100.0


def test_a_comparison_not_yet_judged_says_why() -> None:
    settling = not_judged("needs 2 degrees of freedom to measure the dispersion", settling=True)
    assert report.comparison(settling) == (
        "errors-vs-control: treatment 10.0 % vs control 5.0 % (n 30/32): not judged yet: "
        "measuring how much the counts vary"
    )
    few = not_judged("treatment has 30 of 40 samples (10 missing)")
    assert report.comparison(few).endswith("not judged yet: treatment has 30 of 40 samples (10 missing)")


def test_a_comparison_without_any_count_says_so_briefly() -> None:
    empty = not_judged("treatment errors: empty result: no series matched; control errors: empty result")
    empty["value"] = None
    empty["control"]["value"] = None
    assert report.comparison(empty) == "errors-vs-control: not judged yet: no requests counted yet"


def test_a_long_line_of_a_record_is_cut_short() -> None:
    text = report.long_lines("short\n" + "q" * 500, width=100)
    assert text.splitlines()[0] == "short"
    assert text.splitlines()[1] == "q" * 60 + " … (in full: flagroll log)"


def test_points_are_signed_and_keep_small_differences_visible() -> None:
    assert report.points(0.004) == "+0.4 pt"
    assert report.points(-0.012) == "-1.2 pt"
    assert report.points(0.0003) == "+0.03 pt"
    assert report.percent(0.021) == "2.1 %"


def test_the_summary_says_the_statistical_guardrail_tripped_first_and_why() -> None:
    rollback = record("rollback", [statistical(125, 2500, 25, 2500), fixed("error-rate", 0.05, 0.2)])
    lines = report.tripped(rollback, 10)
    assert lines[0] == "tripped first: errors-vs-control"
    assert "5.0 % of the treatment's 2500 requests failed against 1.0 % of the control's 2500" in lines[1]
    assert "with 99 % confidence the treatment fails at least" in lines[1]
    assert "more than chance explains" in lines[1]
    assert lines[2] == (
        "  not tripped: error-rate treatment 0.05 ≤ 0.2 (max; n=600/600) over the last 10s, a fixed bound"
    )


def test_the_summary_says_when_a_fixed_guardrail_tripped_first() -> None:
    rollback = record("rollback", [statistical(9, 600, 6, 600), fixed("error-rate", 0.25, 0.2)])
    lines = report.tripped(rollback, 10)
    assert lines[0] == "tripped first: error-rate"
    assert lines[1] == (
        "  error-rate treatment 0.25 > 0.2 (max; n=600/600) over the last 10s, a fixed bound: "
        "the treatment breached it"
    )
    assert lines[2].startswith("  not tripped: errors-vs-control: treatment 1.5 % vs control 1.0 %")


def test_guardrails_that_trip_in_the_same_cycle_are_named_together() -> None:
    rollback = record("rollback", [statistical(125, 2500, 25, 2500), fixed("error-rate", 0.25, 0.2)])
    lines = report.tripped(rollback, 10)
    assert lines[0] == "tripped first: errors-vs-control and error-rate (in the same cycle)"
    assert len([line for line in lines if line.startswith("  not tripped")]) == 0


def test_a_rollout_that_was_not_rolled_back_says_how_the_comparison_last_stood() -> None:
    looks = [
        record("hold", [not_judged("nobody is exposed yet")]),
        record("hold", [statistical(12, 1000, 10, 1000)]),
        record("complete", [statistical(25, 2500, 27, 2500)]),
    ]
    lines = report.calm(looks)
    assert lines[0] == "no guardrail tripped; against the control arm at the last look:"
    assert lines[1].startswith(
        "  errors-vs-control: treatment 1.0 % vs control 1.1 % (n 2500/2500 since exposure)"
    )
    assert lines[1].endswith("no more than chance explains, so nothing was rolled back on noise")
    assert report.calm([looks[0]]) == ["no guardrail tripped"]
