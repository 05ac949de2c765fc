"""The course notebooks run top to bottom: each is re-executed from scratch with nbclient in a
fresh ``python3`` kernel (ipykernel of the interpreter running the tests) and any cell error
fails the test. On ML-100K when the data home has it, else on cfrec's synthetic stand-in (the
notebooks fall back by themselves). About 1.5-2 minutes a notebook on 2 cores."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("nbclient", reason="needs the notebooks extra: pip install -e '.[notebooks]'")
pytest.importorskip("nbformat", reason="needs the notebooks extra: pip install -e '.[notebooks]'")
pytest.importorskip("ipykernel", reason="needs the notebooks extra: pip install -e '.[notebooks]'")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
#: Seconds one cell may run (the slowest, NeuMF on five folds, takes under a minute on 2 cores).
CELL_TIMEOUT = 240


def _runner() -> ModuleType:
    """notebooks/run_notebooks.py (what ``make notebooks`` runs), imported from its path."""
    spec = importlib.util.spec_from_file_location("run_notebooks", NOTEBOOKS / "run_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNNER.NOTEBOOKS)
def test_notebook_executes_without_errors(name: str) -> None:
    nb, seconds = RUNNER.execute(NOTEBOOKS / name, timeout=CELL_TIMEOUT)
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.get("execution_count") for cell in code_cells), f"{name}: a code cell did not run"


def test_committed_notebooks_carry_their_outputs() -> None:
    """The notebooks are committed executed (figures included) and stay small."""
    import nbformat

    for name in RUNNER.NOTEBOOKS:
        path = NOTEBOOKS / name
        nb = nbformat.read(path, as_version=4)
        outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
        assert outputs, f"{name} is committed without outputs: run `make notebooks`"
        assert not [out for out in outputs if out.get("output_type") == "error"], f"{name} holds an error"
        assert any("image/png" in out.get("data", {}) for out in outputs), f"{name} has no figure"
        assert path.stat().st_size < 1_500_000, f"{name} is {path.stat().st_size:,} bytes"
