"""The layout: bench/ is one package per stage of the data flow, imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parents[1]
# Each package may import only the ones before it (keys, the names of the store, is for all).
ORDER = ("keys", "data", "metrics", "suite", "tracking", "run", "report", "cli")
MAX_LINES = 420  # "about 400": no module of the harness is longer


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The bench modules a file imports, counting imports inside functions too."""
    name = module_name(path)
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "bench" or base.startswith("bench."):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bench")}
    return {m for m in found if m in known and m != name}


def bench_graph() -> dict[str, set[str]]:
    paths = list((ROOT / "bench").rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) for p in paths}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for name in graph.get(stack.pop(), ()):
            if name not in seen:
                seen.add(name)
                stack.append(name)
    return seen


def stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_the_packages_are_the_stages():
    entries = {p.name for p in (ROOT / "bench").iterdir() if not p.name.startswith("__")}
    assert entries == {"cli", "keys.py", "data", "metrics", "suite", "tracking", "run", "report"}


def test_no_module_imports_a_module_that_imports_it():
    """No import cycle between bench's modules (the executors share bench/run/cell.py; the runner
    alone knows them all)."""
    graph = bench_graph()
    assert {"bench.run.cell", "bench.run.runner", "bench.run.parallel"} <= set(graph)
    assert [name for name in graph if name in reachable(graph, name)] == []
    executors = ("bench.run.parallel", "bench.run.ray_executor", "bench.run.cell")
    assert all("bench.run.runner" not in reachable(graph, name) for name in executors)


def test_imports_flow_one_way_between_the_stages():
    """A package imports only the packages before it in ORDER, so no package imports one that
    imports it."""
    graph = bench_graph()
    wrong = sorted(
        (module, target)
        for module, targets in graph.items()
        for target in targets
        if stage(module) != stage(target)
        and ORDER.index(stage(target)) > ORDER.index(stage(module))
    )
    assert wrong == []
    packages = {stage(m): set() for m in graph if stage(m) != "bench"}
    for module, targets in graph.items():
        packages.setdefault(stage(module), set()).update(stage(t) for t in targets)
    for package, targets in packages.items():
        assert package not in set().union(*(packages.get(t, set()) for t in targets - {package}))


def test_models_import_nothing_from_bench():
    for path in (ROOT / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("bench"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("bench") for a in node.names), path.name


def test_no_module_is_over_about_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "bench").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
