"""The README and docs/ point at things that exist: every relative link, every path in the tree table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path):
    broken = [
        target
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
        if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists()
    ]
    assert not broken


def test_every_path_in_the_readme_tree_table_exists():
    table = (REPO / "README.md").read_text().split("| path | what it is |", 1)[1].split("\n\n", 1)[0]
    checked = 0
    for row in table.splitlines()[2:]:
        first = row.split("|")[1]
        paths = re.findall(r"`([^`]+)`", first)
        folder = Path(paths[0]).parent if paths else None
        for n, path in enumerate(paths):
            where = REPO / path if n == 0 or "/" in path.rstrip("/") else REPO / folder / path
            assert where.exists(), f"README tree table: {path} ({row[:60]}...)"
            checked += 1
    assert checked > 40
