"""The house rules docs/development.md states, checked: the layers (import-linter's contracts in
pyproject.toml, function-level imports included) and the size of modules and functions."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [ROOT / "ethosu_build", ROOT / "hydra_plugins"]
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80
WHY = "# long:"  # the comment that says why a module or a function is longer


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in pkg.rglob("*.py"))


def oversized(path: Path) -> list[str]:
    """What in `path` is over the limits without a `# long:` comment saying why: for a module,
    in its first 40 lines; for a function, on its `def` line or the lines just above it."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    if len(lines) > MAX_MODULE_LINES and not any(WHY in line for line in lines[:40]):
        found.append(f"{path.relative_to(ROOT)}: {len(lines)} lines (limit {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        start = min([d.lineno for d in node.decorator_list] + [node.lineno])
        near = lines[max(0, start - 4) : node.lineno]
        if length > MAX_FUNCTION_LINES and not any(WHY in line for line in near):
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            found.append(f"{where}: {length} lines (limit {MAX_FUNCTION_LINES})")
    return found


def test_no_module_or_function_over_the_limits_without_saying_why():
    found = [issue for path in _sources() for issue in oversized(path)]
    assert not found, "over the size limits, with no '# long: why' comment:\n" + "\n".join(found)


def test_the_size_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        assert oversized(tmp_path / "m.py")
        (tmp_path / "m.py").write_text(f"{WHY} a table\ndef f():\n{body}\n")
        assert not oversized(tmp_path / "m.py")
    finally:
        ROOT = old


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is not installed (pip install -e '.[test]')")
    return exe


def test_the_layers_hold():
    result = subprocess.run([_lint_imports()], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The contracts are not vacuous: a copy of the package where the store imports the
    pipeline (a function-level import, as the cycles used to hide) fails them."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "ethosu_build", copy / "ethosu_build", ignore=shutil.ignore_patterns("__pycache__", "conf"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    cache = copy / "ethosu_build" / "store" / "cache.py"
    cache.write_text(cache.read_text() + "\n\ndef _upward():\n    from ..pipeline import build  # noqa: F401\n")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([_lint_imports(), "--no-cache"], cwd=copy, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "ethosu_build.store is not allowed to import ethosu_build.pipeline" in result.stdout
