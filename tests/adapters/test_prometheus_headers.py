"""``--prometheus-header NAME=VALUE`` for long-term and multi-tenant stores: values from the command
line, a file or the environment, sent with every query, and never shown (not in logs, records, errors,
``--help``, ``explain`` or a reading's detail, even when the server echoes them back).

Loading and the HTTP edge cases are checked here with respx; ``test_tenant_gateway.py`` runs
``flagroll run --once`` through a real authenticating gateway in front of the real Prometheus.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from controller.adapters.promauth import PrometheusAuth, load_auth
from controller.adapters.prometheus import PrometheusClient
from controller.cli.parser import build_parser
from controller.core.errors import UsageError
from controller.core.queries import Arm, PlannedQuery, QueryKey, Reading, ReadingKind, Source

BASE = "http://metrics.example/prometheus"
ENDPOINT = f"{BASE}/api/v1/query"
TENANT = "tenant-7c1e93b0"
API_KEY = "key-2f8d4a6e1b9c"
TOKEN = "tok-91a0c3d5e7f2"
ONE = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}'


def _load(*headers: str, environ: dict[str, str] | None = None, **overrides: Any) -> PrometheusAuth:
    settings: dict[str, Any] = {
        "bearer_token_file": None,
        "username": None,
        "password_file": None,
        "ca_file": None,
        "insecure_skip_verify": False,
        "environ": environ or {},
        "headers": list(headers),
    }
    settings.update(overrides)
    return load_auth(**settings)


def _refused(*headers: str, **kwargs: Any) -> str:
    with pytest.raises(UsageError) as caught:
        _load(*headers, **kwargs)
    message = str(caught.value)
    for secret in (TENANT, API_KEY, TOKEN):
        assert secret not in message, message
    return message


# --------------------------------------------------------------------------- where values come from


def test_a_value_on_the_command_line(tmp_path: Path) -> None:
    auth = _load(f"X-Scope-OrgID={TENANT}")
    assert auth.headers() == {"X-Scope-OrgID": TENANT}
    assert auth.describe() == "headers X-Scope-OrgID"


def test_a_value_from_a_file_loses_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text(API_KEY + "\r\n")
    auth = _load(f"X-Api-Key=@{path}")
    assert auth.headers() == {"X-Api-Key": API_KEY}


def test_a_value_from_the_environment() -> None:
    auth = _load("X-Scope-OrgID=env:TENANT_ID", environ={"TENANT_ID": TENANT})
    assert auth.headers() == {"X-Scope-OrgID": TENANT}


def test_the_option_s_environment_variable_holds_one_header_per_line_before_the_command_line() -> None:
    environ = {"FLAGROLL_PROMETHEUS_HEADER": f"X-Scope-OrgID={TENANT}\nX-Api-Key=env:KEY\n", "KEY": API_KEY}
    auth = _load("X-Team=payments", environ=environ)
    assert list(auth.headers().items()) == [
        ("X-Scope-OrgID", TENANT),
        ("X-Api-Key", API_KEY),
        ("X-Team", "payments"),
    ]
    assert auth.describe() == "headers X-Scope-OrgID, X-Api-Key, X-Team"


def test_headers_go_with_a_bearer_token(tmp_path: Path) -> None:
    auth = _load(f"X-Scope-OrgID={TENANT}", environ={"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN})
    assert auth.headers() == {"X-Scope-OrgID": TENANT, "Authorization": f"Bearer {TOKEN}"}
    assert auth.describe() == "bearer token, headers X-Scope-OrgID"


def test_an_authorization_header_alone_is_sent_as_given() -> None:
    auth = _load("Authorization=env:AUTH", environ={"AUTH": f"Custom {TOKEN}"})
    assert auth.headers() == {"Authorization": f"Custom {TOKEN}"}


def test_values_never_show_in_repr_str_or_describe(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text(API_KEY)
    auth = _load(f"X-Scope-OrgID={TENANT}", f"X-Api-Key=@{path}")
    for text in (repr(auth), str(auth), auth.describe()):
        assert TENANT not in text
        assert API_KEY not in text


# --------------------------------------------------------------------------- refused, naming the header


def test_a_missing_file_names_the_option_the_header_and_the_file(tmp_path: Path) -> None:
    message = _refused(f"X-Api-Key=@{tmp_path / 'nope'}")
    assert message.startswith(f"--prometheus-header #1 X-Api-Key: file {tmp_path / 'nope'}: cannot read")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (f"{API_KEY}\nsecond".encode(), "line break"),
        (f" {API_KEY}".encode(), "begins or ends with a space or tab"),
        (f"{API_KEY}\u00e9".encode(), "outside printable ASCII"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_bad_file_is_refused_without_showing_it(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "api-key"
    path.write_bytes(content)
    message = _refused("X-Team=a", f"X-Api-Key=@{path}")
    assert message.startswith(f"--prometheus-header #2 X-Api-Key: file {path}: ")
    assert fragment in message


def test_a_missing_or_empty_environment_variable_is_named() -> None:
    message = _refused("X-Scope-OrgID=env:TENANT_ID")
    assert message == "--prometheus-header #1 X-Scope-OrgID: environment variable TENANT_ID is not set"
    message = _refused("X-Scope-OrgID=env:TENANT_ID", environ={"TENANT_ID": ""})
    assert (
        message == "--prometheus-header #1 X-Scope-OrgID: environment variable TENANT_ID: the value is empty"
    )
    message = _refused("X-Scope-OrgID=env:TENANT_ID", environ={"TENANT_ID": f"{TENANT}\nX-Evil: 1"})
    assert message.endswith("environment variable TENANT_ID: the value contains a line break")


@pytest.mark.parametrize(
    ("headers", "environ", "fragment"),
    [
        ((f"X-Scope-OrgID {TENANT}",), {}, "--prometheus-header #1: expected NAME=VALUE"),
        ((f"X-Scope OrgID={TENANT}",), {}, "--prometheus-header #1: not a valid HTTP header name"),
        ((f"X-Scope-OrgID={TENANT}\r\nX-Evil: 1",), {}, "X-Scope-OrgID: the value contains a line break"),
        (
            (),
            {"FLAGROLL_PROMETHEUS_HEADER": f"X-Team=a\nX-Scope-OrgID: {TENANT}"},
            "FLAGROLL_PROMETHEUS_HEADER line 2: expected NAME=VALUE, found no '='",
        ),
        (
            (f"x-scope-orgid={TENANT}",),
            {"FLAGROLL_PROMETHEUS_HEADER": "X-Scope-OrgID=a"},
            "--prometheus-header #1 x-scope-orgid: given twice (also FLAGROLL_PROMETHEUS_HEADER line 1)",
        ),
        (
            (f"Authorization=Bearer {TOKEN}",),
            {"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN},
            "--prometheus-header #1 Authorization: conflicts with the bearer token "
            "(--prometheus-bearer-token-file or FLAGROLL_PROMETHEUS_BEARER_TOKEN); give one of them",
        ),
        (
            (f"authorization=Basic {TOKEN}",),
            {"FLAGROLL_PROMETHEUS_PASSWORD": TOKEN},
            "--prometheus-header #1 authorization: conflicts with basic auth (--prometheus-username)",
        ),
        (("Host=metrics.internal",), {}, "Host: flagroll sets this header itself"),
    ],
)
def test_bad_or_contradictory_headers_are_usage_errors(
    headers: tuple[str, ...], environ: dict[str, str], fragment: str
) -> None:
    username = "flagroll" if "FLAGROLL_PROMETHEUS_PASSWORD" in environ else None
    assert fragment in _refused(*headers, environ=environ, username=username)


# --------------------------------------------------------------------------- the command line


def _commands_with(option: str) -> set[str]:
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    return {
        name
        for name, sub in subparsers.choices.items()  # type: ignore[union-attr]
        if any(option in action.option_strings for action in sub._actions)
    }


def test_every_command_that_queries_prometheus_takes_the_header_option() -> None:
    assert _commands_with("--prometheus") == _commands_with("--prometheus-header") == {"run", "backtest"}


def test_the_option_repeats_and_its_default_is_empty_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLAGROLL_PROMETHEUS_HEADER", f"X-Scope-OrgID={TENANT}")
    argv = ["run", "--prometheus-header", "X-A=1", "--prometheus-header", "X-B=env:B"]
    assert build_parser().parse_args(argv).prometheus_header == ["X-A=1", "X-B=env:B"]
    assert build_parser().parse_args(["run"]).prometheus_header == []


def test_help_never_shows_header_values_from_the_environment() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller", "run", "--help"],
        env={**os.environ, "FLAGROLL_PROMETHEUS_HEADER": f"X-Scope-OrgID={TENANT}", "TENANT_ID": TENANT},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--prometheus-header NAME=VALUE" in done.stdout
    assert TENANT not in done.stdout + done.stderr


# --------------------------------------------------------------------------- on the wire (respx)


def _ask(auth: PrometheusAuth, *promql: str) -> dict[QueryKey, Reading]:
    queries = [PlannedQuery(QueryKey(Source.GUARDRAIL, q, Arm.TREATMENT, flag="f"), q) for q in promql]

    async def go() -> dict[QueryKey, Reading]:
        async with PrometheusClient(BASE, auth=auth, timeout_seconds=5) as client:
            return await client.query_all(queries)

    return asyncio.run(go())


def test_every_query_carries_the_headers_and_the_token() -> None:
    auth = _load(
        f"X-Scope-OrgID={TENANT}",
        "X-Api-Key=env:K",
        environ={"K": API_KEY, "FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN},
    )
    with respx.mock() as router:
        route = router.post(ENDPOINT).mock(return_value=httpx.Response(200, content=ONE))
        readings = _ask(auth, "vector(1)", "vector(2)", "vector(3)")
    assert all(r.kind is ReadingKind.VALUE for r in readings.values())
    assert route.call_count == 3
    for call in route.calls:
        headers = call.request.headers
        assert headers["x-scope-orgid"] == TENANT
        assert headers["x-api-key"] == API_KEY
        assert headers.get_list("authorization") == [f"Bearer {TOKEN}"]
        assert headers["content-type"] == "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(401, text=f"invalid key {API_KEY} for tenant {TENANT}"),
        httpx.Response(403, json={"status": "error", "errorType": "auth", "error": f"no tenant {TENANT}"}),
        httpx.Response(200, text=f"<html>welcome {TENANT}, token {TOKEN}</html>"),
        httpx.Response(
            200, json={"status": "error", "errorType": "bad_data", "error": f"bearer {TOKEN} expired"}
        ),
    ],
)
def test_a_server_echoing_a_secret_does_not_put_it_in_the_reading(answer: httpx.Response) -> None:
    auth = _load(
        f"X-Scope-OrgID={TENANT}",
        "X-Api-Key=env:K",
        environ={"K": API_KEY, "FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN},
    )
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=answer)
        (reading,) = _ask(auth, "vector(1)").values()
    assert reading.kind is ReadingKind.ERROR
    for secret in (TENANT, API_KEY, TOKEN):
        assert secret not in reading.detail
    assert "***" in reading.detail


def test_a_short_value_is_not_scrubbed_out_of_unrelated_words() -> None:
    auth = _load("X-Scope-OrgID=a1")  # a two-character tenant id is no secret
    with respx.mock() as router:
        router.post(ENDPOINT).mock(return_value=httpx.Response(401, text="a1 is unauthorized"))
        (reading,) = _ask(auth, "vector(1)").values()
    assert reading.detail == "HTTP 401: a1 is unauthorized"
