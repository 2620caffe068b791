"""``flagroll schema``: the JSON Schema of a policy document, a metric template or a freeze."""

from __future__ import annotations

import argparse
import json

from controller.cli.common import EXIT_OK
from controller.cli.options import Commands
from controller.core.freezedoc import json_schema as freeze_schema
from controller.core.metrictemplate import json_schema as template_schema
from controller.core.policy import json_schema


def add_parser(commands: Commands) -> None:
    p = commands.add_parser(
        "schema",
        help="print the policy JSON Schema",
        description="Print the JSON Schema of a policy document (or of a metric template, or a Freeze).",
    )
    p.add_argument(
        "--kind",
        choices=("RolloutPolicy", "MetricTemplate", "Freeze"),
        default="RolloutPolicy",
        help="which document kind (default: RolloutPolicy)",
    )
    p.set_defaults(handler=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    schema: dict[str, object] = dict(json_schema())
    if args.kind == "MetricTemplate":
        schema = template_schema()
    elif args.kind == "Freeze":
        schema = freeze_schema()
    print(json.dumps(schema, indent=2, ensure_ascii=False))
    return EXIT_OK
