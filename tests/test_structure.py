"""The package's imports form no circle, counting imports inside functions (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

import gradkern

SRC = Path(gradkern.__file__).resolve().parent


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the gradkern modules it imports anywhere in its source."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                cands = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in cands if c in modules and c != name}
        graph[name] = deps
    return graph


def _cycles(graph):
    seen, stack, on, found = set(), [], set(), []

    def visit(n):
        seen.add(n)
        stack.append(n)
        on.add(n)
        for m in sorted(graph[n]):
            if m in on:
                found.append(stack[stack.index(m):] + [m])
            elif m not in seen:
                visit(m)
        stack.pop()
        on.discard(n)

    for n in sorted(graph):
        if n not in seen:
            visit(n)
    return found


def test_the_cycle_finder_finds_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = import_graph()
    assert "gradkern.model" in graph and "gradkern.checkpoint" in graph["gradkern.model"]
    # a package's __init__ importing its children is not a circle of the code's design
    inner = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in graph.items()}
    assert _cycles(inner) == []


def test_checkpoint_never_imports_the_model():
    graph = import_graph()
    assert not graph["gradkern.checkpoint"] & {"gradkern.model", "gradkern.trainer"}
    assert "gradkern.model" not in graph["gradkern.trainer"]
