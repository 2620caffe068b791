"""Red-team of ``spec.schedule`` at the core: sequences of decisions, human commands and policy edits
over time against the promises of docs/policy-reference.md ("Change windows and freezes"), and the
texts and validation those promises rest on.

``T0`` (2026-11-21 12:00 UTC) is a Saturday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.adapters.policyfile import load_text
from controller.core.backtest import evaluation_times, replay
from controller.core.changewindows import is_open, waiting, zone_problem, zone_warning
from controller.core.commands import pause, resume, stop
from controller.core.decision import Decision, decide, queries_for, rebase
from controller.core.explain import explain
from controller.core.policy import Policy, Schedule
from controller.core.policyrules import semantic_issues
from controller.core.queries import Arm
from controller.core.state import ACTIVE, Action, RolloutState, Status
from tests.core.test_decision import CHECKPOINT, POLICY, T0, policy, readings

OFFICE = """\
  schedule:
    timezone: Europe/Berlin
    windows:
      - {days: [mon, tue, wed, thu], from: "09:00", to: "16:00"}
"""
NIGHTS = """\
  schedule:
    timezone: Asia/Kolkata
    windows:
      - {days: [fri, sat], from: "22:00", to: "02:00"}
      - {days: [sun], from: "23:30", to: "24:00"}
"""
FROZEN = """\
  schedule:
    timezone: America/New_York
    windows:
      - {days: [mon, tue, wed, thu, fri], from: "01:30", to: "03:00"}
    freeze:
      - {from: 2026-11-25, to: 2026-12-02, reason: "thanksgiving"}
      - {from: 2026-12-20, to: 2027-01-03, reason: "year end"}
"""
UTC_FREEZE = """\
  schedule:
    freeze:
      - {from: 2026-11-21, to: 2026-11-29}
