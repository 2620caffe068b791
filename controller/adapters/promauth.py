"""How flagroll authenticates to Prometheus: bearer token, basic auth, extra headers (a tenant header
for a multi-tenant store, an API key for a gateway), a custom CA, TLS verification.

Secrets come from files (a mounted Kubernetes Secret) or from the environment, never from a
command-line argument (``ps`` would show it). A secret is read once at start, stripped of its trailing
newline, and kept only inside the HTTP client: it is never put into a log line, a decision record, an
error message or ``--help``. :class:`Secret` has a ``repr`` that hides its value, so that even an
accidental ``log.info(auth=...)`` shows ``Secret('***')``.

Extra headers (``--prometheus-header NAME=VALUE``, ``NAME=@FILE``, ``NAME=env:VAR``, and the lines of
``FLAGROLL_PROMETHEUS_HEADER``) are parsed by :mod:`controller.core.httpheaders`; their values are read
here, once at start like the other secrets, and kept as :class:`Secret` whatever their source.

TLS verification is on by default (the system's CA bundle, or ``ca_file``); it can be turned off only
explicitly, and flagroll then says so in its start-up line.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from controller.core.errors import UsageError
from controller.core.httpheaders import (
    HeaderSpec,
    ValueFrom,
    check_header_set,
    parse_header,
    parse_header_lines,
    value_problem,
)

MAX_SECRET_BYTES = 64 * 1024
HEADERS_VARIABLE = "FLAGROLL_PROMETHEUS_HEADER"
# A header value shorter than this is not scrubbed out of error texts: it is no secret (a tenant id
# such as "a1"), and replacing it would garble unrelated words of the message.
MIN_REDACTED_HEADER_CHARS = 4


class Secret:
    """A string that does not show itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret_file(path: Path, option: str) -> Secret:
    """The file's content without its trailing newline. Errors name the file, never the content."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SECRET_BYTES:
        raise UsageError(f"{option} {path}: larger than {MAX_SECRET_BYTES} bytes; is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{option} {path}: not UTF-8 text") from None
    return _checked(text.rstrip("\r\n"), f"{option} {path}")


def _checked(value: str, source: str) -> Secret:
    if not value:
        raise UsageError(f"{source}: empty")
    if any(ch in value for ch in "\r\n\0"):
        raise UsageError(f"{source}: contains a line break or NUL; one line expected")
    return Secret(value)


@dataclass(frozen=True)
class PrometheusAuth:
    bearer_token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None
    verify: bool = True
    extra_headers: tuple[tuple[str, Secret], ...] = ()

    def describe(self) -> str:
        """What the start-up line says about authentication: kinds, files and header names, never
        values."""
        parts = []
        if self.bearer_token is not None:
            parts.append("bearer token")
        if self.username is not None:
            parts.append(f"basic auth as {self.username}")
        if self.extra_headers:
            parts.append("headers " + ", ".join(name for name, _ in self.extra_headers))
        if not self.verify:
            parts.append("TLS verification OFF")
        elif self.ca_file is not None:
            parts.append(f"CA {self.ca_file}")
        return ", ".join(parts) or "none"

    def redact(self, text: str) -> str:
        """``text`` with every credential in it replaced by ``***``: a server may echo what it was
        sent (``invalid token …``) into an error that a reading, a log line and a record then show."""
        for secret in sorted(self._secrets(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _secrets(self) -> list[str]:
        found = [s.reveal() for s in (self.bearer_token, self.password) if s is not None]
        values = (value.reveal() for _, value in self.extra_headers)
        return found + [v for v in values if len(v) >= MIN_REDACTED_HEADER_CHARS]

    def headers(self) -> dict[str, str]:
        """Every header sent with each query: the extra ones in the order given, then the token's."""
        sent = {name: value.reveal() for name, value in self.extra_headers}
        if self.bearer_token is not None:
            sent["Authorization"] = f"Bearer {self.bearer_token.reveal()}"
        return sent

    def httpx_auth(self) -> httpx.BasicAuth | None:
        if self.username is None or self.password is None:
            return None
        return httpx.BasicAuth(self.username, self.password.reveal())

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.verify:
            return False
        if self.ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"--prometheus-ca-file {self.ca_file}: not a readable PEM CA bundle: {exc}"
            ) from None


