"""Running an install script of scripts/ for real, with ``apt-get`` (and ``sudo``) replaced by
recorders on a PATH that holds only what the script needs (tests/test_install_node.py,
tests/test_install_chromium.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


def tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def bare_path(tmp_path: Path) -> Path:
    """A directory with the script's shell and ``id``, and nothing else."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("bash", "id", "sh"):
        real = shutil.which(name)
        assert real is not None
        (directory / name).symlink_to(real)
    return directory


def run_script(script: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    """``script`` with ``directory`` as its whole PATH."""
    return subprocess.run(
        [str(script)],
        env={**os.environ, "PATH": str(directory)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def recording_apt_get(directory: Path, log: Path, installed: Sequence[str]) -> None:
    """``apt-get`` that logs its arguments and, for ``install``, puts the programs ``installed`` on
    PATH (none: an install that leaves nothing behind); ``sudo`` that runs what it is given."""
    chmod = shutil.which("chmod")
    make = f'tool() {{ printf "#!/bin/sh\\n" > "{directory}/$1"; {chmod} +x "{directory}/$1"; }}'
    made = "; ".join(f"tool {name}" for name in installed)
    installing = f'if [ "$1" = install ]; then {made}; fi' if installed else ""
    tool(directory, "apt-get", f'echo "$@" >> "{log}"\n{make}\n{installing}')
    tool(directory, "sudo", 'exec "$@"')
