"""``spec.schedule`` in a policy file: a valid one loads, each mistake is one error at its file, line
and field; the JSON Schema describes it. The schedule starts at line 24 of ``BASE``."""

from __future__ import annotations

from datetime import date

import pytest

from controller.core.policy import json_schema
from tests.core.test_policy_schema import schema_errors
from tests.support.policytext import BASE, load, plain_data, shown, the_error, the_policy

# Lines: schedule 24, timezone 25, windows 26, first window 27, freeze 28, first freeze 29.
VALID = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
    freeze:
      - {from: 2026-12-24, to: 2027-01-02, reason: "holiday freeze"}
"""


def with_schedule(text: str) -> str:
    return BASE + text


def test_a_valid_schedule_loads() -> None:
    policy = the_policy(load(with_schedule(VALID)))
    schedule = policy.spec.schedule
    assert schedule is not None
    assert schedule.timezone == "Europe/Berlin"
    assert schedule.windows is not None
    assert schedule.windows[0].days == ["mon", "tue", "wed", "thu"]
    assert (schedule.windows[0].opens, schedule.windows[0].closes) == ("09:00", "16:00")
    assert schedule.freeze is not None
    assert (schedule.freeze[0].first_day, schedule.freeze[0].last_day) == (
        date(2026, 12, 24),
        date(2027, 1, 2),
    )
    assert schedule.freeze[0].reason == "holiday freeze"


def test_unquoted_times_are_times_not_sexagesimal_numbers() -> None:
    text = with_schedule(VALID.replace('from: "09:00", to: "16:00"', "from: 9:30, to: 16:00"))
    schedule = the_policy(load(text)).spec.schedule
    assert schedule is not None
    assert schedule.windows is not None
    assert (schedule.windows[0].opens, schedule.windows[0].closes) == ("09:30", "16:00")


def test_24_00_ends_a_window_and_a_window_may_cross_midnight() -> None:
    text = with_schedule(VALID.replace('from: "09:00", to: "16:00"', 'from: "22:00", to: "24:00"'))
    the_policy(load(text))
    text = with_schedule(VALID.replace('from: "09:00", to: "16:00"', 'from: "22:00", to: "02:00"'))
    the_policy(load(text))


def test_a_freeze_alone_needs_no_time_zone() -> None:
    the_policy(load(with_schedule("  schedule:\n    freeze:\n      - {from: 2026-12-24, to: 2026-12-24}\n")))


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "message"),
    [
        (
            "timezone: Europe/Berlin",
            "timezone: Europe/Berln",
            25,
            "spec.schedule.timezone",
            "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)",
        ),
        (
            "    timezone: Europe/Berlin\n",
            "",
            25,
            "spec.schedule.windows",
            "windows need a time zone: set spec.schedule.timezone to an IANA name such as Europe/Berlin",
        ),
        (
            'to: "16:00"',
            'to: "09:00"',
            27,
            "spec.schedule.windows[0].to",
            "'to' is the same time as 'from' (09:00): a window needs a length; "
            "a whole day is from: '00:00', to: '24:00'",
        ),
        (
            "[mon, tue, wed, thu]",
            "[mon, tues]",
            27,
            "spec.schedule.windows[0].days[1]",
            "Input should be 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun' (got 'tues')",
        ),
        (
            "[mon, tue, wed, thu]",
            "[]",
            27,
            "spec.schedule.windows[0].days",
            "List should have at least 1 item after validation, not 0",
        ),
        (
            'from: "09:00"',
            'from: "25:00"',
            27,
            "spec.schedule.windows[0].from",
            "'25:00' is not a time of day: hours 00 to 23, minutes 00 to 59 (24:00 only as 'to')",
        ),
        (
            'from: "09:00"',
            'from: "9am"',
            27,
            "spec.schedule.windows[0].from",
            "'9am' is not a time of day: write 24-hour HH:MM, such as '09:00'",
        ),
        (
            'from: "09:00"',
            'from: "24:00"',
            27,
            "spec.schedule.windows[0].from",
            "24:00 ends a day: a window starts at 00:00 to 23:59",
        ),
        (
            "from: 2026-12-24, to: 2027-01-02",
            "from: 2027-01-03, to: 2027-01-02",
            29,
            "spec.schedule.freeze[0].to",
            "the freeze ends (2027-01-02) before it starts (2027-01-03)",
        ),
        (
            '      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}\n',
            "      []\n",
            26,
            "spec.schedule.windows",
            "List should have at least 1 item after validation, not 0",
        ),
    ],
)
def test_each_mistake_is_an_error_at_its_line_and_field(
    old: str, new: str, line: int, field: str, message: str
) -> None:
    text = with_schedule(VALID.replace(old, new, 1))
    assert text != with_schedule(VALID)
    issue = the_error(load(text))
    assert (issue.line, issue.field, issue.message) == (line, field, message), shown(load(text))
    assert str(issue).startswith(f"p.yaml:{line}:")


def test_a_schedule_with_nothing_in_it_is_warned() -> None:
    result = load(with_schedule("  schedule: {}\n"))
    the_policy(result)
    assert [(w.field, w.message) for w in result.warnings] == [
        ("spec.schedule", "the schedule has neither windows nor freeze: it changes nothing")
    ]


def test_the_json_schema_describes_the_schedule() -> None:
    schema = json_schema()
    document = plain_data(with_schedule(VALID))
    assert schema_errors(schema, document, schema) == []
    bad = plain_data(
        with_schedule(VALID.replace("[mon, tue, wed, thu]", "[monday]").replace('"09:00"', '"9am"'))
    )
    assert schema_errors(schema, bad, schema) == [".spec.schedule: no option of anyOf matches"]
    schedule = schema["$defs"]["Schedule"]
    assert schema_errors(schedule, bad["spec"]["schedule"], schema) == [
        ".windows: no option of anyOf matches"
    ]
    window = schema["$defs"]["ChangeWindow"]
    assert schema_errors(window, bad["spec"]["schedule"]["windows"][0], schema) == [
        ".days[0]: 'monday' is not one of ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']",
        ".from: '9am' does not match ^(([01]?[0-9]|2[0-3]):[0-5][0-9]|24:00)$",
    ]
    assert set(window["properties"]) == {"days", "from", "to"}
    assert set(schema["$defs"]["Schedule"]["properties"]) == {"timezone", "windows", "freeze"}
    assert set(schema["$defs"]["Freeze"]["properties"]) == {"from", "to", "reason"}


def test_a_day_given_twice_is_warned() -> None:
    result = load(with_schedule(VALID.replace("[mon, tue, wed, thu]", "[mon, tue, mon, thu, tue]")))
    the_policy(result)
    assert [(w.line, w.field, w.message) for w in result.warnings] == [
        (
            27,
            "spec.schedule.windows[0].days",
            "mon, tue given more than once: a day is in the window or not; was another day meant?",
        )
    ]
