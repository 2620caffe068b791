"""A first rollout policy for one flag, as text: what ``flagroll init`` writes.

:func:`option_problems` says what is wrong with the options (each message names its option);
:func:`first_policy` writes the policy for options that have none. The policy queries the metrics the
instrumentation kit exports (their names come in as :class:`KitMetrics`: the core does not import the
kit) or, with ``template``, also the shared MetricTemplates of ``policies/http-metrics.yaml``. It holds
out a control arm, ramps in four steps with holds, judges the error ratio and the share of slow requests
against control with statistical guardrails, checks the sample ratio, and says in comments what to
adjust. Every value a user gives is checked and written quoted, so that the text is one valid policy
whatever it holds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date

from controller.core.durations import format_duration
from controller.core.policy import FLAG_KEY_PATTERN, NAME_PATTERN
from controller.core.queries import escape_label_value

# The shared MetricTemplates the repository ships (policies/http-metrics.yaml), by what they count.
TEMPLATES_FILE = "policies/http-metrics.yaml"
REQUESTS_TEMPLATE = "http-requests"
ERROR_RATIO_TEMPLATE = "http-error-ratio"

STEPS = ((1.0, 15 * 60.0), (5.0, 30 * 60.0), (20.0, 3600.0), (50.0, 2 * 3600.0))  # (percent, hold seconds)
INTERVAL_SECONDS = 30.0
MIN_SAMPLES = 500  # requests per arm before a statistical guardrail is judged
TRAFFIC_MIN_SAMPLES = 100  # with templates: requests per arm in the templates' 2-minute window
SLOWER_THAN_SECONDS = 0.5  # the latency bound, if it is one of the histogram's bucket edges
MAX_ERROR_DELTA = 0.002
MAX_SLOW_INCREASE = 0.10
ERROR_CEILING = 0.10
ALPHA = 0.01
MODEST_REQUESTS_PER_SECOND = 5.0  # the route traffic the comments say the first step's wait for


@dataclass(frozen=True, slots=True)
class KitMetrics:
    """The names the instrumentation kit exports its metrics and labels under."""

    requests: str  # counter of requests, labelled route, code, flag and variant
    duration: str  # histogram base name (no _bucket), labelled route, flag and variant
    evaluations: str  # counter of flag evaluations, labelled flag and variant
    flag_label: str
    variant_label: str
    route_label: str
    code_label: str
    buckets_seconds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class FirstPolicyOptions:
    flag_key: str
    route: str
    owner: str
    review: date  # a partial rollout past it is reported stale
    aim: str | None = None
    mechanism: str | None = None
    template: bool = False


def _one_line(option: str, text: str) -> list[str]:
    if not text.strip():
        return [f"{option}: must not be empty"]
    if not text.isprintable():
        return [f"{option}: {text!r} must be one line of printable text (no tabs or control characters)"]
    return []


def option_problems(options: FirstPolicyOptions) -> list[str]:
    """What is wrong with the options, one message each, naming the option at fault."""
    problems = []
    key = options.flag_key
    if not FLAG_KEY_PATTERN.fullmatch(key):
        problems.append(
            f"--flag: {key!r} is not a valid flag key: use letters, digits, '_', '-' and '.', starting "
            "and ending with a letter or digit (at most 253 characters)"
        )
    route = options.route
    if not route.startswith("/"):
        problems.append(
            f"--route: {route!r} must start with '/': it is the route label your service records, a "
            "template such as /price/quote or /items/{id}"
        )
    elif not route.isprintable():
        problems.append(f"--route: {route!r} must be one line of printable text (no control characters)")
    elif "{{" in route or "}}" in route:
        problems.append(
            f"--route: {route!r} must not contain '{{{{' or '}}}}': flagroll reads {{{{…}}}} in a query "
            "as a placeholder ({{flag}}, {{variant}})"
        )
    problems += _one_line("--owner", options.owner)
    for option, text in (("--aim", options.aim), ("--mechanism", options.mechanism)):
        if text is not None:
            problems += _one_line(option, text)
    return problems


def policy_name(flag_key: str) -> str:
    """The policy's name for a valid flag key: lower case, '_' as '-'."""
    name = flag_key.lower().replace("_", "-")
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"no policy name for flag key {flag_key!r}")
    return name


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(text.strip(), ensure_ascii=False)


