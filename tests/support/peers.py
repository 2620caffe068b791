"""The peers ``scripts/peer`` builds from the Go module proxy (docs/peers.md)."""

from __future__ import annotations

import subprocess

from tests.support.paths import ROOT


def peer_path(name: str) -> str:
    """The path ``scripts/peer NAME`` prints: built (or generated) once, then found in its cache."""
    done = subprocess.run([str(ROOT / "scripts" / "peer"), name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/peer {name} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done.stdout.splitlines()[-1]
