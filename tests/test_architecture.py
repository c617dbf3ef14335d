"""The shape of the code: imports point one way (analysis -> landscape -> awp) and form no cycle,
no hard-coded device, functions and modules short enough to read, one registry for every table of
choices, a public API in each package's ``__init__``, and ruff's checks (pyproject.toml) pass."""
import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("awp", "landscape", "analysis")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the imports under ``if TYPE_CHECKING:`` (never executed, so no dependency)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the toolkit modules it imports, at the top or inside a function (imports under
    ``if TYPE_CHECKING:`` excluded). ``from pkg import name`` is an edge to ``pkg.name`` when that is a
    module, else to ``pkg``; importing ``a.b`` is an edge to ``a.b`` only (its parent packages'
    ``__init__`` files run too, but they are the public API and only import downwards)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_counting_imports_inside_functions():
    cycles = _cycles(import_graph())
    assert not cycles, cycles


def test_the_cycle_detector_finds_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_over_400_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert not {name: n for name, n in long.items() if n > MAX_MODULE_LINES}


@pytest.mark.parametrize("package", ["awp", "awp.data", "awp.models", "landscape", "analysis"])
def test_every_package_names_its_public_api(package):
    module = importlib.import_module(package)
    assert module.__all__, package
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, missing


def test_no_hand_written_list_of_choices_outside_the_registry():
    """An unknown name anywhere gets the registry's one line (awp.registry.unknown_name)."""
    written = []
    for name, path in _modules().items():
        if name == "awp.registry":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"choose (from|one of)|did you mean", line):
                written.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not written, written


def test_readme_quickstart_imports_from_the_package_tops():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart (Python)", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    imports = re.findall(r"^(?:from (\S+) import|import (\S+))", quickstart, re.M)
    modules = {a or b for a, b in imports}
    assert modules and modules <= {"torch", "awp", "landscape", "analysis"}, modules


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
