"""Extra HTTP headers for Prometheus as written (``NAME=VALUE``, ``NAME=@FILE``, ``NAME=env:VAR``):
parsed and checked as text, with errors that name the option and the header, never the value."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.errors import UsageError
from controller.core.httpheaders import (
    HeaderSpec,
    ValueFrom,
    check_header_set,
    parse_header,
    parse_header_lines,
    value_problem,
)

SECRET = "s3cr3t-5d1c0e7a9b"
WHERE = "--prometheus-header #1"


def _refused(text: str, where: str = WHERE) -> str:
    with pytest.raises(UsageError) as caught:
        parse_header(text, where)
    message = str(caught.value)
    assert message.startswith(where), message
    return message


@pytest.mark.parametrize(
    ("text", "name", "source", "rest"),
    [
        ("X-Scope-OrgID=team-a", "X-Scope-OrgID", ValueFrom.LITERAL, "team-a"),
        ("X-Scope-OrgID=team-a|team-b", "X-Scope-OrgID", ValueFrom.LITERAL, "team-a|team-b"),
        ("X-Api-Key=abc==", "X-Api-Key", ValueFrom.LITERAL, "abc=="),  # the first '=' splits
        ("X-Note=a b, c", "X-Note", ValueFrom.LITERAL, "a b, c"),
        ("X-Scope-OrgID=@/run/secrets/tenant", "X-Scope-OrgID", ValueFrom.FILE, "/run/secrets/tenant"),
        ("X-Scope-OrgID=@tenant.txt", "X-Scope-OrgID", ValueFrom.FILE, "tenant.txt"),
        ("X-Scope-OrgID=env:TENANT_ID", "X-Scope-OrgID", ValueFrom.ENV, "TENANT_ID"),
        ("Authorization=env:_AUTH2", "Authorization", ValueFrom.ENV, "_AUTH2"),
        ("!#$%&'*+-.^_`|~09azAZ=v", "!#$%&'*+-.^_`|~09azAZ", ValueFrom.LITERAL, "v"),
    ],
)
def test_a_header_is_a_name_and_where_its_value_comes_from(
    text: str, name: str, source: ValueFrom, rest: str
) -> None:
    spec = parse_header(text, WHERE)
    assert (spec.name, spec.source, spec.text, spec.where) == (name, source, rest, WHERE)
    assert spec.label == f"{WHERE} {name}"


def test_the_value_does_not_show_in_the_repr() -> None:
    spec = parse_header(f"X-Token={SECRET}", WHERE)
    assert SECRET not in repr(spec)
    assert SECRET not in str(spec)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f"X-Scope-OrgID{SECRET}", "expected NAME=VALUE"),
        (f"X-Scope-OrgID: {SECRET}", "NAME=VALUE, not 'NAME: VALUE'"),
        (f"={SECRET}", "the header name before '=' is empty"),
        (f"X Scope={SECRET}", "not a valid HTTP header name (an RFC 7230 token): it contains ' '"),
        (f"X-Scope:OrgID={SECRET}", "it contains ':'"),
        (f"Authorization: Bearer x={SECRET}", "it contains ':'"),
        (f"X-Tenant\u00e9={SECRET}", "it contains 'é'"),
        ("X-Scope-OrgID=", "X-Scope-OrgID: the value is empty"),
        (f"X-Scope-OrgID={SECRET}\r\nX-Evil: 1", "X-Scope-OrgID: the value contains a line break"),
        (f"X-Scope-OrgID={SECRET}\n", "line break"),
        (f"X-Scope-OrgID={SECRET}\x00", "a control character"),
        (f"X-Scope-OrgID={SECRET}\x7f", "a control character"),
        (f"X-Scope-OrgID={SECRET}\u00e9", "a character outside printable ASCII"),
        (f"X-Scope-OrgID= {SECRET}", "begins or ends with a space or tab"),
        (f"X-Scope-OrgID={SECRET}\t", "begins or ends with a space or tab"),
        ("X-Scope-OrgID=@", "X-Scope-OrgID: '@' must be followed by a file path"),
        ("X-Scope-OrgID=env:", "X-Scope-OrgID: 'env:' must be followed by an environment variable name"),
        (f"X-Scope-OrgID=env:{SECRET}-x", "'env:' must be followed by an environment variable name"),
        ("X-Scope-OrgID=env:1ABC", "'env:' must be followed by an environment variable name"),
    ],
)
def test_bad_headers_are_refused_naming_the_option_never_the_value(text: str, fragment: str) -> None:
    message = _refused(text)
    assert fragment in message
    assert SECRET not in message


@given(st.text(max_size=40))
def test_any_text_is_parsed_or_refused_with_a_usage_error_that_hides_the_value(value: str) -> None:
    marker = "Zq9" + value
    text = f"X-Key={marker}"
    if value_problem(marker) is None:
        spec = parse_header(text, WHERE)
        assert (spec.name, spec.source, spec.text) == ("X-Key", ValueFrom.LITERAL, marker)
    else:
        assert marker not in _refused(text)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("team-a", None),
        ("a b", None),
        ('"quoted" (and) <odd> {chars} [all] ok;?/\\', None),
        ("", "the value is empty"),
        ("a\rb", "the value contains a line break"),
        ("a\x01b", "the value contains a control character"),
        ("\u00fc", "the value contains a character outside printable ASCII"),
        (" a", "the value begins or ends with a space or tab (a server would strip it)"),
    ],
)
def test_value_problem(value: str, problem: str | None) -> None:
    assert value_problem(value) == problem


# --------------------------------------------------------------------------- the environment variable


def test_the_environment_variable_holds_one_header_per_line() -> None:
    text = "X-Scope-OrgID=team-a\n\n  \nX-Api-Key=@/run/key\r\nX-Other=env:OTHER\n"
    specs = parse_header_lines(text, "FLAGROLL_PROMETHEUS_HEADER")
    assert [(s.name, s.source, s.text, s.where) for s in specs] == [
        ("X-Scope-OrgID", ValueFrom.LITERAL, "team-a", "FLAGROLL_PROMETHEUS_HEADER line 1"),
        ("X-Api-Key", ValueFrom.FILE, "/run/key", "FLAGROLL_PROMETHEUS_HEADER line 4"),
        ("X-Other", ValueFrom.ENV, "OTHER", "FLAGROLL_PROMETHEUS_HEADER line 5"),
    ]


def test_a_bad_line_of_the_environment_variable_is_named_by_its_number() -> None:
    with pytest.raises(UsageError) as caught:
        parse_header_lines(f"X-Scope-OrgID=team-a\nX-Key {SECRET}\n", "FLAGROLL_PROMETHEUS_HEADER")
    assert str(caught.value).startswith("FLAGROLL_PROMETHEUS_HEADER line 2: expected NAME=VALUE")
    assert SECRET not in str(caught.value)


# --------------------------------------------------------------------------- the set of headers


def _specs(*texts: str) -> list[HeaderSpec]:
    return [parse_header(text, f"--prometheus-header #{i}") for i, text in enumerate(texts, 1)]


def test_distinct_headers_pass() -> None:
    check_header_set(_specs("X-Scope-OrgID=a", "X-Team=b"), authorization_from=None)
    check_header_set(_specs(f"Authorization=Bearer {SECRET}"), authorization_from=None)


@pytest.mark.parametrize(
    ("texts", "authorization_from", "fragment"),
    [
        (
            ("X-Scope-OrgID=a", f"x-scope-orgid={SECRET}"),
            None,
            "--prometheus-header #2 x-scope-orgid: given twice (also --prometheus-header #1); "
            "give each header once",
        ),
        (
            (f"Authorization=Bearer {SECRET}",),
            "a bearer token",
            "--prometheus-header #1 Authorization: conflicts with a bearer token; give one of them",
        ),
        (
            (f"authorization=Basic {SECRET}",),
            "basic auth",
            "--prometheus-header #1 authorization: conflicts with basic auth",
        ),
        (("Content-Type=text/plain",), None, "Content-Type: flagroll sets this header itself"),
        (("Content-Length=4",), None, "Content-Length: flagroll sets this header itself"),
        (("Transfer-Encoding=chunked",), None, "sets this header itself"),
        (("Connection=close",), None, "sets this header itself"),
        (("Host=prometheus.internal",), None, "Host: flagroll sets this header itself (from --prometheus)"),
    ],
)
def test_duplicates_reserved_names_and_a_second_authorization_are_refused(
    texts: tuple[str, ...], authorization_from: str | None, fragment: str
) -> None:
    with pytest.raises(UsageError) as caught:
        check_header_set(_specs(*texts), authorization_from=authorization_from)
    assert fragment in str(caught.value)
    assert SECRET not in str(caught.value)
