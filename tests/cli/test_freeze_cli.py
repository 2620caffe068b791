"""``kind: Freeze`` end to end: ``flagroll run --once`` holds a covered start and records why;
``status`` lists the freezes in force (text, ``--json``, ``--freezes``) and says what each rollout
waits for; ``explain`` says what it takes to advance; ``validate`` and ``schema`` know the kind.

Cycles of the reconciler run at an injected clock (``Environment``); ``run --once`` runs at the real
clock against a Prometheus played by respx, with a Freeze that began in 2020 and has no end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from controller import cli
from controller.adapters.decisionlog import read_records
from controller.adapters.telemetry import Telemetry
from controller.cli import common
from tests.support.environment import POLICY, Environment, failing

CHRISTMAS = datetime(2026, 12, 24, 10, 0, tzinfo=UTC)
FREEZE = """\
apiVersion: flagroll/v1
kind: Freeze
metadata: {name: holiday-freeze}
spec:
  from: 2026-12-24T00:00:00Z
  to: 2027-01-02T00:00:00Z
  reason: "holiday freeze"
  selector: {matchLabels: {team: checkout}}
"""
LABELLED = POLICY.format(name="cache", key="cache").replace(
    "metadata: {name: cache}", "metadata: {name: cache, labels: {team: checkout}}"
)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    environment = Environment(tmp_path)
    environment.add_policy("cache", "cache", LABELLED)
    environment.add_policy("search", "search")  # no labels: the holiday freeze does not cover it
    (environment.policies / "freeze.yaml").write_text(FREEZE)
    environment.clock.now = CHRISTMAS
    monkeypatch.setattr(common, "utc_now", lambda: environment.clock.now)
    return environment


def _run(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    capsys.readouterr()
    assert cli.main(list(args)) == code
    return capsys.readouterr().out


def _by_flag(env: Environment) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for record in read_records(env.log):
        found.setdefault(str(record["flag"]), []).append(record)
    return found


def test_a_cycle_holds_the_covered_start_records_why_and_lets_the_rest_move(env: Environment) -> None:
    env.cycle()
    records = _by_flag(env)
    (held,) = records["cache"]
    assert held["action"] == "hold"
    assert str(held["reason"]).startswith(
        "frozen by Freeze holiday-freeze (holiday freeze), until 2027-01-02 00:00 UTC: wait for the end of "
        "the freeze Sat 2027-01-02 00:00 UTC, in 8d14h; due: rollout starts"
    )
    waiting = held["waiting"]
    assert isinstance(waiting, dict)
    assert waiting["reason"] == "freeze"
    assert waiting["opens_at"] == "2027-01-02T00:00:00Z"
    assert waiting["documents"][0]["where"] == f"{env.policies / 'freeze.yaml'}:1"
    assert [r["action"] for r in records["search"]] == ["advance"]
    assert env.percent("search") == 1
    telemetry = Telemetry(clock=CHRISTMAS.timestamp)
    telemetry.recorded([held])
    assert 'flagroll_rollout_waiting{flag="cache",reason="freeze"} 1.0' in telemetry.exposition().decode()


def test_after_the_freeze_or_without_it_the_rollout_moves(env: Environment) -> None:
    env.cycle()
    (env.policies / "freeze.yaml").unlink()
    env.clock.now += timedelta(seconds=10)
    env.cycle()
    assert [r["action"] for r in _by_flag(env)["cache"]] == ["hold", "advance"]


def test_a_failing_guardrail_rolls_back_while_frozen(env: Environment) -> None:
    env.clock.now = CHRISTMAS - timedelta(days=1)
    env.cycle()  # starts before the freeze
    env.clock.now = CHRISTMAS
    env.metrics.answer = failing
    env.cycle()
    assert [r["action"] for r in _by_flag(env)["cache"]] == ["advance", "rollback"]
    assert env.percent() == 0


def test_a_freeze_file_that_breaks_holds_every_rollout(env: Environment) -> None:
    (env.policies / "freeze.yaml").write_text(FREEZE.replace("  reason:", "  reasn:"))
    env.cycle()
    records = _by_flag(env)
    for flag in ("cache", "search"):
        (record,) = records[flag]
        assert record["action"] == "hold"
        assert "does not validate (line 7: spec.reasn: unknown field 'reasn'" in str(record["reason"])
        assert str(record["reason"]).count("wait until Freeze holiday-freeze is removed or fixed") == 1


def test_status_lists_the_freezes_in_force_and_what_waits(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    env.cycle()
    where = ("--flags", str(env.flags), "--decision-log", str(env.log))
    out = _run(capsys, "status", *where, "--policies", str(env.policies))
    assert "WAITING: frozen by Freeze holiday-freeze (holiday freeze), until 2027-01-02 00:00 UTC" in out
    assert "Freezes in force:" in out
    (line,) = [line for line in out.splitlines() if line.startswith("  holiday-freeze")]
    assert line.split() == [
        "holiday-freeze",
        "2027-01-02T00:00:00Z",
        f"{env.policies / 'freeze.yaml'}:1",
        "cache",
        "holiday",
        "freeze",
    ]
    rows = {r["flag"]: r for r in json.loads(_run(capsys, "status", "--json", *where))}
    assert rows["cache"]["waiting"]["reason"] == "freeze"
    assert [f["name"] for f in rows["cache"]["freezes"]] == ["holiday-freeze"]
    assert rows["search"]["freezes"] == []
    listed = json.loads(
        _run(capsys, "status", "--json", "--freezes", *where, "--policies", str(env.policies))
    )
    assert [(f["name"], f["covers"], f["valid"]) for f in listed] == [("holiday-freeze", ["cache"], True)]
    recorded = _run(capsys, "status", "--freezes", *where)
    assert "as the last decisions named them" in recorded
    assert "holiday-freeze" in recorded
    env.clock.now = datetime(2027, 1, 5, tzinfo=UTC)
    assert "Freezes in force: none" in _run(capsys, "status", *where, "--policies", str(env.policies))


def test_status_lists_a_freeze_that_breaks_as_invalid_covering_everything(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    (env.policies / "freeze.yaml").write_text(FREEZE.replace("  reason:", "  reasn:"))
    env.cycle()
    out = _run(
        capsys,
        "status",
        "--flags",
        str(env.flags),
        "--decision-log",
        str(env.log),
        "--policies",
        str(env.policies),
    )
    (line,) = [line for line in out.splitlines() if "(INVALID)" in line]
    assert "every rollout" in line


def test_explain_says_what_it_takes_to_advance(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    env.cycle()
    for extra in ((), ("--policies", str(env.policies))):
        out = _run(
            capsys, "explain", "cache", "--flags", str(env.flags), "--decision-log", str(env.log), *extra
        )
        must = out.split("To advance")[1]
        assert (
            "- wait for the end of the freeze Sat 2027-01-02 00:00 UTC, in 8d14h; frozen by Freeze "
            "holiday-freeze (holiday freeze), until 2027-01-02 00:00 UTC"
        ) in must


def test_validate_reports_freezes_and_their_mistakes(
    env: Environment, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "validate", str(env.policies))
    assert (
        f"{env.policies / 'freeze.yaml'}:1: ok: freeze holiday-freeze (rollouts labelled team=checkout; "
        "from 2026-12-24 00:00 UTC to 2027-01-02 00:00 UTC)"
    ) in out
    assert "2 valid policies, 1 freeze, 0 errors" in out
    report = json.loads(_run(capsys, "validate", "--format", "json", str(env.policies)))
    assert [f["name"] for f in report["freezes"]] == ["holiday-freeze"]
    (env.policies / "freeze.yaml").write_text(FREEZE.replace("to: 2027-01-02T00:00:00Z", "to: 2026-12-01"))
    out = _run(capsys, "validate", str(env.policies), code=1)
    assert f"{env.policies / 'freeze.yaml'}:6:3: spec.to: 'to' (2026-12-01) is not after 'from'" in out
    assert (
        "INVALID freeze holiday-freeze: until it validates (or is removed) it holds every due advance" in out
    )


def test_schema_prints_the_freeze_schema(capsys: pytest.CaptureFixture[str]) -> None:
    schema = json.loads(_run(capsys, "schema", "--kind", "Freeze"))
    assert schema["title"] == "flagroll Freeze"
    assert schema["properties"]["kind"]["const"] == "Freeze"


def test_diff_takes_a_directory_with_a_freeze(env: Environment, capsys: pytest.CaptureFixture[str]) -> None:
    old = env.policies.parent / "old"
    old.mkdir()
    (old / "cache.yaml").write_text(LABELLED)
    _run(capsys, "diff", str(old), str(env.policies))


PROM = "http://prom.test"


def _healthy(request: httpx.Request) -> httpx.Response:
    query = parse_qs(request.content.decode())["query"][0]
    value = 100.0 if query.startswith("sum(requests") else 0.001
    vector = {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]}
    return httpx.Response(200, json={"status": "success", "data": vector})


def test_run_once_holds_a_start_an_open_ended_freeze_covers_and_records_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "cache.yaml").write_text(LABELLED)
    (policies / "freeze.yaml").write_text(
        FREEZE.replace("2026-12-24T00:00:00Z", "2020-01-01").replace("  to: 2027-01-02T00:00:00Z\n", "")
    )
    flags = tmp_path / "flags.json"
    argv = ["run", "--once", "--policies", str(policies), "--flags", str(flags), "--prometheus", PROM]
    with respx.mock:
        respx.post(f"{PROM}/api/v1/query").mock(side_effect=_healthy)
        assert cli.main(argv) == 0
        (policies / "freeze.yaml").unlink()
        assert cli.main(argv) == 0
    capsys.readouterr()
    first, second = read_records(tmp_path / "decisions.jsonl")
    assert first["action"] == "hold"
    assert first["waiting"]["reason"] == "freeze"
    assert first["waiting"]["until_removed"] is True
    assert (
        "frozen by Freeze holiday-freeze (holiday freeze), until removed: wait until Freeze holiday-freeze is removed,"
        in str(first["reason"])
    )
    assert second["action"] == "advance"


def test_run_once_with_a_broken_freeze_holds_the_start_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "search.yaml").write_text(POLICY.format(name="search", key="search"))  # no labels
    (policies / "freeze.yaml").write_text(FREEZE.replace("from: 2026-12-24T00:00:00Z", "from: [2026"))
    flags = tmp_path / "flags.json"
    argv = ["run", "--once", "--policies", str(policies), "--flags", str(flags), "--prometheus", PROM]
    with respx.mock:
        respx.post(f"{PROM}/api/v1/query").mock(side_effect=_healthy)
        assert cli.main(argv) == 1
    capsys.readouterr()
    (record,) = read_records(tmp_path / "decisions.jsonl")
    assert record["action"] == "hold"
    assert record["waiting"]["documents"][0]["valid"] is False
    assert "the file cannot be read through (see its errors), and it names kind: Freeze" in str(
        record["reason"]
    )
