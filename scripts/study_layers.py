"""The floors of a package: each module's floor is one above the highest floor it imports from (imports inside
functions included), so the modules a package builds on sit at floor 0 and its entry points on top. An import
that runs back up (to a module at or above the importer's floor) exists only inside an import circle; the
script counts them and lists each floor's modules with their sizes in lines.

    python scripts/study_layers.py [PACKAGE]      (default: study)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def module_name(path: Path) -> str:
    """The dotted module name of a source file."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, package: str, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in modules and n.startswith(package)}
    return out


def floors(package: str) -> tuple[dict[str, int], dict[str, set[str]], int]:
    """(floor of each module, its imports, the number of imports that run back up)."""
    paths = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph = {m: imports(p, package, set(paths)) - {m} for m, p in paths.items()}
    floor: dict[str, int] = {}
    back_up = 0

    def visit(module: str, stack: tuple[str, ...]) -> int:
        nonlocal back_up
        if module in floor:
            return floor[module]
        highest = -1
        for dep in graph[module]:
            if dep in stack:  # a circle: this import runs back up
                back_up += 1
                continue
            highest = max(highest, visit(dep, (*stack, dep)))
        floor[module] = highest + 1
        return floor[module]

    for module in sorted(graph):
        visit(module, (module,))
    return floor, graph, back_up


def main(package: str = "study") -> None:
    floor, graph, back_up = floors(package)
    paths = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    print(f"{package}/: {max(floor.values()) + 1} floors, {len(floor)} modules, {back_up} imports running back up")
    for level in range(max(floor.values()) + 1):
        members = sorted(m for m, f in floor.items() if f == level)
        sizes = ", ".join(f"{m.removeprefix(package + '.')} ({len(paths[m].read_text().splitlines())})"
                          for m in members)
        print(f"floor {level}: {sizes}")


if __name__ == "__main__":
    main(*sys.argv[1:])
