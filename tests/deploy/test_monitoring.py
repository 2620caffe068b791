"""The alerting rules and the Grafana dashboard shipped in charts/flagroll/files.

The rules are checked and unit-tested by ``promtool`` (Debian's prometheus package, as for the rest of
the suite): ``promtool check rules`` on the plain file and on the rules of the rendered
PrometheusRule, and ``promtool test rules`` with synthetic series for every alert, firing and not
firing. Every query of the dashboard must use only the metrics and labels flagroll serves, and parse.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from tests.support.paths import CHART, ROOT

FILES = CHART / "files"
ALERTS = FILES / "alerts.yaml"
DASHBOARD = FILES / "dashboard.json"

# The controller's own metrics and their labels (the interface every part is built against).
METRICS: dict[str, set[str]] = {
    "flagroll_flag_percent": {"flag"},
    "flagroll_rollout_status": {"flag", "status"},
    "flagroll_rollout_stale": {"flag"},
    "flagroll_rollout_unguarded": {"flag"},
    "flagroll_rollout_waiting": {"flag", "reason"},
    "flagroll_decisions_total": {"flag", "action"},
    "flagroll_guardrail_value": {"flag", "guardrail", "rule"},
    "flagroll_guardrail_bound": {"flag", "guardrail", "rule"},
    "flagroll_cycle_duration_seconds_bucket": {"le"},
    "flagroll_cycle_duration_seconds_sum": set(),
    "flagroll_cycle_duration_seconds_count": set(),
    "flagroll_cycles_total": {"result"},
    "flagroll_last_cycle_success_timestamp_seconds": set(),
    "flagroll_query_errors_total": {"flag"},
    "flagroll_policy_errors": set(),
    "flagroll_leader": set(),
    "flagroll_serving_unverified": {"flag"},
    "flagroll_serving_verified_seconds_bucket": {"check", "le"},
    "flagroll_serving_verified_seconds_sum": {"check"},
    "flagroll_serving_verified_seconds_count": {"check"},
    "flagroll_serving_verifications_total": {"check", "outcome"},
}
# Labels Prometheus (or prometheus-operator) adds to every scraped series.
TARGET_LABELS = {"namespace", "job", "pod", "instance"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: install Debian's prometheus package (make setup does)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


# ---- alerting rules ------------------------------------------------------------------------------------


def test_promtool_accepts_the_rules_file() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_rules_of_the_chart_prometheusrule(tmp_path: Path) -> None:
    values = {
        "prometheus": {"url": "http://prometheus:9090"},
        "policies": {"files": {"p.yaml": "x"}},
        "flagStore": {"name": "flags"},
        "prometheusRule": {"enabled": True},
    }
    with helm_python.Chart.load(ROOT / "charts" / "flagroll") as chart:
        rendered = chart.render(values, name="demo", namespace="apps")
    (text,) = [v for k, v in rendered.items() if k.endswith("prometheusrule.yaml")]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(yaml.safe_load(text)["spec"]), encoding="utf-8")
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def filled_annotations(alertname: str, **labels: str) -> dict[str, str]:
    """The rule's annotations with its template fields filled in, as Prometheus would."""
    (rule,) = [r for r in alert_rules() if r["alert"] == alertname]
    filled = {}
    for key, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        filled[key] = text.replace("{{ $value }}", labels.get("value", ""))
    return filled


def expect(alertname: str, severity: str, value: str = "", **labels: str) -> dict[str, Any]:
    return {
        "exp_labels": {"severity": severity, **labels},
        "exp_annotations": filled_annotations(alertname, value=value, **labels),
    }


