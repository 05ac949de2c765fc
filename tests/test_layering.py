"""The package's import graph: no cycle among cfrec's modules, counting every import (at module
level, inside functions and under ``TYPE_CHECKING``: a deferred import hides a circle from Python,
not from a reader), and the core never imports the outer layers (cli, serve, app, testing)."""

from __future__ import annotations

import ast
from pathlib import Path

import cfrec

SRC = Path(cfrec.__file__).parent
OUTER = ("cfrec.cli", "cfrec.serve", "cfrec.app", "cfrec.testing")


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str], *, deferred: bool = True) -> set[str]:
    """cfrec modules ``path`` imports: at module level and, with ``deferred``, also inside
    functions and classes and under ``TYPE_CHECKING`` (where a type is named for annotations)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def record(node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("cfrec"))
        elif node.module and node.module.startswith("cfrec"):
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            found.update(subs)
            if len(subs) < len(node.names):  # a name defined in the module itself
                found.add(node.module)

    def visit(nodes: list[ast.stmt]) -> None:  # module level only
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                record(node)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    if deferred:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                record(node)
    else:
        visit(tree.body)
    return {m for m in found if m in modules}


def _graph(*, deferred: bool = True) -> dict[str, set[str]]:
    files = {(_module_name(p)): p for p in SRC.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, modules, deferred=deferred) - {name} for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            found = walk(name)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    graph = _graph()
    assert len(graph) > 40  # the whole package was read
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_deferred_and_type_checking_imports(tmp_path: Path) -> None:
    """The graph counts imports inside functions and under TYPE_CHECKING, so a circle hidden by
    either is still found (and module-level-only reading would miss both)."""
    lower, higher = tmp_path / "lower.py", tmp_path / "higher.py"
    lower.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cfrec.higher import H\n"
                     "def f():\n    from cfrec.higher import g\n", encoding="utf-8")
    higher.write_text("from cfrec.lower import f\n", encoding="utf-8")
    modules = {"cfrec.lower", "cfrec.higher"}
    graph = {"cfrec.lower": _imports(lower, modules), "cfrec.higher": _imports(higher, modules)}
    assert _cycle(graph) in (["cfrec.higher", "cfrec.lower", "cfrec.higher"],
                             ["cfrec.lower", "cfrec.higher", "cfrec.lower"])
    assert _imports(lower, modules, deferred=False) == set()


def test_the_core_never_imports_the_outer_layers() -> None:
    for name, deps in _graph().items():
        if name.startswith(OUTER) or name == "cfrec.__main__":
            continue
        outer = sorted(d for d in deps if d.startswith(OUTER))
        assert not outer, f"{name} imports {outer}"


#: The most lines one module of the package may hold: past it, a module does more than one job.
MAX_MODULE_LINES = 700


def test_no_module_is_longer_than_the_limit() -> None:
    long = {str(path.relative_to(SRC)): n for path in SRC.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along a seam): {long}"
