"""The web UI's page shell: what every page shares. Pure: text in, text out.

A page is one HTML document with its styles in one ``<style>`` element (allowed by its hash in the
Content-Security-Policy, :func:`content_security_policy`), no script, no external asset, and a
``<meta http-equiv="refresh">`` so that it refreshes itself. Every piece of text from outside
(policies, flags, records, the request) goes through :func:`~controller.core.charts.escape`; flag
keys in links are percent-encoded (:func:`flag_href`). The same input always gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

from controller.core.charts import escape, utc_text
from controller.core.durations import format_duration

REFRESH_SECONDS = 30  # how often a page reloads itself (the default of ``--ui-refresh``)

STYLE = """
body { font-family: sans-serif; margin: 1rem 1.5rem; color: #111827; }
nav a { margin-right: 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.8rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.85rem; }
th, td { border: 1px solid #e5e7eb; padding: 0.2rem 0.45rem; text-align: left; vertical-align: top; }
td.number { text-align: right; }
tr.attention td { background: #fef2f2; }
tr.human td { background: #fffbeb; }
.bad { color: #b91c1c; font-weight: bold; }
.warn { color: #92400e; font-weight: bold; }
.good { color: #047857; }
.muted { color: #6b7280; }
code, pre { font-size: 0.8rem; white-space: pre-wrap; word-break: break-all; }
figure { margin: 0.5rem 0 1rem; }
svg { max-width: 100%; height: auto; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: bold; } dl.facts dd { margin: 0; }
form.filters label { margin-right: 0.8rem; }
""".strip()

# The Content-Security-Policy of every page: no script, nothing fetched, one stylesheet by its hash.
NO_SCRIPT_POLICY = (
    "default-src 'none'; style-src {style}; img-src data:; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def style_hash() -> str:
    """The CSP source of :data:`STYLE`: ``'sha256-…'`` over the text inside the ``<style>`` element."""
    digest = hashlib.sha256(_style_text().encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy() -> str:
    """No script, no frame, no fetch of anything; the page's one stylesheet by its hash."""
    return NO_SCRIPT_POLICY.replace("{style}", style_hash())


def security_headers() -> list[tuple[str, str]]:
    return [
        ("Content-Security-Policy", content_security_policy()),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
        ("X-Frame-Options", "DENY"),
    ]


def _style_text() -> str:
    return f"\n{STYLE}\n"


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page and the HTTP status it is served with."""

    status: int
    html: str


def flag_href(key: str) -> str:
    """The rollout page of flag ``key``: every character but letters, digits and ``-._~`` encoded
    (a ``/`` in a key too, so that it stays one path segment)."""
    return "/flags/" + quote(key, safe="")


def log_href(**params: str | int) -> str:
    """The decision log page with these filters (empty values left out), in a fixed order."""
    kept = [(name, str(value)) for name, value in params.items() if value != ""]
    return "/log" + ("?" + urlencode(kept) if kept else "")


def age(since: datetime | None, now: datetime) -> str:
    """``5m`` ago, or ``—``."""
    if since is None:
        return "—"
    return format_duration(max(0.0, (now - since).total_seconds()))


def parse_time(text: object) -> datetime | None:
    """A record's ISO time with a time zone, or None."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def render_page(
    title: str,
    body: Iterable[str],
    now: datetime,
    *,
    refresh_seconds: int | None = REFRESH_SECONDS,
    status: int = 200,
) -> Page:
    """The document around ``body`` (already escaped HTML): navigation, the time it was rendered."""
    refresh = (
        [f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">']
        if refresh_seconds is not None
        else []
    )
    text = "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="referrer" content="no-referrer">',
            *refresh,
            f"<title>{escape(title)} · flagroll</title>",
            f"<style>{_style_text()}</style>",
            "</head>",
            "<body>",
            '<nav><a href="/">Rollouts</a><a href="/log">Decision log</a>'
            f'<span class="muted">read-only · rendered {utc_text(now)}'
            + (f" · refreshes every {int(refresh_seconds)}s" if refresh_seconds is not None else "")
            + "</span></nav>",
            f"<h1>{escape(title)}</h1>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    return Page(status, text)


def error_page(status: int, title: str, message: str, now: datetime) -> Page:
    """A 4xx page saying what was wrong (no refresh: it would only repeat the same request)."""
    return render_page(
        title,
        [f'<p class="bad" id="problem">{escape(message)}</p>'],
        now,
        refresh_seconds=None,
        status=status,
    )
