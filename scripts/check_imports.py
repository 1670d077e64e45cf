#!/usr/bin/env python3
"""Import hygiene of mmcurate/: no import circles (module-level and function-level imports alike) and no private
name (``_x``) imported from another module. Run by scripts/lint.sh; exits 1 naming each problem.

A circle is a strongly connected component of the graph "module A imports module B" (Tarjan's algorithm), where
``from pkg import name`` points at ``pkg.name`` when that is a module and at ``pkg`` otherwise. Private
*modules* (``mmcurate._native``, ``ops._cuda``) are fine to import; private *names* across modules are not.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mmcurate"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def absolute(mod: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan(mods: dict[str, Path]):
    """(edges: module -> imported mmcurate modules, problems: private-name imports)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    problems = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == PACKAGE:
                        target = a.name
                        while target not in mods and "." in target:
                            target = target.rsplit(".", 1)[0]
                        if target != mod:
                            edges[mod].add(target)
            elif isinstance(node, ast.ImportFrom):
                src = absolute(mod, is_package, node)
                if src.split(".")[0] != PACKAGE:
                    continue
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    target = sub if sub in mods else src
                    if target in mods and target != mod:
                        edges[mod].add(target)
                    is_extension = any((ROOT / Path(*src.split("."))).glob(f"{a.name}.*.so"))
                    if target == src and a.name.startswith("_") and not a.name.startswith("__") and not is_extension:
                        problems.append(f"{path.relative_to(ROOT)}:{node.lineno}: private name {a.name} from {src}")
    return edges, problems


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def main() -> int:
    mods = modules()
    edges, problems = scan(mods)
    # a package's __init__ re-exporting its submodules is not a circle with them
    for mod in mods:
        for t in list(edges[mod]):
            if mod.startswith(t + ".") and mods[t].name == "__init__.py":
                edges[mod].discard(t)
    for comp in circles(edges):
        problems.append("import circle: " + " <-> ".join(comp))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