# Synthetic series for every alert (1-minute steps from time 0) and what must, and must not, fire.
UNIT_TESTS: list[dict[str, Any]] = [
    {
        "name": "a rollback alerts at once, once per flag whatever the number of replicas",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="a",flag="cache",status="rolled_back"}',
                "values": "0 0 0 1 1 1",
            },
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="b",flag="cache",status="rolled_back"}',
                "values": "0 0 0 1 1 1",
            },
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="a",flag="cache",status="progressing"}',
                "values": "1 1 1 0 0 0",
            },
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="a",flag="prompt",status="rolled_back"}',
                "values": "0 0 0 0 0 0",
            },
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="a",flag="prompt",status="progressing"}',
                "values": "1 1 1 1 1 1",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "FlagrollRolledBack", "exp_alerts": []},
            {
                "eval_time": "3m",
                "alertname": "FlagrollRolledBack",
                "exp_alerts": [expect("FlagrollRolledBack", "warning", namespace="apps", flag="cache")],
            },
        ],
    },
    {
        # Only the leader serves rollout gauges: the demoted pod a's series end (stale) at 3m, and the
        # new leader b serves its first cycle's at 5m.
        "name": "a leader handover neither resolves the rollback alert nor fires it again",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="a",flag="cache",status="rolled_back"}',
                "values": "1 1 1 stale",
            },
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="b",flag="cache",status="rolled_back"}',
                "values": "_ _ _ _ _ 1 1 1 1 1",
            },
            {
                "series": 'flagroll_rollout_unguarded{namespace="apps",pod="a",flag="cache"}',
                "values": "1 1 1 stale",
            },
            {
                "series": 'flagroll_rollout_unguarded{namespace="apps",pod="b",flag="cache"}',
                "values": "_ _ _ _ _ 1 1 1 1",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "4m",
                "alertname": "FlagrollRolledBack",
                "exp_alerts": [expect("FlagrollRolledBack", "warning", namespace="apps", flag="cache")],
            },
            {
                "eval_time": "4m",
                "alertname": "FlagrollRolloutUnguarded",
                "exp_alerts": [
                    expect("FlagrollRolloutUnguarded", "critical", namespace="apps", flag="cache")
                ],
            },
            {
                "eval_time": "9m",
                "alertname": "FlagrollRolledBack",
                "exp_alerts": [expect("FlagrollRolledBack", "warning", namespace="apps", flag="cache")],
            },
        ],
    },
    {
        # The demoted pod a saw the rollback last; the new leader b reads it resumed. a's word is
        # forgotten 3 minutes after its last sample, and a stands by serving none.
        "name": "a demoted replica's last rollback stops alerting once the new leader says otherwise",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="a",flag="cache",status="rolled_back"}',
                "values": "1 1 1 stale",
            },
            {
                "series": 'flagroll_rollout_status{namespace="apps",pod="b",flag="cache",status="rolled_back"}',
                "values": "_ _ _ 0 0 0 0 0 0",
            },
            {
                "series": 'flagroll_policy_errors{namespace="apps",job="flagroll",pod="a"}',
                "values": "2x8 stale",
            },
            {
                "series": 'flagroll_policy_errors{namespace="apps",job="flagroll",pod="b"}',
                "values": "_x8 0x8",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "6m", "alertname": "FlagrollRolledBack", "exp_alerts": []},
            {
                "eval_time": "8m",
                "alertname": "FlagrollPolicyRejected",
                "exp_alerts": [
                    expect("FlagrollPolicyRejected", "warning", value="2", namespace="apps", job="flagroll")
                ],
            },
            {"eval_time": "13m", "alertname": "FlagrollPolicyRejected", "exp_alerts": []},
        ],
    },
    {
        "name": "an unguarded flag for one scrape only does not alert",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_rollout_unguarded{namespace="apps",pod="a",flag="cache"}',
                "values": "0 1 0 0 0 0",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "FlagrollRolloutUnguarded", "exp_alerts": []},
            {"eval_time": "4m", "alertname": "FlagrollRolloutUnguarded", "exp_alerts": []},
        ],
    },
    {
        "name": "an unguarded flag alerts within a minute, once per flag, and stops when guarded again",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_rollout_unguarded{namespace="apps",pod="a",flag="cache"}',
                "values": "0 1 1 1 0 0",
            },
            {
                "series": 'flagroll_rollout_unguarded{namespace="apps",pod="b",flag="cache"}',
                "values": "0 1 1 1 0 0",
            },
            {"series": 'flagroll_rollout_unguarded{namespace="apps",pod="a",flag="prompt"}', "values": "0x5"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "FlagrollRolloutUnguarded", "exp_alerts": []},
            {
                "eval_time": "2m",
                "alertname": "FlagrollRolloutUnguarded",
                "exp_alerts": [
                    expect("FlagrollRolloutUnguarded", "critical", namespace="apps", flag="cache")
                ],
            },
            {"eval_time": "5m", "alertname": "FlagrollRolloutUnguarded", "exp_alerts": []},
        ],
    },
    {
        "name": "a flag server not serving what flagroll wrote alerts at once, once per flag, until served",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_serving_unverified{namespace="apps",pod="a",flag="cache"}',
                "values": "0 0 1 1 0 0 0 0",
            },
            {
                "series": 'flagroll_serving_unverified{namespace="apps",pod="b",flag="cache"}',
                "values": "_ _ 1 1 stale",
            },
            {
                "series": 'flagroll_serving_unverified{namespace="apps",pod="a",flag="prompt"}',
                "values": "0x7",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "FlagrollServingUnverified", "exp_alerts": []},
            {
                "eval_time": "2m",
                "alertname": "FlagrollServingUnverified",
                "exp_alerts": [
                    expect("FlagrollServingUnverified", "critical", namespace="apps", flag="cache")
                ],
            },
            {"eval_time": "7m", "alertname": "FlagrollServingUnverified", "exp_alerts": []},
        ],
    },
    {
        "name": "a rollout past its review date alerts after an hour",
        "interval": "1m",
        "input_series": [
            {"series": 'flagroll_rollout_stale{namespace="apps",pod="a",flag="cache"}', "values": "1x120"},
            {"series": 'flagroll_rollout_stale{namespace="apps",pod="a",flag="prompt"}', "values": "0x120"},
        ],
        "alert_rule_test": [
            {"eval_time": "59m", "alertname": "FlagrollRolloutStale", "exp_alerts": []},
            {
                "eval_time": "61m",
                "alertname": "FlagrollRolloutStale",
                "exp_alerts": [expect("FlagrollRolloutStale", "info", namespace="apps", flag="cache")],
            },
        ],
    },
    {
        "name": "no good cycle for 15 minutes alerts; a standby replica that does not reconcile does not",
        "interval": "1m",
        "input_series": [
            # The stuck controller's last good cycle was at 1 minute.
            {
                "series": 'flagroll_last_cycle_success_timestamp_seconds{namespace="apps",job="stuck",pod="a"}',
                "values": "0 60x40",
            },
            # A leader reconciling every minute, and a standby whose last good cycle is old.
            {
                "series": 'flagroll_last_cycle_success_timestamp_seconds{namespace="apps",job="ha",pod="leader"}',
                "values": "0+60x40",
            },
            {
                "series": 'flagroll_last_cycle_success_timestamp_seconds{namespace="apps",job="ha",pod="standby"}',
                "values": "0x40",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "20m", "alertname": "FlagrollNotReconciling", "exp_alerts": []},
            {
                "eval_time": "22m",
                "alertname": "FlagrollNotReconciling",
                "exp_alerts": [expect("FlagrollNotReconciling", "critical", namespace="apps", job="stuck")],
            },
        ],
    },
    {
        "name": "query errors that go on alert; a single failed query does not",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_query_errors_total{namespace="apps",pod="a",flag="cache"}',
                "values": "0+1x40",
            },
            {
                "series": 'flagroll_query_errors_total{namespace="apps",pod="a",flag="prompt"}',
                "values": "0 1x40",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "14m", "alertname": "FlagrollQueryErrors", "exp_alerts": []},
            {
                "eval_time": "17m",
                "alertname": "FlagrollQueryErrors",
                "exp_alerts": [expect("FlagrollQueryErrors", "warning", namespace="apps", flag="cache")],
            },
            {
                "eval_time": "40m",
                "alertname": "FlagrollQueryErrors",
                "exp_alerts": [expect("FlagrollQueryErrors", "warning", namespace="apps", flag="cache")],
            },
        ],
    },
    {
        "name": "rejected policies alert after 5 minutes and stop when fixed",
        "interval": "1m",
        "input_series": [
            {
                "series": 'flagroll_policy_errors{namespace="apps",job="flagroll",pod="a"}',
                "values": "0 2x10 0x10",
            },
            {"series": 'flagroll_policy_errors{namespace="apps",job="other",pod="b"}', "values": "0x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "FlagrollPolicyRejected", "exp_alerts": []},
            {
                "eval_time": "7m",
                "alertname": "FlagrollPolicyRejected",
                "exp_alerts": [
                    expect("FlagrollPolicyRejected", "warning", value="2", namespace="apps", job="flagroll")
                ],
            },
            {"eval_time": "13m", "alertname": "FlagrollPolicyRejected", "exp_alerts": []},
        ],
    },
]


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet() -> None:
    fired = {
        case["alertname"] for test in UNIT_TESTS for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    quiet = {
        case["alertname"] for test in UNIT_TESTS for case in test["alert_rule_test"] if not case["exp_alerts"]
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert fired == names
    assert quiet == names


def run_unit_tests(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    spec = {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return promtool("test", "rules", str(test_file))


def test_promtool_unit_tests_of_every_alert(tmp_path: Path) -> None:
    result = run_unit_tests(tmp_path, UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails_the_unit_tests(tmp_path: Path) -> None:
    """The harness can fail: an alert expected where none fires is reported."""
    wrong = json.loads(json.dumps(UNIT_TESTS[0]))
    wrong["alert_rule_test"][0]["exp_alerts"] = wrong["alert_rule_test"][1]["exp_alerts"]
    result = run_unit_tests(tmp_path, [wrong])
    assert result.returncode != 0
    assert "FlagrollRolledBack" in result.stdout + result.stderr


# ---- dashboard -----------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries() -> list[tuple[str, str]]:
    board = dashboard()
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    found += [(a["name"], a["expr"]) for a in board["annotations"]["list"] if "expr" in a]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert match, variable
            found.append((variable["name"], match.group(1)))
    return found


KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, label matchers) of each series selector in a PromQL expression."""
    return re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}", expr)


def bare_identifiers(expr: str) -> set[str]:
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    names = re.findall(r"(?<![\w$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text)
    return {n for n in names if n not in KEYWORDS}


def test_the_dashboard_is_grafana_json_with_a_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] == "flagroll"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()


def test_every_dashboard_query_uses_flagroll_metrics_and_labels() -> None:
    for where, expr in queries():
        used = {metric for metric, _ in selectors(expr)} | bare_identifiers(expr)
        assert used, f"{where}: no metric in {expr}"
        assert used <= METRICS.keys(), f"{where}: unknown metrics {used - METRICS.keys()} in {expr}"
        for metric, matchers in selectors(expr):
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                assert label in METRICS[metric] | TARGET_LABELS, f"{where}: {metric} has no label {label}"
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert any(label in labels for labels in METRICS.values()) or label in TARGET_LABELS, (
                    f"{where}: no flagroll metric has label {label}"
                )


def test_the_dashboard_shows_what_on_call_needs() -> None:
    by_panel: dict[str, str] = {}
    for title, expr in queries():
        by_panel[title] = by_panel.get(title, "") + expr
    wanted = {
        "Treatment percent per flag": ["flagroll_flag_percent", "by (flag)"],
        "Decisions by action": ["flagroll_decisions_total", "by (action)"],
        "Guardrail value vs bound": ["flagroll_guardrail_value", "flagroll_guardrail_bound"],
        "Cycle duration": ["flagroll_cycle_duration_seconds_bucket", "histogram_quantile"],
        "Prometheus query errors": ["flagroll_query_errors_total", "by (flag)"],
        "Leading replica": ["flagroll_leader", "by (pod)"],
    }
    for title, needles in wanted.items():
        for needle in needles:
            assert needle in by_panel[title], f"{title}: {needle}"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, with Grafana's variables filled in."""
    rules = []
    for i, (_, expr) in enumerate(queries()):
        concrete = expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$flag", ".*")
        assert "$" not in concrete, concrete
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    rules_file = tmp_path / "dashboard-queries.yaml"
    rules_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    result = promtool("check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rollback_annotation_marks_a_rollback_once_and_not_a_leader_handover(tmp_path: Path) -> None:
    """The demoted pod a's series end at 3m; the new leader b's begin at 5m: one rollback, at 1m."""
    (annotation,) = [a for a in dashboard()["annotations"]["list"] if a["name"] == "Rollbacks"]
    expr = annotation["expr"].replace("$namespace", ".*").replace("$flag", ".*")
    series = 'flagroll_rollout_status{{namespace="apps",pod="{pod}",flag="cache",status="rolled_back"}}'
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series.format(pod="a"), "values": "0 1 1 stale"},
                    {"series": series.format(pod="b"), "values": "_ _ _ _ _ 1 1 1"},
                ],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": "1m",
                        "exp_samples": [{"labels": '{flag="cache"}', "value": 1}],
                    },
                    *({"expr": expr, "eval_time": f"{m}m", "exp_samples": []} for m in (2, 3, 4, 5, 6, 7)),
                ],
            }
        ],
    }
    test_file = tmp_path / "annotation_test.yaml"
    test_file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "expr",
    [
        'sum(flagroll_flag_percnt{flag="x"})',
        "rate(flagroll_decisions[5m])",
        'max by (flg) (flagroll_flag_percent{flag=~"$flag"})',
    ],
)
def test_the_metric_check_catches_a_misspelling(expr: str) -> None:
    used = {metric for metric, _ in selectors(expr)} | bare_identifiers(expr)
    groups = [
        label.strip() for g in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for label in g.split(",")
    ]
    known_labels = set().union(*METRICS.values()) | TARGET_LABELS
    assert not used <= METRICS.keys() or not set(groups) <= known_labels
