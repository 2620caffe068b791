"""Hostile input, fuzzed with hypothesis: the flag-file reader never raises anything but a FlagFileError,
invalid input never changes a flag, and nothing in a policy reaches PromQL outside the escaped
``{{flag}}``/``{{variant}}`` substitution (checked by a real Prometheus parsing the result).

The policy parser, the duration parser and the Prometheus response parser have their own fuzz tests in
tests/adapters/test_policyfile.py, tests/core/test_durations.py and tests/adapters/test_prometheus_client.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.adapters.decisionlog import DecisionLog
from controller.adapters.flagstore import FileFlagStore
from controller.adapters.promserver import PrometheusServer
from controller.core.errors import FlagFileError
from controller.core.flagd import PREFIX, managed_keys, parse_document, read_state
from controller.core.queries import Arm, Reading, render
from controller.reconciler import Reconciler
from tests.support.flags import without_unguarded_marks

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

META_KEYS = [
    "policy",
    "revision",
    "status",
    "step",
    "steps",
    "percent",
    "control",
    "updatedAt",
    "stepStartedAt",
]


@st.composite
def flag_documents(draw: st.DrawFn) -> Any:
    """Mostly flag files that look like flagroll's, with fields missing, mistyped or out of range."""
    meta: dict[str, Any] = {
        PREFIX + "policy": "p",
        PREFIX + "revision": "abc",
        PREFIX + "status": draw(
            st.sampled_from(["progressing", "paused", "stopped", "rolled_back", "bogus"])
        ),
        PREFIX + "step": draw(st.integers(-3, 5)),
        PREFIX + "steps": draw(st.integers(-1, 5)),
        PREFIX + "percent": draw(
            st.one_of(st.floats(allow_nan=False), st.integers(-5, 200), st.text(max_size=3))
        ),
        PREFIX + "control": draw(st.one_of(st.booleans(), st.integers(0, 1))),
        PREFIX + "updatedAt": draw(
            st.sampled_from(["2026-11-21T12:00:00Z", "yesterday", "", "2026-11-21T12:00:00"])
        ),
        PREFIX + "stepStartedAt": draw(st.sampled_from(["2026-11-21T12:00:00Z", "x", None])),
    }
    for key in draw(st.lists(st.sampled_from(META_KEYS), max_size=3)):
        meta.pop(PREFIX + key, None)
    for key in draw(st.lists(st.sampled_from(META_KEYS), max_size=2)):
        meta[PREFIX + key] = draw(JSON)
    p = draw(st.integers(-100, 12000))
    flag = {
        "state": draw(st.sampled_from(["ENABLED", "DISABLED", 3])),
        "variants": draw(st.one_of(st.just({"on": True, "off": False, "control": False}), JSON)),
        "defaultVariant": draw(st.sampled_from(["off", "on", "nope", None])),
        "targeting": draw(
            st.one_of(
                st.just({"fractional": [["on", p], ["off", 10000 - 2 * p], ["control", p]]}),
                JSON,
            )
        ),
        "metadata": meta,
    }
    return draw(
        st.one_of(st.just({"flags": {"f": flag}}), JSON, JSON.map(lambda junk: {"flags": {"f": junk}}))
    )


@given(flag_documents())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_reading_any_flag_document_gives_a_state_or_a_flag_file_error(document: Any) -> None:
    text = json.dumps(document)
    try:
        parsed = parse_document(text, "flags.json")
        for key in [*managed_keys(parsed), "f"]:
            read_state(parsed, key)
            read_state(parsed, key, check_layout=False)
    except FlagFileError:
        pass


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
@example('{"flags": {"f": {"metadata": {"flagroll.policy": 1}}}}')
@example('{"flags": []}')
@example("[" * 100_000)
def test_any_flag_file_text_gives_a_document_or_a_flag_file_error(text: str) -> None:
    with contextlib.suppress(FlagFileError):
        parse_document(text, "flags.json")


# --------------------------------------------------------------------------- invalid input, no change


