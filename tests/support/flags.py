"""Looking at a flag file the way the promises speak of it."""

from __future__ import annotations

from typing import Any

from controller.core.flagd import PREFIX

# The marks flagroll keeps on a flag that is exposed while no policy judges it: its own bookkeeping,
# never what the flag serves or where its rollout stands.
UNGUARDED_MARKS = frozenset({PREFIX + "unguarded", PREFIX + "unguardedSince", PREFIX + "unguardedNoticedAt"})


def without_unguarded_marks(document: dict[str, Any]) -> dict[str, Any]:
    """The flag document as users are served it and as the rollout stands: everything but the marks."""
    flags = {}
    for key, flag in document.get("flags", {}).items():
        if isinstance(flag, dict) and isinstance(flag.get("metadata"), dict):
            meta = {k: v for k, v in flag["metadata"].items() if k not in UNGUARDED_MARKS}
            flag = {**flag, "metadata": meta}
        flags[key] = flag
    return {**document, "flags": flags}
