"""Execute the course notebooks from scratch with nbclient (``make notebooks``; the CI test).

    python notebooks/run_notebooks.py                  # run both, report errors, save nothing
    python notebooks/run_notebooks.py --inplace        # run both and save them with their outputs
    python notebooks/run_notebooks.py --inplace 01-collaborative-filtering.ipynb

Each notebook runs in a fresh ``python3`` kernel (ipykernel of the interpreter running this
script) with the notebooks folder as its working directory. A failing cell stops the run and
exits with status 1, naming the notebook and the cell. Needs the ``notebooks`` extra
(``pip install -e ".[notebooks]"``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ("01-collaborative-filtering.ipynb", "02-neural-collaborative-filtering.ipynb")


def execute(path: str | Path, *, timeout: int = 300, kernel_name: str = "python3") -> tuple[object, float]:
    """Run every cell of the notebook at ``path`` in a fresh kernel; returns (notebook, seconds).

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell and
    ``nbclient.exceptions.CellTimeoutError`` when a cell runs longer than ``timeout`` seconds.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", help=f"notebooks to run (default: {', '.join(NOTEBOOKS)})")
    parser.add_argument("--inplace", action="store_true", help="save each executed notebook over itself")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell (default 300)")
    args = parser.parse_args(argv)

    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    paths = [Path(p) if Path(p).exists() else HERE / p for p in (args.notebooks or NOTEBOOKS)]
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        try:
            nb, seconds = execute(path, timeout=args.timeout)
        except (CellExecutionError, CellTimeoutError) as exc:
            print(f"{path.name}: a cell failed:\n{exc}", file=sys.stderr)
            return 1
        print(f"{path.name}: {seconds:.1f} s", flush=True)
        if args.inplace:
            nbformat.write(nb, path)
            print(f"saved {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
