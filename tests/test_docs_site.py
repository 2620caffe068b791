"""The documentation site (mkdocs.yml, scripts/docs_site.py), built strictly from a copy of the
repository's published files: the copy as it is builds without a warning, and a broken anchor, a link
to a page that does not exist, a link to a repository file the site does not publish, and a page left
out of the navigation each fail the build with a message naming the file and the link. No network:
the theme's assets are in the installed package."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import ROOT


def published_paths() -> list[str]:
    """The repository paths the site publishes, as the site's own hook lists them."""
    spec = importlib.util.spec_from_file_location("docs_site", ROOT / "scripts" / "docs_site.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths: list[str] = module.published(ROOT)
    return paths


@dataclass
class Build:
    returncode: int
    output: str
    site: Path


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what the site is built from: mkdocs.yml, its hook and every published file."""
    copy = tmp_path / "checkout"
    for path in ["mkdocs.yml", "scripts/docs_site.py", *published_paths()]:
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, copy / path)
    return copy


def build(checkout: Path) -> Build:
    site = checkout.parent / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(checkout / "mkdocs.yml")]
    done = subprocess.run(
        [*command, "--site-dir", str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return Build(done.returncode, done.stdout + done.stderr, site)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_documentation_builds_strictly_with_the_readme_as_its_home(checkout: Path) -> None:
    result = build(checkout)

    assert result.returncode == 0, result.output
    assert "WARNING" not in result.output
    home = (result.site / "index.html").read_text(encoding="utf-8")
    assert 'id="your-first-policy"' in home
    # The README's links into docs/ lead to the pages; its link to the chart's README to that page.
    assert 'href="docs/gitops/"' in home
    assert 'href="charts/flagroll/"' in home
    # The README's screenshot of the web UI is published beside it.
    assert 'src="docs/img/ui-rolled-back.png"' in home
    assert (result.site / "docs" / "img" / "ui-rolled-back.png").read_bytes() == (
        ROOT / "docs" / "img" / "ui-rolled-back.png"
    ).read_bytes()
    # A page in docs/ linking a file outside it (an example policy) gets the file, copied as it is.
    reference = (result.site / "docs" / "policy-reference" / "index.html").read_text(encoding="utf-8")
    assert 'href="../../policies/price-quote-cache.yaml"' in reference
    assert (result.site / "policies" / "price-quote-cache.yaml").read_bytes() == (
        ROOT / "policies" / "price-quote-cache.yaml"
    ).read_bytes()


def test_a_link_to_a_missing_anchor_fails_the_build(checkout: Path) -> None:
    edit(
        checkout / "docs" / "how-flagroll-decides.md",
        "(gitops.md#what-a-policy-edit-does)",
        "(gitops.md#what-a-policy-edit-did)",
    )

    result = build(checkout)

    assert result.returncode != 0
    assert (
        "Doc file 'docs/how-flagroll-decides.md' contains a link 'gitops.md#what-a-policy-edit-did', "
        "but the doc 'docs/gitops.md' does not contain an anchor '#what-a-policy-edit-did'"
    ) in result.output
    assert "Aborted with 1 warnings in strict mode" in result.output


def test_a_link_to_an_anchor_in_the_same_page_is_checked_too(checkout: Path) -> None:
    edit(checkout / "README.md", "[The demo](#the-demo)", "[The demo](#a-demo)")

    result = build(checkout)

    assert result.returncode != 0
    assert "'README.md' contains a link '#a-demo'" in result.output


def test_a_link_to_a_missing_page_fails_the_build(checkout: Path) -> None:
    edit(checkout / "README.md", "security](docs/reliability.md)", "security](docs/reliabilty.md)")

    result = build(checkout)

    assert result.returncode != 0
    assert "Doc file 'README.md' contains a link 'docs/reliabilty.md', but the target is not found" in (
        result.output
    )


def test_a_link_to_a_repository_file_the_site_does_not_publish_fails_the_build(checkout: Path) -> None:
    page = checkout / "docs" / "benchmarks.md"
    page.write_text(
        page.read_text(encoding="utf-8") + "\n[The harness](../bench/scale.py)\n", encoding="utf-8"
    )

    result = build(checkout)

    assert result.returncode != 0
    assert "contains a link '../bench/scale.py', but the target 'bench/scale.py' is not found" in (
        result.output
    )


def test_a_page_left_out_of_the_navigation_fails_the_build(checkout: Path) -> None:
    (checkout / "docs" / "orphan.md").write_text("# Orphan\n\nNobody links here.\n", encoding="utf-8")

    result = build(checkout)

    assert result.returncode != 0
    assert "docs/orphan.md" in result.output
    assert 'not included in the "nav" configuration' in result.output