"""
SCHEDULES = ("", OFFICE, NIGHTS, FROZEN, UTC_FREEZE)
FAILING = {("error-rate", Arm.TREATMENT): 0.5}


def _checkpoint(on_pass: str) -> str:
    return CHECKPOINT.replace("{on_pass}", on_pass).replace("{on_fail}", "rollback")


def _policy(schedule: str, checkpoint: str, steps: str) -> Policy:
    """The decision tables' policy with a schedule, a checkpoint ("" for none) and its steps
    ("short": a new revision, with other holds and percentages)."""
    text = POLICY.replace("{extra}", (_checkpoint(checkpoint) if checkpoint else "") + schedule)
    if steps == "short":
        text = text.replace(
            "    - {percent: 1, hold: 5m}\n    - {percent: 5, hold: 10m}\n    - {percent: 10, hold: 30m}\n",
            "    - {percent: 2, hold: 1h}\n    - {percent: 8, hold: 3h}\n",
        )
    loaded = load_text(text, "cache.yaml")
    assert not loaded.errors, loaded.errors
    return loaded.policies[0].policy


# --- sequences ----------------------------------------------------------------------------------------


class RolloutOverTime(RuleBasedStateMachine):
    """A rollout driven through ``decide`` at an injected clock, with the schedule edited, the steps
    revised, human commands and failing guardrails in between.

    - Exposure rises only through ``decide`` at an instant at which the schedule is open (resume,
      pause, stop and policy edits never raise it).
    - A wait never writes, says its reason, and is recorded only while the move is otherwise due.
    - A rollback is never held by the schedule.
    - A due move is taken at the first evaluation at which the schedule is open (the hold kept
      counting while it waited).
    """

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.schedule = OFFICE
        self.checkpoint = ""
        self.steps = "plain"
        self.policy = _policy(self.schedule, self.checkpoint, self.steps)
        self.stored: RolloutState | None = None
        self.last: Decision | None = None
        self.decided_by = self.policy

    def _decide(self, failing: bool) -> Decision:
        state = rebase(self.policy, self.stored, self.now).state
        queries = queries_for(self.policy, state, self.now)
        decision = decide(
            self.policy, self.stored, queries, readings(queries, FAILING if failing else None), self.now
        )
        before = self.stored.percent if self.stored is not None else 0.0
        opened = is_open(self.policy.spec.schedule, self.now)
        if decision.after.percent > before:
            assert opened, (decision.action, decision.reason)
        if decision.waiting is not None:
            assert decision.action is Action.HOLD
            assert not opened
            assert decision.after.percent == before
            assert decision.reason.startswith(decision.waiting.why)
            assert "; due: " in decision.reason
        if failing and before > 0 and state.status in ACTIVE:
            assert decision.action is Action.ROLLBACK
        if not failing and opened and state.status is Status.PROGRESSING and decision.action is Action.HOLD:
            # a hold while open is never a wait: it is for its own reason
            assert decision.waiting is None
        self.last = decision
        self.decided_by = self.policy
        self.stored = decision.after
        return decision

    @rule(minutes=st.integers(1, 3 * 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule()
    def evaluate(self) -> None:
        self._decide(failing=False)

    @rule()
    def evaluate_failing(self) -> None:
        self._decide(failing=True)

    @rule(schedule=st.sampled_from(SCHEDULES))
    def edit_the_schedule(self, schedule: str) -> None:
        before = self.policy
        self.schedule = schedule
        self.policy = _policy(self.schedule, self.checkpoint, self.steps)
        assert self.policy.revision == before.revision  # administrative: not a new revision
        if self.stored is not None:  # restarts nothing
            assert rebase(self.policy, self.stored, self.now) == rebase(before, self.stored, self.now)

    @rule(checkpoint=st.sampled_from(("", "complete", "promote")), steps=st.sampled_from(("plain", "short")))
    def revise(self, checkpoint: str, steps: str) -> None:
        self.checkpoint, self.steps = checkpoint, steps
        self.policy = _policy(self.schedule, self.checkpoint, self.steps)
        if self.stored is not None:
            rebased = rebase(self.policy, self.stored, self.now).state
            assert rebased.percent <= self.stored.percent  # an edit never raises exposure

    @precondition(lambda self: self.stored is not None and self.stored.status is Status.PROGRESSING)
    @rule()
    def pause_it(self) -> None:
        assert self.stored is not None
        decision = pause(self.stored, "look", self.now)
        assert decision.after.percent == self.stored.percent
        self.stored = decision.after

    @precondition(
        lambda self: (
            self.stored is not None
            and self.stored.status in {Status.PAUSED, Status.STOPPED, Status.ROLLED_BACK}
        )
    )
    @rule()
    def resume_it(self) -> None:
        assert self.stored is not None
        decision = resume(self.stored, "", self.now)
        assert decision.after.percent <= self.stored.percent  # resume never bypasses the window
        self.stored = decision.after

    @precondition(lambda self: self.stored is not None and self.stored.status is not Status.STOPPED)
    @rule()
    def stop_it(self) -> None:
        assert self.stored is not None
        self.stored = stop(self.stored, "incident", self.now).after
        assert self.stored.percent == 0

    @invariant()
    def a_wait_ends_with_the_move_at_the_opening_it_names(self) -> None:
        """The hold kept counting while it waited: decided at the opening the wait names, with
        nothing changed since, the move is taken."""
        last = self.last
        if last is None or last.waiting is None or last.waiting.opens_at is None:
            return
        if self.stored != last.after or self.policy != self.decided_by:
            return
        opening = last.waiting.opens_at
        moved = _run(self.policy, self.stored, opening)
        assert moved.action in {Action.ADVANCE, Action.PROMOTE}, moved.reason


TestRolloutOverTime = RolloutOverTime.TestCase
TestRolloutOverTime.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_promotion_waiting_over_a_freeze_spanning_the_new_year_moves_on_the_first_open_day() -> None:
    p = _policy(FROZEN, "promote", "plain")
    last = at_last_step(p, started=datetime(2026, 12, 19, 12, tzinfo=UTC))
    now = datetime(2026, 12, 31, 12, tzinfo=UTC)
    decision = _run(p, last, now)
    assert decision.action is Action.HOLD
    assert decision.waiting is not None
    assert decision.waiting.reason == "freeze"
    # Mon 2027-01-04 01:30 New York (the 3rd is a Sunday and the last frozen date)
    assert decision.waiting.opens_at == datetime(2027, 1, 4, 6, 30, tzinfo=UTC)
    assert _run(p, last, decision.waiting.opens_at).action is Action.PROMOTE


def at_last_step(p: Policy, *, started: datetime) -> RolloutState:
    last = len(p.spec.steps) - 1
    state = rebase(p, None, T0).state
    return state.moved(step=last, percent=p.step_percent(last), step_started_at=started)


def _run(p: Policy, stored: RolloutState | None, now: datetime) -> Decision:
    state = rebase(p, stored, now).state
    queries = queries_for(p, state, now)
    return decide(p, stored, queries, readings(queries), now)


def test_a_rolled_back_rollout_revised_inside_a_freeze_restarts_only_when_it_ends() -> None:
    p = _policy(UTC_FREEZE, "", "plain")
    rolled = rebase(p, None, T0).state.moved(status=Status.ROLLED_BACK, step_started_at=T0)
    revised = _policy(UTC_FREEZE, "", "short")
    back = rebase(revised, rolled, T0)
    assert back.state.status is Status.PROGRESSING
    assert back.state.percent == 0
    decision = _run(revised, back.state, T0 + timedelta(days=1))
    assert decision.action is Action.HOLD
    assert decision.waiting is not None
    assert decision.waiting.opens_at == datetime(2026, 11, 30, tzinfo=UTC)
    assert _run(revised, back.state, datetime(2026, 11, 30, tzinfo=UTC)).action is Action.ADVANCE


# --- what a wait says ----------------------------------------------------------------------------------

BERLIN_OFFICE = Schedule.model_validate(
    {"timezone": "Europe/Berlin", "windows": [{"days": ["mon"], "from": "09:00", "to": "16:00"}]}
)
MONDAY_0900 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def test_a_window_less_than_a_minute_away_is_not_said_to_have_opened() -> None:
    now = MONDAY_0900 - timedelta(seconds=20)
    waits = waiting(BERLIN_OFFICE, now)
    assert waits is not None  # still closed
    assert waits.until(now) == "wait for the window Mon 09:00 Europe/Berlin (08:00 UTC), in 1m"
    assert "opened" not in waits.describe(now)


def test_an_opening_retold_after_it_passed_says_no_decision_followed() -> None:
    """``flagroll status`` re-tells the last record's wait as of now: after an outage of the
    controller the window may have closed again, so it cannot promise the next evaluation moves."""
    waits = waiting(BERLIN_OFFICE, MONDAY_0900 - timedelta(hours=1))
    assert waits is not None
    later = MONDAY_0900 + timedelta(hours=26)  # Tuesday: the Monday window is closed again
    text = waits.until(later)
    assert text.startswith("the window opened Mon 09:00 Europe/Berlin (08:00 UTC), 1d2h ago")
    assert "advances at the next evaluation" not in text
    assert "no decision since" in text


# --- zones ---------------------------------------------------------------------------------------------


def test_names_that_are_not_iana_zones_are_refused() -> None:
    """``localtime`` is the host's zone (the laptop's for a backtest, UTC in the image), ``right/…``
    zones count leap seconds (27 s off), ``posixrules`` and ``Factory`` are no place's time."""
    for name in ("localtime", "posixrules", "Factory", "right/Europe/Berlin", "posix/Europe/Berlin"):
        problem = zone_problem(name)
        assert problem is not None, name
        assert f"unknown time zone {name!r}" in problem
    for name in ("Europe/Berlin", "UTC", "Etc/UTC", "Asia/Kolkata", "America/Argentina/Buenos_Aires"):
        assert zone_problem(name) is None, name


