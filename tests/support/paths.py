"""Where things are in the checkout, for tests at any depth under tests/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (this file is tests/support/paths.py)."""

EXAMPLES = ROOT / "policies"
"""The example policies and metric templates (policies/), as shipped in the image and the chart."""

CHART = ROOT / "charts" / "flagroll"
"""The Helm chart."""
