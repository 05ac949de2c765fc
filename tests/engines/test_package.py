"""The engines sit below the models: no engine module names a model module, anywhere in it."""

from __future__ import annotations

import ast
from pathlib import Path

import cfrec.engines

ENGINES = Path(cfrec.engines.__file__).parent


def test_engines_never_import_models() -> None:
    files = sorted(ENGINES.glob("*.py"))
    assert len(files) >= 9
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n == "cfrec.models" or n.startswith("cfrec.models.")]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"


def test_importing_the_package_loads_no_engine() -> None:
    import subprocess
    import sys

    code = ("import sys, cfrec.engines; "
            "print(sorted(m for m in sys.modules if m.startswith('cfrec.engines.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
