"""The docs are the user contract: every link resolves, and the development page's map names
every module of the tree (so the map cannot drift from the code)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).strip().replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_link_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}"
        if anchor:
            headings = [_anchor(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)]
            assert anchor in headings, f"{page.name}: {target}"


def test_the_development_map_names_every_module():
    text = (ROOT / "docs" / "development.md").read_text()
    package = ROOT / "ethosu_build"
    modules = [p for p in package.rglob("*.py") if p.name != "__init__.py" and p.parent.name not in ("models", "conf")]
    missing = [str(p.relative_to(package)) for p in modules if not re.search(rf"(?<![\w.]){re.escape(p.name)}", text)]
    assert not missing, missing
    folders = {p.name for p in package.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert all(f"{f}/" in text for f in folders), folders


def test_the_quick_start_is_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(block) == 2
    assert block[1] in (ROOT / ".ci" / "run").read_text()
