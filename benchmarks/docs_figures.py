"""Regenerate the figures of README.md and docs/ that a cheap command produces.

A figure is the text between ``<!-- figure: NAME -->`` and ``<!-- /figure -->`` in a Markdown
file; :data:`SOURCES` says which command makes each one and how its output becomes the text.
``python benchmarks/docs_figures.py`` (``make docs-figures``) rewrites them in place;
``--check`` rewrites nothing and exits 1 naming every figure that differs from what the command
prints now (``tests/benchmarks/test_docs_figures.py`` runs it).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- figure: (?P<name>[\w-]+) -->(?P<body>.*?)<!-- /figure -->", re.S)


@dataclass(frozen=True)
class Source:
    """One command whose output fills the figures ``render`` returns (name -> text)."""

    args: tuple[str, ...]
    render: Callable[[str], dict[str, str]]


def _cfrec(args: tuple[str, ...], out: Path) -> str:
    cmd = [sys.executable, "-m", "cfrec", *(a.replace("{out}", str(out)) for a in args)]
    env = {**os.environ, "COLUMNS": "1000"}  # one line per message, as a wide terminal shows it
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def _lab_temporal(stdout: str) -> dict[str, str]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("test RMSE"))
    rmse = re.search(r"test RMSE (\d\.\d{4})", line)
    base = re.search(r"bias baseline (\d\.\d{4})", line)
    assert rmse and base, line
    return {
        "lab-temporal": ("\n```bash\ncfrec train ml-100k --model mf --preset lab --split temporal --out models/lab\n"
                         f"# {line.strip()}\n```\n"),
        "lab-temporal-rmse": f"**{rmse.group(1)}**",
        "lab-temporal-baseline": f"**{base.group(1)}**",
        "lab-temporal-rmse-plain": rmse.group(1),
    }


SOURCES: dict[str, Source] = {
    "lab-temporal": Source(("train", "ml-100k", "--model", "mf", "--preset", "lab", "--split", "temporal",
                            "--out", "{out}/lab"), _lab_temporal),
}
FILES = ("README.md", "docs/evaluation.md")


def regenerate(only: set[str] | None = None) -> dict[str, str]:
    """Every figure's text as the commands print it now (``only``: those sources)."""
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in SOURCES.items():
            if only is None or name in only:
                texts.update(source.render(_cfrec(source.args, Path(tmp))))
    return texts


def apply(texts: dict[str, str], *, write: bool) -> list[str]:
    """Put ``texts`` into the marked figures; returns ``file: name`` of each that differed."""
    stale = []
    for rel in FILES:
        path = ROOT / rel
        page = path.read_text(encoding="utf-8")

        def swap(m: re.Match[str], rel: str = rel) -> str:
            name = m.group("name")
            if name not in texts:
                return m.group(0)
            if m.group("body") != texts[name]:
                stale.append(f"{rel}: {name}")
            return f"<!-- figure: {name} -->{texts[name]}<!-- /figure -->"

        new = MARK.sub(swap, page)
        if write and new != page:
            path.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Rewrite nothing; exit 1 if a figure differs.")
    parser.add_argument("--only", action="append", help="Only this source (repeatable).")
    ns = parser.parse_args(argv)
    stale = apply(regenerate(set(ns.only) if ns.only else None), write=not ns.check)
    for item in stale:
        print(("stale: " if ns.check else "rewrote: ") + item)
    return 1 if ns.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
