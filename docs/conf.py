"""Sphinx configuration of the unihetero documentation (`make docs`; `make docs-serve` serves it)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sphinx.application import Sphinx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the API pages import the packages from this checkout

project = "unihetero"
author = "the unihetero developers"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "generated"]  # generated pages are included into the reference pages
root_doc = "index"
html_theme = "furo"
html_title = "unihetero"
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"

# The result pages include committed files of reports/results/ as they are. Their relative links (a report's
# figures/*.svg and tables/*.csv, a protocol's protocol.yaml) are made relative to the site's root, so a link to a
# file becomes a download of it and a link to another included file becomes a link to its page.
INCLUDE = re.compile(r"^```\{include\} (\S+)", re.MULTILINE)
LINK = re.compile(r"(?<!!)(\[[^\]]*\]\()([^)\s#]+)(#[^)\s]*)?\)")


def _included_pages(srcdir: Path) -> dict[Path, str]:
    pages = {}
    for page in srcdir.rglob("*.md"):
        for target in INCLUDE.findall(page.read_text()):
            pages[(page.parent / target).resolve()] = "/" + page.relative_to(srcdir).as_posix()
    return pages


def _rebase_links(app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    source = (Path(app.srcdir) / relative_path).resolve()
    pages = _included_pages(Path(app.srcdir))

    def rebase(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("mailto:", "/")):
            return m.group(0)
        path = (source.parent / target).resolve()
        new = pages.get(path) or "/" + os.path.relpath(path, app.srcdir)
        return f"{m.group(1)}{new}{m.group(3) or ''})"

    content[0] = LINK.sub(rebase, content[0])


def setup(app: Sphinx) -> None:
    app.connect("include-read", _rebase_links)
