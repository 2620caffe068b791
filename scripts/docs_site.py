"""The documentation site's pages: README.md as the home page, docs/, and the files they link to.

The site is built from the repository's own Markdown, each file at its path in the repository, so a
relative link that works where the repository is browsed (``docs/gitops.md`` from the README,
``../charts/flagroll/README.md`` from a page in docs/) works in the site too, and the strict build
checks every link and anchor. A link to a repository file that is not published fails the strict
build: add the file to ``PUBLISHED``, or do not link it.

The site builder runs this module as a hook (``hooks:`` in mkdocs.yml).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

PUBLISHED = (
    "README.md",  # the home page (a README.md is a directory's index)
    "docs/*.md",
    "docs/*.png",
    "docs/img/*.png",
    "CHANGELOG.md",
    "charts/flagroll/README.md",
    "policies/*.yaml",  # copied as they are, for the pages that link an example
)
"""The published files, as glob patterns relative to the directory of mkdocs.yml."""


def published(root: Path) -> list[str]:
    """The repository paths of the published files under ``root``, sorted."""
    return sorted({path.relative_to(root).as_posix() for pattern in PUBLISHED for path in root.glob(pattern)})


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Put the published files in place of those found in ``docs_dir`` (the theme's files stay)."""
    root = Path(config.config_file_path).parent
    for file in [file for file in files if file.src_dir == config.docs_dir]:
        files.remove(file)
    for path in published(root):
        files.append(File(path, str(root), config.site_dir, config.use_directory_urls))
    return files
