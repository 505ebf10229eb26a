"""The layout holds: a small composition root, no module too large to read, and no import cycle between the
harness's modules (imports made only for type checking count: they are a cycle a reader must follow too)."""
from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "harness"
ROOT_LINES = 350
MODULE_LINES = 700


def module_name(path: Path, root: Path = HARNESS) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], root: Path) -> set[str]:
    """The harness modules `path` imports, anywhere in it (inside functions and TYPE_CHECKING blocks too)."""
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def graph_of(root: Path) -> dict[str, set[str]]:
    names = {p: module_name(p, root) for p in sorted(root.rglob("*.py"))}
    modules = set(names.values())
    # A package's __init__ importing its own submodules is how a package exports them, not a cycle.
    return {name: {m for m in imports(p, modules, root) - {name}
                   if not (p.name == "__init__.py" and m.startswith(name + "."))}
            for p, name in names.items()}


def test_no_import_cycle_joins_harness_modules():
    assert cycles(graph_of(HARNESS)) == []


def test_the_cycle_finder_finds_one_through_a_type_checking_import(tmp_path):
    package = tmp_path / "harness"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "report.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                       "    from harness.plugin import State\n")
    (package / "plugin.py").write_text("from harness import report\n")
    (package / "alone.py").write_text("import harness.report\n")
    assert cycles(graph_of(package)) == [["harness.plugin", "harness.report"]]


def test_the_composition_root_is_small_and_no_module_is_too_long():
    lengths = {str(p.relative_to(HARNESS.parent)): len(p.read_text(encoding="utf-8").splitlines())
               for p in HARNESS.rglob("*.py")}
    assert lengths["harness/plugin.py"] <= ROOT_LINES
    assert {path: n for path, n in lengths.items() if n > MODULE_LINES} == {}