def first_step_traffic() -> tuple[int, float]:
    """The requests per second the route needs for each arm to reach ``MIN_SAMPLES`` within the first
    step's hold (rounded up), and how long the first step holds at ``MODEST_REQUESTS_PER_SECOND``
    (seconds, to the minute): its guardrails are judged only from then, and it advances only then."""
    percent, hold_seconds = STEPS[0]
    per_arm = percent / 100  # the control arm is as large as the treatment
    needed = math.ceil(MIN_SAMPLES / (per_arm * hold_seconds))
    modest_seconds = max(hold_seconds, MIN_SAMPLES / (MODEST_REQUESTS_PER_SECOND * per_arm))
    return needed, round(modest_seconds / 60) * 60.0


def _latency_bound(kit: KitMetrics) -> float:
    """500 ms if it is a bucket edge of the kit's histogram, else the edge nearest to it."""
    return min(kit.buckets_seconds, key=lambda edge: abs(edge - SLOWER_THAN_SECONDS))


class _Writer:
    def __init__(self, options: FirstPolicyOptions, kit: KitMetrics) -> None:
        self.options, self.kit = options, kit

    def selector(self, metric: str, *, route: bool = True, errors: bool = False) -> str:
        kit = self.kit
        matchers = [f'{kit.route_label}="{escape_label_value(self.options.route)}"'] if route else []
        if errors:
            matchers.append(f'{kit.code_label}=~"5.."')
        matchers += [f'{kit.flag_label}="{{{{flag}}}}"', f'{kit.variant_label}="{{{{variant}}}}"']
        return f"{metric}{{{','.join(matchers)}}}"

    def header(self) -> list[str]:
        o, kit = self.options, self.kit
        lines = [
            f"# A first rollout policy for flag {o.flag_key}, written by 'flagroll init'. Read every line",
            "# marked ADJUST, then check it with 'flagroll validate' and commit it beside your policies.",
            "#",
            f"# The queries read what the instrumentation kit exports: {kit.requests} and",
            f"# {kit.duration} (labelled {kit.route_label}, {kit.flag_label} and",
            f"# {kit.variant_label}) and {kit.evaluations}. If your service exports",
            "# other names, change the selectors below.",
        ]
        if o.template:
            lines += [
                "#",
                "# The traffic count and the error ceiling use the shared MetricTemplates of",
                f"# {TEMPLATES_FILE} ({REQUESTS_TEMPLATE}, {ERROR_RATIO_TEMPLATE}): keep that file in the",
                "# same policy directory. They are asked once per cycle for every rollout, and count every",
                f"# route of the flag, not only {o.route}. The statistical guardrails keep their own",
                "# selectors: they count since this rollout's exposure began, a window of its own.",
            ]
        return lines

    def spec(self) -> list[str]:
        o = self.options
        aim = (
            o.aim or f"Roll out {o.flag_key} on {o.route} without more errors or slow requests than control."
        )
        lines = [
            "apiVersion: flagroll/v1",
            "kind: RolloutPolicy",
            "metadata:",
            f"  name: {_quoted(policy_name(o.flag_key))}",
            "spec:",
            f"  owner: {_quoted(o.owner)}  # who can say stop",
            "  # ADJUST: the outcome sought, with numbers; shown in every decision.",
            f"  aim: {_quoted(aim)}",
        ]
        if o.mechanism is not None:
            lines.append(f"  mechanism: {_quoted(o.mechanism)}")
        else:
            lines += [
                "  # ADJUST: why the change should work ('flagroll validate' warns while it is missing).",
                '  # mechanism: "We believe X moves Y because Z."',
            ]
        steps = [f"    - {{percent: {p:g}, hold: {format_duration(h)}}}" for p, h in STEPS]
        needed, modest_seconds = first_step_traffic()
        modest = MODEST_REQUESTS_PER_SECOND
        lines += [
            f"  review: {o.review.isoformat()}  # a partial rollout past this date is reported stale",
            "  flag:",
            f"    key: {_quoted(o.flag_key)}",
            "    # ADJUST: the values served to treatment ('on') and to everyone else ('off').",
            "    variants: {on: true, off: false}",
            "  control: true  # an equal control arm: the guardrails compare treatment with it",
            f"  maxPercent: {STEPS[-1][0]:g}  # with a control arm a step is at most 50 %",
            f"  interval: {format_duration(INTERVAL_SECONDS)}  # how often the checks run",
            "  # ADJUST: longer holds where traffic is low. A step advances once its hold is over and every",
            "  # check passes; after the last hold the rollout completes at 50 % and its guardrails stay",
            "  # armed (add a checkpoint with onPass: promote to serve 'on' to everyone).",
            f"  # The first step advances only once each arm has minSamples ({MIN_SAMPLES}) requests: "
            "within its",
            f"  # hold when {o.route} serves at least {needed} requests/s, while",
            f"  # at {modest:g} requests/s it holds about {format_duration(modest_seconds)}. "
            "ADJUST: for a quiet route, a larger first step.",
            "  steps:",
            *steps,
        ]
        return lines

    def traffic(self) -> list[str]:
        if not self.options.template:
            return []
        return [
            "  traffic:",
            f"    template: {REQUESTS_TEMPLATE}",
            "    # ADJUST: requests each arm needs in the template's 2 minutes before the error ceiling",
            "    # is judged; below it the rollout holds (lower it for a quiet route).",
            f"    minSamples: {TRAFFIC_MIN_SAMPLES}",
        ]

    def guardrails(self) -> list[str]:
        kit = self.kit
        bound = _latency_bound(kit)
        edges = ", ".join(format_duration(edge) for edge in kit.buckets_seconds)
        lines = [
            "  guardrails:",
            "    # Statistical: treatment against control on the share of failed requests, with a",
            "    # confidence sequence (valid at every look); a failure rolls back (docs/statistics.md).",
            "    - name: error-ratio",
            "      errorRatio:",
            "        errors: >-",
            f"          {self.selector(kit.requests, errors=True)}",
            "        requests: >-",
            f"          {self.selector(kit.requests)}",
            f"      maxDelta: {MAX_ERROR_DELTA:g}  # ADJUST: tolerated rise, {MAX_ERROR_DELTA * 100:g} "
            "percentage point above control",
            f"      minSamples: {MIN_SAMPLES}  # requests per arm before it is judged",
            "    # The share of requests slower than a bound: 'p95 under 500 ms' is 'at most 5 % slower'.",
            "    - name: slow-requests",
            "      latency:",
            "        histogram: >-",
            f"          {self.selector(kit.duration)}",
            "        # ADJUST: near your latency goal; it must be a bucket edge of the histogram:",
            f"        # {edges}.",
            f"        slowerThan: {format_duration(bound)}",
            f"      maxIncrease: {MAX_SLOW_INCREASE:g}  # ADJUST: tolerated: {MAX_SLOW_INCREASE:.0%} more "
            "slow requests than control",
            f"      minSamples: {MIN_SAMPLES}",
        ]
        if self.options.template:
            lines += [
                "    # A fixed ceiling for a change that breaks everything: the share of 5xx answers over",
                "    # the last 2 minutes, whatever control does.",
                "    - name: error-ceiling",
                f"      template: {ERROR_RATIO_TEMPLATE}",
                f"      max: {ERROR_CEILING:g}",
            ]
        return lines

    def statistics(self) -> list[str]:
        return [
            "  statistics:",
            f"    alpha: {ALPHA:g}  # the chance, at most, of rolling back a healthy change over the rollout",
            "    # The sample-ratio check: holds the rollout when the arms' split is broken.",
            "    exposure: >-",
            f"      {self.selector(self.kit.evaluations, route=False)}",
            "  onNoData: hold  # too few requests or no answer yet: wait, never roll back",
            "  onError: hold  # Prometheus cannot answer: wait",
        ]


def first_policy(options: FirstPolicyOptions, kit: KitMetrics) -> str:
    """The policy text, for options without problems (:func:`option_problems`)."""
    problems = option_problems(options)
    if problems:
        raise ValueError("; ".join(problems))
    writer = _Writer(options, kit)
    lines = [
        *writer.header(),
        *writer.spec(),
        *writer.traffic(),
        *writer.guardrails(),
        *writer.statistics(),
    ]
    return "\n".join(lines) + "\n"
