"""The JavaScript flagd evaluator (@openfeature/flagd-core, pinned by tests/support/jsflagd/
package-lock.json), installed with ``npm ci`` into a cache outside the checkout and run with node.

The installation is keyed by the package files' content (``~/.cache/flagroll/jsflagd/DIGEST``, or under
``$XDG_CACHE_HOME``), made in a temporary directory and renamed into place under a file lock, so
concurrent test sessions install once and never see half an installation."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent / "jsflagd"
PACKAGE_FILES = ("package.json", "package-lock.json")
SCRIPT = PACKAGE / "evaluate.js"
COMPLETE = ".complete"
INSTALL_TIMEOUT_SECONDS = 300.0
EVALUATE_TIMEOUT_SECONDS = 300.0


class MissingNode(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "flagroll" / "jsflagd"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingNode(
            f"the JavaScript evaluator tests need `{name}` on PATH: run `make setup` "
            "(scripts/install-node installs Debian's nodejs and npm)"
        )
    return path


def _digest() -> str:
    h = hashlib.sha256()
    for name in PACKAGE_FILES:
        h.update(name.encode() + b"\0" + (PACKAGE / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def install() -> Path:
    """The directory holding ``node_modules`` of the pinned evaluator, installed on first use."""
    npm = _tool("npm")
    _tool("node")
    root = cache_root()
    digest = _digest()
    target = root / digest
    if (target / COMPLETE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{digest}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / COMPLETE).exists():  # another session installed it while this one waited
            return target
        work = Path(tempfile.mkdtemp(prefix=f"{digest}-", dir=root))
        try:
            for name in PACKAGE_FILES:
                shutil.copy2(PACKAGE / name, work / name)
            done = subprocess.run(
                [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"npm ci in {work} failed ({done.returncode}): {done.stderr[-2000:]}")
            (work / COMPLETE).touch()
            if target.exists():  # a leftover without its completion mark
                shutil.rmtree(target)
            work.rename(target)
        finally:
            if work.exists():
                shutil.rmtree(work)
    return target


def installed_version(directory: Path, package: str) -> str:
    manifest = json.loads((directory / "node_modules" / package / "package.json").read_text())
    return str(manifest["version"])


def javascript_variants(
    directory: Path, documents: Sequence[Mapping[str, Any]], flag_key: str, keys: Sequence[str]
) -> list[list[str]]:
    """The variants the JavaScript evaluator installed in ``directory`` serves ``keys`` of ``flag_key``,
    one list per document (one node process for all of them)."""
    request = json.dumps({"flag": flag_key, "keys": list(keys), "documents": list(documents)})
    done = subprocess.run(
        [_tool("node"), str(SCRIPT)],
        input=request,
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(directory / "node_modules")},
        timeout=EVALUATE_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"node {SCRIPT.name} failed ({done.returncode}): {done.stderr[-2000:]}")
    answer: list[list[str | None]] = json.loads(done.stdout)["variants"]
    result = []
    for n, variants in enumerate(answer):
        failed = [keys[i] for i, v in enumerate(variants) if v is None]
        assert not failed, f"document {n}: the JavaScript evaluator served no variant to {failed[:5]}"
        result.append([str(v) for v in variants])
    return result
