"""The documentation's shape and its figures: README short, every docs page in the site, counts that match."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.documentation import REPO, nav_pages


def test_readme_is_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in nav_pages():
        assert page.is_file(), page
        if page.name != "index.md":
            assert f"](docs/{page.name}" in readme, f"README does not link docs/{page.name}"


def test_every_docs_page_is_in_the_site_navigation():
    listed = {page.name for page in nav_pages()}
    assert {p.name for p in (REPO / "docs").glob("*.md")} == listed


@pytest.mark.slow
def test_the_fast_tier_count_in_readme_is_what_pytest_collects():
    """README quotes the fast tier's size; collecting it here keeps that figure in step (a full install:
    a module skipped at collection, for a missing extra, would hide its tests from the count)."""
    quoted = re.search(r"The fast tier runs (\d+) tests", (REPO / "README.md").read_text())
    assert quoted, "README no longer says how many tests the fast tier runs"
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not slow", "-p", "no:cacheprovider"],
                          cwd=REPO, capture_output=True, text=True)
    last = proc.stdout.strip().splitlines()[-1]
    if "skipped" in last or "error" in last:
        pytest.skip(f"not every test module could be collected here ({last}): the count is a full install's")
    collected = re.match(r"(\d+)(?:/\d+)? tests? collected", last)
    assert collected, proc.stdout[-2000:]
    assert int(quoted.group(1)) == int(collected.group(1)), \
        f"README says {quoted.group(1)}, pytest collects {collected.group(1)}: update README's fast-tier count"