def test_a_zone_in_the_wrong_case_or_written_z_suggests_the_right_name() -> None:
    assert "did you mean 'UTC'" in str(zone_problem("utc"))
    assert "did you mean 'Europe/Berlin'" in str(zone_problem("europe/berlin"))
    z = str(zone_problem("Z"))
    assert "did you mean 'UTC'" in z
    assert "NZ" not in z  # New Zealand is no suggestion for Zulu time


def test_etc_gmt_zones_warn_that_their_sign_is_inverted() -> None:
    assert zone_warning("Etc/GMT+1") is not None
    assert "UTC-01:00" in str(zone_warning("Etc/GMT+1"))
    assert "UTC+05:00" in str(zone_warning("Etc/GMT-5"))
    assert zone_warning("Europe/Berlin") is None
    assert zone_warning("Etc/GMT") is None
    p = policy(OFFICE.replace("Europe/Berlin", "Etc/GMT+1"))
    found = [f for f in semantic_issues(p) if f[0] == ("spec", "schedule", "timezone")]
    assert [f[2] for f in found] == ["warning"]


def test_a_freeze_without_a_time_zone_is_warned_to_be_utc_dates() -> None:
    found = [f for f in semantic_issues(policy(UTC_FREEZE)) if f[0][:2] == ("spec", "schedule")]
    assert len(found) == 1
    path, message, severity = found[0]
    assert (path, severity) == (("spec", "schedule", "freeze"), "warning")
    assert "UTC dates" in message
    assert "timezone" in message
    assert not [
        f
        for f in semantic_issues(policy(UTC_FREEZE + "    timezone: UTC\n"))
        if f[0][:2] == ("spec", "schedule")
    ]


# --- freezes at the end of the calendar ---------------------------------------------------------------


def test_a_freeze_to_the_end_of_the_calendar_holds_without_crashing() -> None:
    """``to: 9999-12-31`` is how a freeze "until further notice" gets written: the search for the
    next opening ran past the last date Python knows and raised, so every due move crashed."""
    for zone in ("", "    timezone: America/New_York\n", "    timezone: Pacific/Kiritimati\n"):
        for last in ("9999-12-31", "9999-12-20"):
            p = policy(f"  schedule:\n{zone}    freeze:\n      - {{from: 2026-01-01, to: {last}}}\n")
            decision = _run(p, None, T0)
            assert decision.action is Action.HOLD
            waits = decision.waiting
            assert waits is not None
            if last == "9999-12-31":  # no day after it to open on
                assert waits.opens_at is None
                assert decision.reason.startswith(f"frozen 2026-01-01 to {last}: no opening")
            else:
                assert waits.opens_at is not None
                assert waits.opens_at.astimezone(ZoneInfo(waits.timezone)).date() == date(9999, 12, 21)
            assert waits.as_record(T0)["timezone"] == waits.timezone


