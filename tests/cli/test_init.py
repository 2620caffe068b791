"""``flagroll init``: a first policy that ``flagroll validate`` accepts, its PromQL escaped, bad options
named, the flag file consulted with the ownership rules, and no file overwritten by accident."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.adapters.policyfile import load_paths
from controller.cli import main
from controller.core.decision import initial_state, queries_for
from controller.core.flagd import empty_document, render_document, write_flag
from controller.core.policy import Policy
from controller.core.state import RolloutState, Status
from controller.instrumentation import FlagMetrics
from tests.support.paths import EXAMPLES

ROUTE = '/items/{id}/say "hi" \\ there'  # braces, quotes and a backslash
IN_PROMQL = 'route="/items/{id}/say \\"hi\\" \\\\ there"'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def init(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return run(capsys, "init", *argv)


def written(capsys: pytest.CaptureFixture[str], directory: Path, *argv: str) -> Path:
    """The policy ``flagroll init ARGV`` prints, saved in ``directory`` beside the shared templates."""
    code, out, err = init(capsys, *argv)
    assert code == 0, err
    directory.mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "http-metrics.yaml", directory / "http-metrics.yaml")
    path = directory / "first.yaml"
    path.write_text(out, encoding="utf-8")
    return path


def loaded(path: Path) -> Policy:
    result = load_paths([path.parent])
    assert not result.errors, [str(e) for e in result.errors]
    (only,) = result.policies
    return only.policy


OPTION_SETS = [
    pytest.param(
        ["--flag", "price-quote-cache", "--route", "/price/quote", "--owner", "sre-lead"], id="plain"
    ),
    pytest.param(
        ["--flag", "Checkout_HTTP.v2", "--route", ROUTE, "--owner", "payments: #1 'sre'", "--template"],
        id="odd-text-template",
    ),
    pytest.param(
        [
            "--flag",
            "123",
            "--route",
            "/café/{id}",
            "--owner",
            'growth "pm"',
            "--aim",
            "Raise completion from 38% to 45%: #goal",
            "--mechanism",
            "We believe a checklist helps because - reasons",
        ],
        id="numeric-key-aim-mechanism",
    ),
    pytest.param(
        [
            "--flag",
            "search",
            "--route",
            "/search",
            "--owner",
            "search",
            "--mechanism",
            "Recency.",
            "--template",
        ],
        id="template-mechanism",
    ),
]


@pytest.mark.parametrize("argv", OPTION_SETS)
def test_the_policy_written_passes_flagroll_validate(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    path = written(capsys, tmp_path / "policies", *argv)
    code, out, _ = run(capsys, "validate", str(path.parent))
    assert code == 0, out
    assert "1 valid policy, 3 templates, 0 errors" in out
    warnings = [line for line in out.splitlines() if ": warning: " in line]
    if "--mechanism" in argv:
        assert warnings == []
        assert run(capsys, "validate", "--strict", str(path.parent))[0] == 0
    else:  # the one thing left to the user, commented in the policy
        assert len(warnings) == 1, warnings
        assert "no 'mechanism'" in warnings[0]
        assert "# mechanism:" in path.read_text()

    # Every value given is in the policy as given (quoted, not reinterpreted by YAML).
    policy = loaded(path)
    options = {
        option: value for option, value in zip(argv, [*argv[1:], ""], strict=True) if option.startswith("--")
    }
    assert policy.spec.flag.key == options["--flag"]
    assert policy.name == options["--flag"].lower().replace("_", "-")
    assert policy.spec.owner == options["--owner"]
    if "--aim" in options:
        assert policy.spec.aim == options["--aim"]
    if "--mechanism" in options:
        assert policy.spec.mechanism == options["--mechanism"]
    spec = policy.spec
    assert spec.control is True
    assert [s.percent for s in spec.steps] == [1, 5, 20, 50]
    assert all(s.hold_seconds >= 15 * 60 for s in spec.steps)
    sequential = [g for g in spec.guardrails if g.sequential]
    assert {g.name for g in sequential} == {"error-ratio", "slow-requests"}
    assert all(g.min_samples == 500 for g in sequential)
    assert spec.statistics is not None
    assert spec.statistics.exposure is not None
    templated = [g.template for g in spec.guardrails if g.template is not None]
    if "--template" in argv:
        assert spec.traffic is not None
        assert spec.traffic.template == "http-requests"
        assert templated == ["http-error-ratio"]
    else:
        assert spec.traffic is None
        assert templated == []


def planned_promql(policy: Policy) -> list[str]:
    now = datetime.now(UTC)
    state = initial_state(policy, now).moved(step=0, percent=1.0, step_started_at=now, exposed_since=now)
    return [q.promql for q in queries_for(policy, state, now)]


def test_the_route_and_the_key_are_escaped_in_the_promql_flagroll_asks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = written(capsys, tmp_path / "p", "--flag", "Pay_v2.x", "--route", ROUTE, "--owner", "o")
    text = path.read_text()
    assert IN_PROMQL in text
    queries = planned_promql(loaded(path))
    route_queries = [q for q in queries if "http_server_" in q]
    assert len(route_queries) >= 4  # errors and requests; slow and all requests
    assert all(IN_PROMQL in q for q in route_queries), route_queries
    assert all('feature_flag_key="Pay_v2.x"' in q for q in queries), queries
    evaluations = [q for q in queries if "feature_flag_evaluations_total" in q]
    assert evaluations
    assert all("route=" not in q for q in evaluations)


def test_the_selectors_name_what_the_instrumentation_kit_exports(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    metrics = FlagMetrics(registry)
    metrics.record(ROUTE, "200", "pay", "on", 0.2)
    metrics.evaluations.labels("pay", "on").inc()
    exported = {
        (sample.name, label)
        for family in registry.collect()
        for sample in family.samples
        for label in sample.labels
    }
    path = written(capsys, tmp_path / "p", "--flag", "pay", "--route", ROUTE, "--owner", "o")
    queries = planned_promql(loaded(path))
    for name, labels in (
        ("http_server_requests_total", ("route", "code", "feature_flag_key", "feature_flag_result_variant")),
        ("http_server_request_duration_seconds_bucket", ("route", "le", "feature_flag_key")),
        ("http_server_request_duration_seconds_count", ("route", "feature_flag_result_variant")),
        ("feature_flag_evaluations_total", ("feature_flag_key", "feature_flag_result_variant")),
    ):
        assert any(f"{name}{{" in q for q in queries), (name, queries)
        assert all((name, label) in exported for label in labels), (name, sorted(exported))
    assert "slowerThan: 500ms" in path.read_text()  # 0.5 s is one of the kit's bucket edges


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--flag", "bad key", "not a valid flag key"),
        ("--flag", "-leading", "not a valid flag key"),
        ("--flag", "key\n", "not a valid flag key"),
        ("--route", "price/quote", "must start with '/'"),
        ("--route", "/a\nb", "one line of printable text"),
        ("--route", "/a\tb", "one line of printable text"),
        ("--route", "/items/{{id}}", "placeholder"),
        ("--owner", "  ", "must not be empty"),
        ("--aim", "two\nlines", "one line of printable text"),
    ],
)
def test_a_bad_option_is_refused_with_its_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: str, value: str, says: str
) -> None:
    given = {"--flag": "cache", "--route": "/price", "--owner": "sre", option: value}
    argv = [f"{name}={text}" for name, text in given.items()]  # a value may start with '-'
    output = tmp_path / "p.yaml"
    code, out, err = init(capsys, *argv, "--output", str(output))
    assert code == 2
    assert out == ""
    assert f"flagroll init: {option}: " in err
    assert says in err
    assert not output.exists()


def test_help_explains_each_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["init", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, words in (
        ("--flag KEY", "the flag key"),
        ("--route /PATH", "route label"),
        ("--owner NAME", "who can say stop"),
        ("--aim TEXT", "the outcome sought"),
        ("--mechanism TEXT", "why the change should work"),
        ("--template", "MetricTemplates"),
        ("--flags FILE", "would be adopted"),
        ("--output FILE", "refused if it exists"),
        ("--force", "overwrite"),
    ):
        assert option in text
        assert words in text, option


# --- --output -----------------------------------------------------------------------------------


def test_output_refuses_to_overwrite_a_file_without_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "policy.yaml"
    target.write_text("# someone's policy\n")
    argv = ["--flag", "cache", "--route", "/price", "--owner", "sre", "--output", str(target)]
    code, out, err = init(capsys, *argv)
    assert (code, out) == (2, "")
    assert "--output" in err
    assert "already exists" in err
    assert "--force" in err
    assert target.read_text() == "# someone's policy\n"

    code, _, err = init(capsys, *argv, "--force")
    assert code == 0, err
    assert f"wrote {target}" in err
    assert loaded(target).spec.flag.key == "cache"


def test_output_writes_a_new_file_and_nothing_to_stdout(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    target = tmp_path / "policy.yaml"
    code, out, _ = init(
        capsys, "--flag", "cache", "--route", "/price", "--owner", "sre", "--output", str(target)
    )
    assert (code, out) == (0, "")
    assert target.read_text().count("kind: RolloutPolicy") == 1


def test_force_without_output_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = init(capsys, "--flag", "cache", "--route", "/price", "--owner", "sre", "--force")
    assert (code, out) == (2, "")
    assert "--force" in err


# --- --flags ------------------------------------------------------------------------------------


def flag_file(tmp_path: Path, flags: dict[str, Any], document: dict[str, Any] | None = None) -> Path:
    document = document if document is not None else empty_document()
    document["flags"].update(flags)
    path = tmp_path / "flags.json"
    path.write_text(render_document(document))
    return path


def served_to_everyone(value: object, name: str = "off") -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {name: value, "other": not value}, "defaultVariant": name}


def managed_by(policy: str, key: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    state = RolloutState(
        policy=policy,
        revision="abc123abc123",
        status=Status.PROGRESSING,
        step=0,
        steps=3,
        percent=5.0,
        control=True,
        step_started_at=now,
        updated_at=now,
        owner="sre",
    )
    return write_flag(empty_document(), key, state)


CASES = [
    pytest.param({"cache": served_to_everyone(False)}, 0, "adopts it", "nobody's exposure changes", id="off"),
    pytest.param(
        {"cache": {**served_to_everyone(True), "state": "DISABLED"}},
        0,
        "adopts it",
        "DISABLED",
        id="disabled",
    ),
    pytest.param(
        {"cache": served_to_everyone(True, "on")}, 1, "already exists and is not flagroll's", "'on'", id="on"
    ),
    pytest.param(
        {"cache": {**served_to_everyone(False), "targeting": {"if": [True, "other", "off"]}}},
        1,
        "already exists and is not flagroll's",
        "targeting rule",
        id="targeting",
    ),
    pytest.param({"banner": served_to_everyone(True)}, 0, "is new", "at 1 %", id="missing"),
]


@pytest.mark.parametrize(("flags", "code", "says", "detail"), CASES)
def test_flags_says_whether_the_flag_is_new_adopted_or_refused_as_validate_does(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    flags: dict[str, Any],
    code: int,
    says: str,
    detail: str,
) -> None:
    flag_path = flag_file(tmp_path, flags)
    before = flag_path.read_text()
    output = tmp_path / "policies" / "cache.yaml"
    output.parent.mkdir()
    argv = ["--flag", "cache", "--route", "/price", "--owner", "sre", "--mechanism", "m"]
    got, out, err = init(capsys, *argv, "--flags", str(flag_path), "--output", str(output))
    assert got == code, err
    assert out == ""
    assert says in err
    assert detail in err
    assert output.exists() == (code == 0)  # refused: nothing written
    assert flag_path.read_text() == before  # only read

    # The same verdict as 'flagroll validate --flags' on the same policy (one rule, not two).
    if code == 1:
        assert "nothing written" in err
        assert init(capsys, *argv, "--output", str(output))[0] == 0
    verdict, validated, _ = run(capsys, "validate", str(output.parent), "--flags", str(flag_path))
    assert verdict == code, validated
    if code == 0 and says == "adopts it":
        assert "adopts flag cache" in validated
    if code == 1:
        assert says in validated


def test_flags_names_a_flag_file_that_does_not_exist_yet(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["--flag", "cache", "--route", "/price", "--owner", "sre"]
    code, out, err = init(capsys, *argv, "--flags", str(tmp_path / "flags.json"))
    assert code == 0
    assert "kind: RolloutPolicy" in out
    assert "does not exist yet: flag cache is new" in err
    assert not (tmp_path / "flags.json").exists()


def test_flags_refuses_a_flag_another_policy_rolls_out(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flag_path = flag_file(tmp_path, {}, managed_by("price-cache-v1", "cache"))
    code, out, err = init(
        capsys, "--flag", "cache", "--route", "/price", "--owner", "sre", "--flags", str(flag_path)
    )
    assert (code, out) == (1, "")
    assert "rolled out by policy 'price-cache-v1'" in err
    assert "flagroll adopt cache --policy cache" in err


def test_flags_says_a_policy_of_the_same_name_is_replaced(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flag_path = flag_file(tmp_path, {}, managed_by("cache", "cache"))
    code, out, err = init(
        capsys, "--flag", "cache", "--route", "/price", "--owner", "sre", "--flags", str(flag_path)
    )
    assert code == 0
    assert "kind: RolloutPolicy" in out
    assert "already rolled out by a policy named cache" in err
    assert "new revision" in err


def test_flags_with_a_broken_flag_file_names_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    flag_path = tmp_path / "flags.json"
    flag_path.write_text("{not json")
    code, out, err = init(
        capsys, "--flag", "cache", "--route", "/price", "--owner", "sre", "--flags", str(flag_path)
    )
    assert (code, out) == (1, "")
    assert str(flag_path) in err


def test_the_policy_says_what_traffic_its_first_hold_needs_and_how_long_less_holds_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The first step's guardrails are judged only from minSamples requests per arm; below them the
    step holds (onNoData: hold). At 1 % for 15 min that takes 56 requests/s on the route: a modest
    service (5 requests/s) would sit at the first step for hours, unannounced, unless the policy says
    so where the steps are set."""
    path = written(capsys, tmp_path / "p", "--flag", "pay", "--route", "/pay", "--owner", "o")
    policy = loaded(path)
    first = policy.spec.steps[0]
    need = max(g.min_samples or 0 for g in policy.spec.guardrails)
    per_arm = first.percent / 100  # the control arm is as large as the treatment
    rate = math.ceil(need / (per_arm * first.hold_seconds))
    modest_hold_minutes = round(need / (5 * per_arm) / 60)
    text = path.read_text()
    assert f"at least {rate} requests/s" in text
    assert f"at 5 requests/s it holds about {modest_hold_minutes // 60}h{modest_hold_minutes % 60}m" in text
