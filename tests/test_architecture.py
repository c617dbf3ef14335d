"""The shape of the code: imports point one way (analysis -> landscape -> awp), no hard-coded
device, functions short enough to read, and ruff's checks (configured in pyproject.toml) pass."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("awp", "landscape", "analysis")
MAX_FUNCTION_LINES = 60


def _imports(package):
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way():
    assert not _imports("awp") & {"landscape", "analysis", "awp_cli"}
    assert not _imports("landscape") & {"analysis", "awp_cli"}
    assert not _imports("analysis") & {"awp_cli"}


def test_no_hard_coded_cuda():
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            assert ".cuda()" not in path.read_text(), path


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_fit_on_a_screen(package):
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_ruff_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
