"""Prometheus credentials: bearer token, basic auth, a custom CA; TLS verified by default; secrets never
shown. Checked against a real Prometheus serving TLS with basic auth (its web config), and a real
authenticating proxy for bearer tokens."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import trustme

from controller.adapters.promauth import PrometheusAuth, Secret, load_auth, read_secret_file
from controller.adapters.prometheus import PrometheusClient
from controller.adapters.promserver import PrometheusServer
from controller.core.errors import UsageError
from controller.core.queries import Reading, ReadingKind
from tests.support.faultproxy import FaultProxy, Status

TOKEN = "tok-3f9a1c77e2b84d0c"
PASSWORD = "pw-8b1e6d0f93a24c55"

pytestmark = pytest.mark.prometheus


def _query(url: str, auth: PrometheusAuth, promql: str = "vector(1)") -> Reading:
    async def go() -> Reading:
        async with PrometheusClient(url, auth=auth, timeout_seconds=5) as client:
            return await client.query(promql)

    return asyncio.run(go())


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert PASSWORD not in text


# --------------------------------------------------------------------------- reading the settings


def _load(**overrides: Any) -> PrometheusAuth:
    settings: dict[str, Any] = {
        "bearer_token_file": None,
        "username": None,
        "password_file": None,
        "ca_file": None,
        "insecure_skip_verify": False,
        "environ": {},
    }
    settings.update(overrides)
    return load_auth(**settings)


def test_nothing_given_means_no_credentials_and_tls_verified() -> None:
    auth = _load()
    assert auth.headers() == {}
    assert auth.httpx_auth() is None
    assert auth.ssl_context() is True
    assert auth.describe() == "none"


def test_token_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    auth = _load(bearer_token_file=str(path))
    assert auth.headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert auth.describe() == "bearer token"


def test_token_from_the_environment() -> None:
    auth = _load(environ={"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN})
    assert auth.headers() == {"Authorization": f"Bearer {TOKEN}"}


def test_token_file_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file")
    auth = _load(bearer_token_file=str(path), environ={"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN})
    assert auth.headers() == {"Authorization": "Bearer from-file"}


def test_basic_auth_from_user_and_password_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\r\n")
    auth = _load(username="flagroll", password_file=str(path))
    assert auth.password == Secret(PASSWORD)
    assert auth.httpx_auth() is not None
    assert auth.describe() == "basic auth as flagroll"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"username": "flagroll"}, "--prometheus-username needs a password"),
        ({"environ": {"FLAGROLL_PROMETHEUS_PASSWORD": PASSWORD}}, "without --prometheus-username"),
        (
            {
                "username": "u",
                "environ": {
                    "FLAGROLL_PROMETHEUS_PASSWORD": PASSWORD,
                    "FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN,
                },
            },
            "not both",
        ),
        ({"ca_file": "/nonexistent/ca.pem"}, "--prometheus-ca-file /nonexistent/ca.pem: no such file"),
        ({"ca_file": "/etc/hostname", "insecure_skip_verify": True}, "contradict"),
        ({"bearer_token_file": "/nonexistent/token"}, "--prometheus-bearer-token-file /nonexistent/token"),
    ],
)
def test_contradictory_or_missing_settings_are_usage_errors(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        _load(**overrides)
    assert fragment in str(caught.value)
    _no_secret(str(caught.value))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (f"{TOKEN}\nsecond".encode(), "line break"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_secret_files_are_refused_without_showing_them(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        read_secret_file(path, "--prometheus-bearer-token-file")
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)
    _no_secret(str(caught.value))


def test_a_ca_file_that_is_not_pem_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate")
    auth = _load(ca_file=str(path))
    with pytest.raises(UsageError, match="not a readable PEM CA bundle"):
        auth.ssl_context()


def test_secrets_do_not_show_in_repr_str_or_describe(tmp_path: Path) -> None:
    auth = _load(username="flagroll", environ={"FLAGROLL_PROMETHEUS_PASSWORD": PASSWORD})
    token_auth = _load(environ={"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN})
    _no_secret(repr(auth), str(auth), auth.describe(), repr(token_auth), token_auth.describe())
    assert "Secret('***')" in repr(auth)


# --------------------------------------------------------------------------- a real TLS Prometheus


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_prometheus(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus serving HTTPS with a certificate from ``ca`` and basic auth."""
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = (
        "tls_server_config:\n"
        f"  cert_file: {directory / 'server.crt'}\n"
        f"  key_file: {directory / 'server.key'}\n"
        "basic_auth_users:\n"
        f"  flagroll: {hashed}\n"
    )
    server = PrometheusServer(
        [],
        web_config=web_config,
        ready_auth=("flagroll", PASSWORD),
        ready_verify=ssl.create_default_context(cafile=str(directory / "ca.pem")),
    )
    with server:
        yield server


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def _basic(ca_file: Path | None, password: str = PASSWORD, **overrides: Any) -> PrometheusAuth:
    return _load(
        username="flagroll",
        environ={"FLAGROLL_PROMETHEUS_PASSWORD": password},
        ca_file=str(ca_file) if ca_file else None,
        **overrides,
    )


def test_tls_with_the_right_ca_and_password_answers(tls_prometheus: PrometheusServer, ca_file: Path) -> None:
    assert tls_prometheus.url.startswith("https://")
    reading = _query(tls_prometheus.url, _basic(ca_file))
    assert reading.kind is ReadingKind.VALUE
    assert reading.value == 1.0