# --- the backtest ------------------------------------------------------------------------------------


def test_the_backtest_moves_only_inside_windows_as_the_controller_would() -> None:
    """A week from Friday noon: the start waits for Monday 09:00 in Berlin, the advance after the
    1h hold comes at 10:00, and the completion a day later (it does not wait)."""
    from tests.core.test_backtest import POLICY as BACKTESTED
    from tests.core.test_backtest import _answers, constant, load

    text = BACKTESTED.replace("{percent: 5, hold: 10m}", "{percent: 5, hold: 1h}")
    text = text.replace("{percent: 20, hold: 10m}", "{percent: 20, hold: 1d}")
    p = load(text + OFFICE)
    friday = datetime(2026, 11, 27, 12, tzinfo=UTC)
    times = evaluation_times(friday, friday + timedelta(days=7), p.spec.interval_seconds)
    result = replay(p, times, _answers(p, times, constant(times, 0.01)), {})
    monday = datetime(2026, 11, 30, 8, tzinfo=UTC)
    assert [(m.action, m.at) for m in result.moves] == [
        (Action.ADVANCE, monday),
        (Action.ADVANCE, monday + timedelta(hours=1)),
        (Action.COMPLETE, monday + timedelta(days=1, hours=1)),
    ]
    assert result.exposure[0] == (friday, 0.0)
    assert result.holds == len(times) - 3  # a completed rollout still holds, guardrails armed


def test_a_window_shorter_than_the_interval_is_warned_it_may_see_no_evaluation() -> None:
    """Evaluations come one interval apart from whenever the controller started: a 30-minute window
    with a 1h interval is passed over on most days, and the rollout waits on and on."""
    short = "  schedule:\n    timezone: Europe/Berlin\n    windows:\n      - {days: [mon], from: '09:00', to: '09:30'}\n"
    p = policy(short)
    hourly = p.model_copy(update={"spec": p.spec.model_copy(update={"interval_seconds": 3600.0})})
    found = [f for f in semantic_issues(hourly) if f[0][:2] == ("spec", "schedule")]
    assert [(f[0], f[2]) for f in found] == [(("spec", "schedule", "windows", 0, "to"), "warning")]
    assert "30m" in found[0][1]
    assert "1h" in found[0][1]
    assert not [f for f in semantic_issues(p) if f[0][:2] == ("spec", "schedule")]  # 30s: fine


def test_explain_judges_a_start_due_now_inside_the_window_now() -> None:
    """Paused before it started, then resumed (its clock set, nobody exposed): the start is due at
    once, so a window open now is the one that matters, not one after a first step's hold."""
    p = policy(OFFICE)
    monday_1558 = datetime(2026, 11, 23, 14, 58, tzinfo=UTC)
    state = rebase(p, None, T0).state
    state = resume(pause(state, "look", T0).after, "", monday_1558).after
    assert state.step_started_at == monday_1558
    held = [{"flag": "cache", "action": "hold", "time": "2026-11-23T14:58:00Z", "to_percent": 0.0}]
    text = explain("cache", state, held, p, monday_1558)
    assert "wait for the window" not in text.split("To advance")[1]
    # once it started, its 5m hold outlasts the window: the advance waits for Tuesday
    started = _run(p, state, monday_1558).after
    text = explain("cache", started, held, p, monday_1558 + timedelta(minutes=1))
    assert "wait for the window Tue 09:00 Europe/Berlin (08:00 UTC)" in text
    assert "when the hold ends" in text


# --- YAML without base-60 numbers, beyond the schedule ------------------------------------------------


def test_values_written_like_times_are_text_everywhere_in_a_policy() -> None:
    """What docs/policy-reference.md says of the change: a duration or number so written is refused
    (it was silently 90 before), a served value or a segment's is the text."""
    text = POLICY.replace("{extra}", "").replace(
        "flag: {key: cache}", "flag: {key: cache, variants: {on: 1:30, off: 0:45}}"
    )
    loaded = load_text(text, "cache.yaml")
    assert not loaded.errors
    assert loaded.policies[0].policy.spec.flag.variants == {"on": "1:30", "off": "0:45"}
    refused = load_text(POLICY.replace("{extra}", "").replace("hold: 5m", "hold: 1:30"), "cache.yaml")
    assert [str(e) for e in refused.errors if "invalid duration '1:30'" in str(e)]
