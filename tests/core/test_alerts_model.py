"""``spec.alerts`` over any sequence of cycles, human commands and policy edits (hypothesis stateful):
while an alert with ``onFiring: hold`` fires, or an alert query errors, exposure never rises; with
``onFiring: rollback`` a firing alert rolls an exposed rollout back at once, as a failing guardrail
always does; an edit of the alerts (adding, removing, renaming one, switching ``onFiring``, a
selector matching nothing) is never a new revision and restarts nothing."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from controller.core.commands import pause, resume, stop
from controller.core.decision import Decision
from controller.core.errors import UsageError
from controller.core.policy import Alert, Policy
from controller.core.queries import Arm, Reading, Source
from controller.core.state import ACTIVE, Action, RolloutState, Status
from tests.core.test_decision import T0, policy, run

EDITS = {
    "hold": "  alerts:\n    - {name: pages, selector: '{severity=\"page\"}', onFiring: hold}\n",
    "rollback": "  alerts:\n    - {name: pages, selector: '{severity=\"page\"}', onFiring: rollback}\n",
    "renamed": "  alerts:\n    - {name: paging, selector: '{severity=\"page\"}'}\n",
    "nothing": "  alerts:\n    - {name: pages, selector: '{severity=\"never-set\"}'}\n",
    "two": (
        "  alerts:\n    - {name: pages, selector: '{severity=\"page\"}'}\n"
        "    - {name: tickets, selector: '{severity=\"ticket\"}', onFiring: rollback}\n"
    ),
    "none": "",
}
POLICIES = {name: policy(text) for name, text in EDITS.items()}
CYCLE = st.sampled_from(["quiet", "firing", "error", "failing"])


class AlertsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.edit = "hold"
        self.state: RolloutState | None = None
        self.now = T0

    @property
    def policy(self) -> Policy:
        return POLICIES[self.edit]

    @rule(edit=st.sampled_from(sorted(EDITS)))
    def edit_the_alerts(self, edit: str) -> None:
        assert POLICIES[edit].revision == self.policy.revision  # administrative: the same revision
        self.edit = edit

    @rule(command=st.sampled_from(["pause", "resume", "stop"]))
    def human(self, command: str) -> None:
        if self.state is None:
            return
        act = {"pause": pause, "resume": resume, "stop": stop}[command]
        with contextlib.suppress(UsageError):  # e.g. pausing a rollout that is not progressing
            self.state = act(self.state, "on-call", self.now).after

    @rule(cycle=CYCLE, minutes=st.integers(min_value=1, max_value=15))
    def cycle(self, cycle: str, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        alerts = [a for a in self.policy.spec.alerts or () if a.selector != '{severity="never-set"}']
        answer = {"firing": Reading.listed(['Down{severity="page"}']), "error": Reading.error("HTTP 503")}
        changes: dict[tuple[str, Arm], Reading | float] = {
            (a.name, Arm.TREATMENT): answer[cycle] for a in alerts if cycle in answer
        }
        if cycle == "failing":
            changes[("error-rate", Arm.TREATMENT)] = 0.5
        before = self.state
        decision = run(self.policy, before, self.now, changes)
        self.check(cycle, before, decision, alerts)
        self.state = decision.after

    def check(self, cycle: str, before: RolloutState | None, decision: Decision, alerts: list[Alert]) -> None:
        was = before.percent if before is not None else 0.0
        exposed = was > 0 and before is not None and before.status in {Status.PROGRESSING, Status.PAUSED}
        rules = {a.on_firing for a in alerts}
        if cycle == "failing" and exposed:
            assert decision.action is Action.ROLLBACK, decision.reason
        if cycle in {"firing", "error"} and alerts:
            assert decision.to_percent <= was, decision.reason
            if cycle == "firing" and "rollback" in rules and exposed:
                assert decision.action is Action.ROLLBACK, decision.reason
                assert decision.reason.startswith("alert firing"), decision.reason
            elif cycle == "firing" and (before is None or before.status in ACTIVE):  # judged: said
                assert any(c.kind is Source.ALERT and c.firing for c in decision.checks)
        if cycle == "quiet" and decision.action is Action.ROLLBACK:
            raise AssertionError(f"rolled back with nothing failing: {decision.reason}")


TestAlertsModel = AlertsModel.TestCase
TestAlertsModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