def test_tls_is_verified_by_default_so_an_unknown_ca_is_an_error(tls_prometheus: PrometheusServer) -> None:
    reading = _query(tls_prometheus.url, _basic(None))
    assert reading.kind is ReadingKind.ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in reading.detail or "certificate verify failed" in reading.detail
    _no_secret(reading.detail)


def test_verification_can_be_turned_off_explicitly(tls_prometheus: PrometheusServer) -> None:
    auth = _basic(None, insecure_skip_verify=True)
    assert "TLS verification OFF" in auth.describe()
    reading = _query(tls_prometheus.url, auth)
    assert reading.kind is ReadingKind.VALUE


def test_a_wrong_password_is_an_error_reading_that_does_not_show_it(
    tls_prometheus: PrometheusServer, ca_file: Path
) -> None:
    wrong = "pw-wrong-5a5a5a5a"
    reading = _query(tls_prometheus.url, _basic(ca_file, password=wrong))
    assert reading.kind is ReadingKind.ERROR
    assert "HTTP 401" in reading.detail
    assert wrong not in reading.detail
    _no_secret(reading.detail)


def test_no_credentials_at_all_is_an_error_reading(tls_prometheus: PrometheusServer, ca_file: Path) -> None:
    reading = _query(tls_prometheus.url, _load(ca_file=str(ca_file)))
    assert reading.kind is ReadingKind.ERROR
    assert "HTTP 401" in reading.detail


# --------------------------------------------------------------------------- bearer tokens, end to end


@pytest.fixture
def gateway(prometheus: PrometheusServer) -> Iterator[FaultProxy]:
    with FaultProxy(prometheus.url, require_bearer=TOKEN) as proxy:
        yield proxy


def test_the_bearer_token_is_sent_to_prometheus(gateway: FaultProxy, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    reading = _query(gateway.url, _load(bearer_token_file=str(path)))
    assert reading.kind is ReadingKind.VALUE
    assert gateway.requests[-1].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    ("settings", "echoed"),
    [
        ({"environ": {"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN}}, TOKEN),
        ({"username": "flagroll", "environ": {"FLAGROLL_PROMETHEUS_PASSWORD": PASSWORD}}, PASSWORD),
    ],
    ids=["token", "password"],
)
@pytest.mark.parametrize(
    "body",
    [
        '{{"status":"error","errorType":"auth","error":"credential {secret} revoked"}}',
        "<html>credential {secret} revoked</html>",
    ],
    ids=["json", "html"],
)
def test_a_gateway_echoing_a_credential_does_not_put_it_in_the_reading(
    prometheus: PrometheusServer, settings: dict[str, Any], echoed: str, body: str
) -> None:
    with FaultProxy(prometheus.url) as proxy:
        proxy.inject(Status(401, body.format(secret=echoed).encode(), "application/json"))
        reading = _query(proxy.url, _load(**settings))
    assert reading.kind is ReadingKind.ERROR
    assert "HTTP 401" in reading.detail
    assert "credential *** revoked" in reading.detail
    _no_secret(reading.detail)


POLICY = """\
apiVersion: flagroll/v1
kind: RolloutPolicy
metadata: {name: secret-check}
spec:
  owner: sre-lead
  aim: "Prove that credentials stay secret."
  mechanism: "Secrets only live inside the HTTP client."
  flag: {key: secret-check}
  maxPercent: 10
  interval: 1s
  steps:
    - {percent: 1, hold: 1m}
  guardrails:
    - name: always-fine
      query: vector(0.001)
      max: 0.05
"""


def _run_once(tmp_path: Path, url: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "controller",
            "--log-format",
            "json",
            "run",
            "--once",
            "--policies",
            str(tmp_path / "policies"),
            "--flags",
            str(tmp_path / "flags.json"),
            "--prometheus",
            url,
            *extra,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_flagroll_run_with_a_token_from_the_environment_never_shows_it(
    gateway: FaultProxy, tmp_path: Path
) -> None:
    done = _run_once(tmp_path, gateway.url, {"FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN})
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "decisions.jsonl").read_text()
    assert '"action": "advance"' in log  # the guardrail passed: Prometheus answered through the gateway
    assert "bearer token" in done.stdout  # the start-up line says which kind of auth is used
    _no_secret(done.stdout, done.stderr, log, (tmp_path / "flags.json").read_text())


def test_flagroll_run_with_a_wrong_token_holds_and_never_shows_either(
    gateway: FaultProxy, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-wrong-0000")
    done = _run_once(tmp_path, gateway.url, {}, "--prometheus-bearer-token-file", str(token_file))
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "decisions.jsonl").read_text()
    assert '"action": "hold"' in log
    assert "HTTP 401" in log
    assert "tok-wrong-0000" not in done.stdout + done.stderr + log


def test_help_never_shows_secrets_from_the_environment() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "controller", "run", "--help"],
        env={
            **os.environ,
            "FLAGROLL_PROMETHEUS_BEARER_TOKEN": TOKEN,
            "FLAGROLL_PROMETHEUS_PASSWORD": PASSWORD,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--prometheus-bearer-token-file" in done.stdout
    _no_secret(done.stdout, done.stderr)


def test_a_usage_error_about_a_secret_file_names_the_file_not_the_secret(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\nsecond line")
    done = _run_once(tmp_path, "http://127.0.0.1:9", {}, "--prometheus-bearer-token-file", str(token_file))
    assert done.returncode == 2
    assert str(token_file) in done.stderr
    _no_secret(done.stdout, done.stderr)