def load_auth(
    *,
    bearer_token_file: str | None,
    username: str | None,
    password_file: str | None,
    ca_file: str | None,
    insecure_skip_verify: bool,
    environ: Mapping[str, str] | None = None,
    headers: Sequence[str] = (),
) -> PrometheusAuth:
    """Build the settings from options (files) and the environment (values), refusing ambiguity.
    ``headers`` are the ``--prometheus-header`` texts; the lines of ``FLAGROLL_PROMETHEUS_HEADER``
    come first."""
    env = os.environ if environ is None else environ
    token: Secret | None = None
    if bearer_token_file:
        token = read_secret_file(Path(bearer_token_file), "--prometheus-bearer-token-file")
    elif env.get("FLAGROLL_PROMETHEUS_BEARER_TOKEN"):
        token = _checked(env["FLAGROLL_PROMETHEUS_BEARER_TOKEN"], "FLAGROLL_PROMETHEUS_BEARER_TOKEN")
    password: Secret | None = None
    if password_file:
        password = read_secret_file(Path(password_file), "--prometheus-password-file")
    elif env.get("FLAGROLL_PROMETHEUS_PASSWORD"):
        password = _checked(env["FLAGROLL_PROMETHEUS_PASSWORD"], "FLAGROLL_PROMETHEUS_PASSWORD")
    if password is not None and not username:
        raise UsageError("a Prometheus password was given without --prometheus-username")
    if username and password is None:
        raise UsageError(
            "--prometheus-username needs a password: --prometheus-password-file FILE "
            "(or FLAGROLL_PROMETHEUS_PASSWORD)"
        )
    if token is not None and username:
        raise UsageError("give either a bearer token or basic auth for Prometheus, not both")
    if ca_file and insecure_skip_verify:
        raise UsageError("--prometheus-ca-file and --prometheus-insecure-skip-verify contradict each other")
    ca = Path(ca_file) if ca_file else None
    if ca is not None and not ca.is_file():
        raise UsageError(f"--prometheus-ca-file {ca}: no such file")
    if token is not None:
        sender: str | None = (
            "the bearer token (--prometheus-bearer-token-file or FLAGROLL_PROMETHEUS_BEARER_TOKEN)"
        )
    else:
        sender = "basic auth (--prometheus-username)" if username else None
    return PrometheusAuth(
        bearer_token=token,
        username=username or None,
        password=password,
        ca_file=ca,
        verify=not insecure_skip_verify,
        extra_headers=load_headers(headers, env, authorization_from=sender),
    )


def load_headers(
    given: Sequence[str], environ: Mapping[str, str], *, authorization_from: str | None
) -> tuple[tuple[str, Secret], ...]:
    """The extra headers of ``FLAGROLL_PROMETHEUS_HEADER`` then of ``--prometheus-header``, checked
    as a set, then their values read from the command line, files and the environment."""
    specs = parse_header_lines(environ.get(HEADERS_VARIABLE, ""), HEADERS_VARIABLE)
    specs += [parse_header(text, f"--prometheus-header #{i}") for i, text in enumerate(given, 1)]
    check_header_set(specs, authorization_from=authorization_from)
    return tuple((spec.name, _header_value(spec, environ)) for spec in specs)


def _header_value(spec: HeaderSpec, environ: Mapping[str, str]) -> Secret:
    if spec.source is ValueFrom.FILE:
        source = f"{spec.label}: file"
        secret = read_secret_file(Path(spec.text), source)
        value = secret.reveal()
        source += f" {spec.text}"
    elif spec.source is ValueFrom.ENV:
        source = f"{spec.label}: environment variable {spec.text}"
        if spec.text not in environ:
            raise UsageError(f"{source} is not set")
        value = environ[spec.text]
    else:
        source, value = spec.label, spec.text
    problem = value_problem(value)
    if problem is not None:
        raise UsageError(f"{source}: {problem}")
    return Secret(value)
