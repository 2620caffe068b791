"""What a benchmark ends with: its figures and targets written as JSON (``--json FILE``), and an exit
status that says whether every target was met."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def finish(path: Path | None, figures: Mapping[str, Any], results: Sequence[tuple[str, bool]]) -> int:
    """Write ``{"figures": …, "targets": [{"target", "met"}…]}`` to ``path`` (when given); 0 if every
    target was met, else 1."""
    if path is not None:
        targets = [{"target": text, "met": met} for text, met in results]
        path.write_text(json.dumps({"figures": figures, "targets": targets}, indent=2) + "\n")
    return 0 if all(met for _, met in results) else 1
