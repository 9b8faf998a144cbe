"""README.md and the docs/ pages, in the order a reader meets them (what the command tests read)."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def nav_pages() -> list[Path]:
    """The docs/ pages in mkdocs.yml's ``nav`` order."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    docs = REPO / config.get("docs_dir", "docs")
    return [docs / next(iter(entry.values())) for entry in config["nav"]]


def documentation_pages() -> list[Path]:
    """README first (the newcomer's path), then every docs/ page in the site's order."""
    return [REPO / "README.md", *nav_pages()]


def documentation_text() -> str:
    """Every page's text, one after the other."""
    return "\n\n".join(page.read_text() for page in documentation_pages())
