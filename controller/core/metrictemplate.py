"""Shared metric templates: a query written once, asked once per cycle for every rollout that uses it.

A ``kind: MetricTemplate`` document names a PromQL query that returns one series per flag and
variant, grouped by the labels the instrumentation kit puts on every request
(``feature_flag_key`` and ``feature_flag_result_variant`` unless the template says otherwise)::

    apiVersion: flagroll/v1
    kind: MetricTemplate
    metadata:
      name: http-error-ratio
    spec:
      query: >-
        sum by (feature_flag_key, feature_flag_result_variant)
          (rate(http_server_requests_total{code=~"5.."}[2m]))
        / sum by (feature_flag_key, feature_flag_result_variant)
          (rate(http_server_requests_total[2m]))

A policy's traffic, guardrail or checkpoint expectation says ``template: http-error-ratio`` instead of
``query:``. Each cycle the controller asks the template's query once, whatever the number of rollouts,
and gives each rollout's arm the series whose labels name its flag and variant. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Literal

from pydantic import Field

from controller.core.policy import (
    NAME_PATTERN,
    PLACEHOLDER_PATTERN,
    Metadata,
    Model,
    NonEmptyText,
    Path,
)

TEMPLATE_KIND = "MetricTemplate"
FLAG_LABEL = "feature_flag_key"
VARIANT_LABEL = "feature_flag_result_variant"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_label_name(label: str) -> bool:
    """A Prometheus label name: since Prometheus 3 any text (``feature_flag.key``), written quoted in
    PromQL when it is not an identifier; a control character (a newline, a tab) is refused here."""
    return bool(label) and not any(unicodedata.category(c) == "Cc" for c in label)


def promql_label(label: str) -> str:
    """A label name as PromQL spells it: bare if it is an identifier, else quoted."""
    return label if _IDENTIFIER.match(label) else json.dumps(label, ensure_ascii=False)


class TemplateSpec(Model):
    description: str | None = Field(None, description="What the query measures, for people.")
    query: NonEmptyText = Field(
        description="PromQL returning one series per flag and variant, grouped by flagLabel and "
        "variantLabel, e.g. sum by (feature_flag_key, feature_flag_result_variant) (…)."
    )
    flag_label: NonEmptyText = Field(FLAG_LABEL, description="The label that holds the flag key.")
    variant_label: NonEmptyText = Field(
        VARIANT_LABEL, description="The label that holds the variant (on, control)."
    )


class MetricTemplate(Model):
    """One ``kind: MetricTemplate`` document."""

    api_version: Literal["flagroll/v1"]
    kind: Literal["MetricTemplate"]
    metadata: Metadata
    spec: TemplateSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def semantic_issues(template: MetricTemplate) -> list[tuple[Path, str, str]]:
    """Rules across fields. Returns (path, message, severity) with severity 'error' or 'warning'."""
    found: list[tuple[Path, str, str]] = []
    spec = template.spec
    if not NAME_PATTERN.match(template.metadata.name):
        found.append(
            (
                ("metadata", "name"),
                f"{template.metadata.name!r} is not a valid name: use lower-case letters, digits, "
                "'-' and '.', starting and ending with a letter or digit",
                "error",
            )
        )
    if PLACEHOLDER_PATTERN.search(spec.query):
        found.append(
            (
                ("spec", "query"),
                "a template is asked once for every flag, so it takes no {{variant}} or {{flag}}: "
                f"group it by ({promql_label(spec.flag_label)}, {promql_label(spec.variant_label)}) instead",
                "error",
            )
        )
    for field, label in (("flagLabel", spec.flag_label), ("variantLabel", spec.variant_label)):
        if not is_label_name(label):
            found.append((("spec", field), f"{label!r} is not a Prometheus label name", "error"))
    if spec.flag_label == spec.variant_label:
        found.append((("spec", "variantLabel"), "flagLabel and variantLabel must differ", "error"))
    return found


def json_schema() -> dict[str, object]:
    """The JSON Schema of a template document, for editors and CI."""
    schema = MetricTemplate.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flagroll MetricTemplate"
    return schema
