"""The package's import graph: no cycles among module-level imports, and the core never
imports the outer layers (cli, serve, app)."""

from __future__ import annotations

import ast
from pathlib import Path

import cfrec

SRC = Path(cfrec.__file__).parent
OUTER = ("cfrec.cli", "cfrec.serve", "cfrec.app")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """cfrec modules imported when ``path`` is imported (not inside functions or TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("cfrec"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cfrec"):
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules
                found.update(subs)
                if len(subs) < len(node.names):  # a name defined in the module itself
                    found.add(node.module)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return {m for m in found if m in modules}


def _graph() -> dict[str, set[str]]:
    files = {(_module_name(p)): p for p in SRC.rglob("*.py")}
    modules = set(files)
    return {name: _top_level_imports(path, modules) - {name} for name, path in files.items()}


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert len(graph) > 40  # the whole package was read


def test_the_core_never_imports_the_outer_layers() -> None:
    for name, deps in _graph().items():
        if name.startswith(OUTER) or name == "cfrec.__main__":
            continue
        outer = sorted(d for d in deps if d.startswith(OUTER))
        assert not outer, f"{name} imports {outer}"