VALID_POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: fuzzed}
spec:
  owner: sre-lead
  aim: "Never move on bad input."
  mechanism: "Validation comes before any write."
  flag: {key: fuzzed}
  maxPercent: 10
  interval: 10s
  steps:
    - {percent: 1, hold: 1m}
    - {percent: 5, hold: 1m}
  guardrails:
    - name: errors
      query: sum(errors{v="{{variant}}"})
      max: 0.01
"""


class Healthy:
    async def query_all(self, queries: Any) -> dict[Any, Reading]:
        return {q.key: Reading.of(0.001) for q in queries}


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flag file in which the rollout has started (1 %), for the fuzzed policies to act on."""
    root = tmp_path_factory.mktemp("started")
    (root / "policies").mkdir()
    (root / "policies" / "p.yaml").write_text(VALID_POLICY)
    _cycle(root)
    return root


def _cycle(root: Path) -> list[dict[str, Any]]:
    reconciler = Reconciler(
        policies=root / "policies",
        store=FileFlagStore(root / "flags.json"),
        prometheus=Healthy(),
        decision_log=DecisionLog(root / "decisions.jsonl"),
        clock=lambda: datetime(2026, 11, 21, 13, 0, tzinfo=UTC),  # an hour later: the hold is over
    )
    return asyncio.run(reconciler.cycle()).records


@st.composite
def broken_policies(draw: st.DrawFn) -> str:
    """The valid policy with one line replaced, cut short, or garbage inserted."""
    lines = VALID_POLICY.splitlines()
    index = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["replace", "cut", "insert", "indent"]))
    junk = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40))
    if how == "replace":
        lines[index] = junk
    elif how == "cut":
        lines = lines[:index]
    elif how == "insert":
        lines.insert(index, junk)
    else:
        lines[index] = "   " + lines[index]
    return "\n".join(lines) + "\n"


@given(broken_policies())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_an_invalid_policy_never_changes_the_flag(started: Path, text: str) -> None:
    from controller.adapters.policyfile import load_text

    if not load_text(text, "p.yaml").errors:
        return  # the mutation happened to leave a valid policy: not this test's subject
    work = started.parent / "work"
    work.mkdir(exist_ok=True)
    (work / "policies").mkdir(exist_ok=True)
    (work / "policies" / "p.yaml").write_text(text)
    (work / "flags.json").write_bytes((started / "flags.json").read_bytes())
    (work / "decisions.jsonl").write_bytes((started / "decisions.jsonl").read_bytes())
    before = json.loads((work / "flags.json").read_text())
    records = _cycle(work)
    after = json.loads((work / "flags.json").read_text())
    # What the flag serves and where its rollout stands never change; flagroll only marks it unguarded.
    assert without_unguarded_marks(after) == without_unguarded_marks(before)
    assert all(r["action"] == "hold" for r in records), records
    assert after["flags"]["fuzzed"]["metadata"][PREFIX + "unguarded"].startswith("UNGUARDED: 1 % exposed")


# --------------------------------------------------------------------------- no PromQL injection


@pytest.mark.prometheus
@pytest.mark.victoriametrics
@given(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=60))
@example('"} or vector(1) or x{a="')
@example('\\"}) or up{job=~".+')
@example("line\nbreak")
@example("back\\slash\\")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_substituted_value_stays_inside_its_label_matcher(prometheus: PrometheusServer, value: str) -> None:
    """``absent(m{k="VALUE"})`` answers one series labelled exactly ``k=VALUE``: if the value escaped
    its string, the query would either not parse or answer something else."""
    promql = render('absent(flagroll_no_such_metric{k="{{flag}}"})', flag=value, arm=Arm.TREATMENT)

    answer = httpx.post(f"{prometheus.url}/api/v1/query", data={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", (value, promql, answer)
    result = answer["data"]["result"]
    assert len(result) == 1
    assert result[0]["metric"] == {"k": value}


def test_every_substitution_is_escaped_so_quotes_and_backslashes_cannot_close_the_string() -> None:
    rendered = render('m{k="{{flag}}",v="{{variant}}"}', flag='a"b\\c\nd', arm=Arm.CONTROL)
    assert rendered == 'm{k="a\\"b\\\\c\\nd",v="control"}'
