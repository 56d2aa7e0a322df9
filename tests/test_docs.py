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


def _documented_builds():
    """Every `ethosu-build` line of the docs' bash blocks that a user can paste as it is: not
    a sweep (-m), not one naming their own files or folders (data/, conf, <...>, ...)."""
    import shlex

    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for text in block.replace("\\\n", " ").splitlines():
                for line in re.split(r"&&|;", text.split(" #", 1)[0]):
                    line = line.strip()
                    if not line.startswith("ethosu-build ") or re.search(
                        r"<|\.\.\.|data/|file://|--warm|--help| -m\b", line
                    ):
                        continue
                    yield pytest.param(shlex.split(line)[1:], id=f"{page.name}: {line[13:60]}")


@pytest.mark.parametrize("overrides", list(_documented_builds()))
def test_every_documented_build_command_composes_and_validates(overrides, tmp_path):
    """The static checks a build runs first (no torch): a documented command that names a key,
    an option or a value the tool no longer takes fails here."""
    from conftest import compose_config

    from ethosu_build.config.validate import validate

    validate(compose_config([*overrides, f"store.root={tmp_path}"])[0])
