"""The import graph of `modeling/`, read from the source (every import, at module level or inside a function).

    python tests/import_graph.py            # the edges between the packages, then any circle between modules

tests/unit/common/test_imports.py fails when a circle appears or a dependency points the wrong way.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "modeling"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """modeling.x.y -> its file (a package's __init__.py is the package)."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def module_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the modeling modules it imports. `from pkg import name` counts as importing pkg.name when
    that is a module, else pkg itself."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def lifecycle(module: str) -> str:
    """modeling.pretrain.runner -> pretrain"""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges.setdefault(lifecycle(source), set())
        edges[lifecycle(source)] |= {lifecycle(t) for t in targets if lifecycle(t) != lifecycle(source)}
    return edges


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph = module_graph()
    packages = package_graph(graph)
    for source in sorted(packages):
        print(f"{source:<10} -> {', '.join(sorted(packages[source])) or '(nothing)'}")
    problems = circles(graph) + circles(packages)
    for circle in problems:
        print("circle: " + " -> ".join(circle))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
