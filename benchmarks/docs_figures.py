"""Regenerate the figures of README.md and docs/: every number that comes from running cfrec.

Two kinds of marked text hold them:

* ``<!-- figure: NAME -->TEXT<!-- /figure -->``: a figure a command regenerates. :data:`SOURCES`
  says which cfrec commands make it and how their output becomes the text. The cheap sources
  (about a minute in all on 2 cores) run by default and are checked by the test suite; the
  expensive ones (the five-fold benchmark, the lab's tuning exercises: tens of minutes) run with
  ``--all``.
* ``<!-- measured: NAME cmd="COMMAND" date="YYYY-MM-DD" machine="..." -->TEXT<!-- /measured -->``:
  a recorded measurement too costly or too machine-bound to regenerate here (peer libraries in
  the same run, timings, ML-10M and ML-25M sizes). It says the command that produced it and
  when and where; this script checks that every such marker says all three.

A figure-like number (a metric with three or more decimals, a count with thousands separators,
a percentage, a timing) outside both kinds of marker, code and comments is an error
(:func:`unmarked`), so no measured number can enter the docs unmarked.

``python benchmarks/docs_figures.py`` (``make docs-figures``) rewrites the cheap figures in place,
``--all`` every figure; ``--check`` rewrites nothing and exits 1 naming every figure that differs
from what the commands print now, every unmarked number and every incomplete measured marker
(``tests/benchmarks/test_docs_figures.py`` runs the cheap check). ``--reuse DIR`` keeps each
source's outputs in ``DIR/NAME`` and reuses them when present (to render again without rerunning).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARK = re.compile(r"<!-- figure: (?P<name>[\w-]+) -->(?P<body>.*?)<!-- /figure -->", re.S)
MEASURED = re.compile(r"<!-- measured: (?P<name>[\w-]+)(?P<attrs>[^>]*?)-->(?P<body>.*?)<!-- /measured -->", re.S)
ATTR = re.compile(r'(\w+)="([^"]*)"')
#: What counts as a figure when it stands unmarked in prose: a number with two or more decimals
#: (or a scientific 1.4e-6), a count with thousands separators, a percentage, a timing.
FIGURE_LIKE = re.compile(
    r"(?<![\w.])(?:\d+\.\d{2,}|\d+(?:\.\d+)?e-\d+|\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?%"
    r"|\d+(?:\.\d+)?(?: ?(?:ms|s|MB|GB))(?![\w-]))"
)
#: Figure-like text that is not a measured figure but a setting (a hyperparameter, a protocol's
#: share, a detection rule), as regular expressions per page.
NOT_FIGURES: dict[str, tuple[str, ...]] = {
    "docs/evaluation.md": (r"torch 2\.13", r"N\(0, 0\.01\)", r"lr 0\.005", r"weight\s+decay 1e-5", r"random 20%", r"up to\s+1,000 rated neighbours",
                           r"on 10% of the training part"),
    "docs/data-files.md": (r"at least 90% of",),
    "README.md": (r"Python >= 3\.11",),
}


@dataclass(frozen=True)
class Source:
    """Commands (cfrec argument lists, ``{out}``: the source's scratch folder) and how the last
    one's output becomes figure texts: ``render(stdout, out) -> {name: text}``."""

    commands: tuple[tuple[str, ...], ...]
    render: Callable[[str, Path], dict[str, str]]
    cheap: bool = True


def _cfrec(args: tuple[str, ...], out: Path) -> str:
    cmd = [sys.executable, "-m", "cfrec", *(a.replace("{out}", str(out)) for a in args)]
    env = {**os.environ, "COLUMNS": "1000"}  # one line per message, as a wide terminal shows it
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return done.stdout


def _command_line(args: tuple[str, ...]) -> str:
    return "cfrec " + " ".join(a.replace("{out}/", "").replace("{out}", ".") for a in args)


# ---------------------------------------------------------------------- formatting
def _f4(x: float) -> str:
    return f"{x:.4f}"


def _count(n: float) -> str:
    return f"{int(n):,}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _seconds(x: float) -> str:
    """Fit seconds as the tables print them: two significant figures, at least two decimals below 1."""
    if x < 1:
        return f"{x:.2f}"
    if x < 10:
        return f"{x:.1f}"
    return f"{x:.0f}"


def _bold_best(cells: list[str], values: list[float | None], *, low: bool) -> list[str]:
    """Bold the best of a column (lowest when ``low``)."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    if not known:
        return cells
    best = (min if low else max)(known)[1]
    out = list(cells)
    out[best] = f"**{out[best]}**"
    return out


# ---------------------------------------------------------------------- the lab's temporal split
LAB_TEMPORAL = ("train", "ml-100k", "--model", "mf", "--preset", "lab", "--split", "temporal", "--out", "{out}/lab")


def _lab_temporal(stdout: str, out: Path | None = None) -> dict[str, str]:
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
        "lab-temporal-rmse-about": f"about {float(rmse.group(1)):.2f}",
    }


# ---------------------------------------------------------------------- cold start and same-second groups
TEMPORAL_ONLINE = (
    ("train", "ml-100k", "--model", "baseline", "--split", "temporal", "--out", "{out}/baseline"),
    ("evaluate", "{out}/baseline", "--online", "--json"),
)


def _temporal_online(stdout: str, out: Path | None = None) -> dict[str, str]:
    obj = json.loads(stdout)
    groups = {g["group"]: g for g in obj["online"]["groups"]}
    n_test = obj["online"]["n_test"]
    new_users = groups["new users"]["n"]
    cold = obj["cold_start"]
    assert cold["unknown_user"] == new_users, (cold, groups["new users"])
    any_unknown = cold["unknown_either"]
    ss = obj["online"]["same_second_groups"]
    sizes = {int(k): v for k, v in ss["group_sizes"].items()}
    largest = ss["largest_group"]
    peek = ss["n_predicted_after_peer_by_rating"]
    return {
        "temporal-new-users": (f"**{_count(new_users)} of the {_count(n_test)} test ratings "
                               f"({_pct(new_users / n_test)}) belong to users with no training rating**\n"
                               f"({_count(any_unknown)}, {_pct(any_unknown / n_test)}, have an unknown user or item)"),
        "readme-temporal-new-users": (f"About {round(100 * new_users / n_test)}% of the test ratings then belong\n"
                                      f"to users who have no rating in the training part ({_count(new_users)} of "
                                      f"{_count(n_test)})"),
        "temporal-known-share": f"{round(100 * (1 - new_users / n_test))}%",
        "same-second-groups": (
            f"{_count(ss['n_in_multi_groups'])} of the {_count(n_test)} test ratings "
            f"({_pct(ss['share_in_multi_groups'])}) share their second with another rating of the\n"
            f"same user: {_count(ss['n_multi_groups'])} groups of 2 to {largest} ratings (mean "
            f"{ss['mean_multi_group_size']:.2f}; {_count(sizes.get(2, 0))} pairs, {_count(sizes.get(3, 0))} triples ... "
            f"{_count(sizes.get(largest, 0))} groups\nof {largest})"),
        "same-second-peek": f"{_count(peek)}\ntest ratings ({_pct(peek / n_test)})",
    }


# ---------------------------------------------------------------------- ML-100K folds u1..u5
FOLD_MODELS = "baseline,mf,als,svdpp,neumf,bmf,ials,ease,itemknn,itemknn-rank,bpr,multvae,two-stage"
FOLDS = (("benchmark", "ml-100k", "--protocol", "folds", "--models", FOLD_MODELS, "--json", "{out}/bench.json"),)
#: README row labels and the ranking table's (the models as the tables name them).
FOLD_LABELS: dict[str, tuple[str, str]] = {
    "pop": ("pop (most popular)", "pop (most rated)"),
    "baseline": ("baseline", "baseline"),
    "mf": ("mf (BiasedMF)", "mf"),
    "als": ("als", "als"),
    "svdpp": ("svdpp", "svdpp"),
    "neumf": ("neumf (rating mode)", "neumf (rating mode)"),
    "bmf": ("bmf (Bayesian MF, Gibbs)", "bmf"),
    "ials": ("ials", "ials (implicit ALS; defaults chosen on logs)"),
    "ease": ("ease", "ease"),
    "itemknn": ("itemknn (item kNN, KNNBaseline-style)", "itemknn (rating defaults)"),
    "itemknn-rank": ("itemknn-rank (cosine, sums over 1,000 neighbours)",
                     "itemknn-rank (cosine, up to 1,000 rated neighbours summed)"),
    "bpr": ("bpr", "bpr"),
    "multvae": ("multvae", "multvae"),
    "two-stage": ("two-stage (EASE → BiasedMF)", "two-stage (EASE candidates, BiasedMF order)"),
}


def _folds(stdout: str, out: Path) -> dict[str, str]:
    obj = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    rows = [r for r in obj["rows"] if r["model"] in FOLD_LABELS]
    rows.sort(key=lambda r: list(FOLD_LABELS).index(r["model"]))
    k = obj["k"]
    nd, rc = f"ndcg@{k}", f"recall@{k}"

    def rated(r: dict[str, Any]) -> bool:
        return bool(r["predicts_ratings"]) and r["mean"].get("rmse") is not None

    rmse = [r["mean"]["rmse"] if rated(r) else None for r in rows]
    ndcg = [r["mean"][nd] for r in rows]
    rec = [r["mean"][rc] for r in rows]
    readme = ["| model | RMSE | NDCG@10 | Recall@10 | fit s / fold |", "|---|---:|---:|---:|---:|"]
    c_rmse = _bold_best([_f4(x) if x is not None else "n/a" for x in rmse], rmse, low=True)
    c_nd = _bold_best([_f4(x) for x in ndcg], ndcg, low=False)
    c_rc = _bold_best([_f4(x) for x in rec], rec, low=False)
    best_rmse = min((x, i) for i, x in enumerate(rmse) if x is not None)[1]
    best_nd = max((x, i) for i, x in enumerate(ndcg))[1]
    for i, r in enumerate(rows):
        label = FOLD_LABELS[r["model"]][0]
        if i in (best_rmse, best_nd):
            name, _, rest = label.partition(" ")
            label = f"**{name}**" + (f" {rest}" if rest else "")
        readme.append(f"| {label} | {c_rmse[i]} | {c_nd[i]} | {c_rc[i]} | {_seconds(r['mean']['fit_seconds'])} |")

    ranking = ["| model | NDCG@10 | Recall@10 |", "|---|---:|---:|"]
    for i, r in enumerate(rows):
        label = FOLD_LABELS[r["model"]][1]
        cells = [f"{_f4(r['mean'][m])} ± {_f4(r['std'][m])}" for m in (nd, rc)]
        if i == best_nd:
            label, cells = f"**{label}**", [f"**{c}**" for c in cells]
        ranking.append(f"| {label} | {cells[0]} | {cells[1]} |")
    command = _command_line(FOLDS[0][:-2])
    mean_ndcg = {r["model"]: r["mean"][nd] for r in rows}
    return {
        "itemknn-ndcg": _f4(mean_ndcg["itemknn"]),
        "itemknn-rank-ndcg": _f4(mean_ndcg["itemknn-rank"]),
        "ials-ndcg-3": f"{mean_ndcg['ials']:.3f}",
        "ml100k-folds-command": f"`{command}`",
        "ml100k-folds": "\n\n" + "\n".join(readme) + "\n\n",
        "ml100k-ranking": "\n\n" + "\n".join(ranking) + "\n\n",
    }


# ---------------------------------------------------------------------- the lab's tuning exercises
LAB_TUNE = (
    ("tune", "ml-100k", "--preset", "lab-dim", "--json"),
)
LAB_WD = (
    ("tune", "ml-100k", "--preset", "lab-wd", "--json"),
)


def _trials(stdout: str, param: str) -> tuple[list[tuple[float, float, float]], dict[str, Any]]:
    obj = json.loads(stdout)
    rows = [(float(t[param]), float(t["train_rmse"]), float(t["valid_rmse"]))
            for t in obj["trials"] if t.get("state", "complete") == "complete"]
    rows.sort()
    return rows, obj


def _tune_table(rows: list[tuple[float, float, float]], head: str, fmt: Callable[[float], str]) -> str:
    best = min(range(len(rows)), key=lambda i: rows[i][2])
    lines = [f"| {head} | train RMSE | valid RMSE |", "|---:|---:|---:|"]
    for i, (v, tr, va) in enumerate(rows):
        valid = f"**{_f4(va)}**" if i == best else _f4(va)
        lines.append(f"| {fmt(v)} | {_f4(tr)} | {valid} |")
    return "\n\n" + "\n".join(lines) + "\n\n"


def _lab_dim(stdout: str, out: Path | None = None) -> dict[str, str]:
    rows, _ = _trials(stdout, "n_factors")
    return {"lab-dim": _tune_table(rows, "n_factors", lambda v: f"{int(v)}")}


def _wd(v: float) -> str:
    if v == 0:
        return "0"
    text = f"{v:.0e}".replace("e-0", "e-")
    return text + (" (lab)" if abs(v - 1e-5) < 1e-12 else "")


def _lab_wd(stdout: str, out: Path | None = None) -> dict[str, str]:
    rows, obj = _trials(stdout, "weight_decay")
    lab = next(r for r in rows if abs(r[0] - 1e-5) < 1e-12)
    best = min(rows, key=lambda r: r[2])
    test = obj["test"]
    return {
        "lab-wd": _tune_table(rows, "weight_decay", _wd),
        "lab-wd-gap": (f"with weight decay\n1e-5 the training error is {lab[1]:.2f} while validation is {lab[2]:.2f}; "
                       f"{_wd(best[0])} gives the\nbest validation RMSE (refitted on the whole train part, test RMSE "
                       f"{_f4(test['tuned'])}"),
    }


SOURCES: dict[str, Source] = {
    "lab-temporal": Source((LAB_TEMPORAL,), _lab_temporal),
    "temporal-online": Source(TEMPORAL_ONLINE, _temporal_online),
    "ml100k-folds": Source(FOLDS, _folds, cheap=False),
    "lab-dim": Source(LAB_TUNE, _lab_dim, cheap=False),
    "lab-wd": Source(LAB_WD, _lab_wd, cheap=False),
}
#: Every figure name each source renders (kept in step with the render functions by the tests).
FIGURES: dict[str, tuple[str, ...]] = {
    "lab-temporal": ("lab-temporal", "lab-temporal-rmse", "lab-temporal-baseline", "lab-temporal-rmse-plain",
                     "lab-temporal-rmse-about"),
    "temporal-online": ("temporal-new-users", "readme-temporal-new-users", "temporal-known-share", "same-second-groups",
                        "same-second-peek"),
    "ml100k-folds": ("ml100k-folds-command", "ml100k-folds", "ml100k-ranking", "itemknn-ndcg", "itemknn-rank-ndcg",
                     "ials-ndcg-3"),
    "lab-dim": ("lab-dim",),
    "lab-wd": ("lab-wd", "lab-wd-gap"),
}


def pages() -> list[str]:
    """README.md and every docs/*.md page, relative to :data:`ROOT`."""
    out = ["README.md"] if (ROOT / "README.md").is_file() else []
    return out + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))


def selected(cheap_only: bool, only: set[str] | None = None) -> list[str]:
    return [n for n, s in SOURCES.items() if (only is None or n in only) and (s.cheap or not cheap_only)]


def regenerate(names: list[str], reuse: Path | None = None) -> dict[str, str]:
    """Every figure text the named sources' commands print now (``reuse``: a folder of earlier
    outputs, one subfolder per source, used where present and filled where not)."""
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            source = SOURCES[name]
            out = (reuse or Path(tmp)) / name
            saved = out / "stdout"
            if reuse is not None and saved.is_file():
                stdout = saved.read_text(encoding="utf-8")
            else:
                if out.exists():
                    shutil.rmtree(out)
                out.mkdir(parents=True)
                stdout = ""
                for args in source.commands:
                    stdout = _cfrec(args, out)
                saved.write_text(stdout, encoding="utf-8")
            texts.update(source.render(stdout, out))
    return texts


def apply(texts: dict[str, str], *, write: bool, files: list[str] | None = None) -> list[str]:
    """Put ``texts`` into the marked figures; returns ``file: name`` of each that differed."""
    stale = []
    for rel in files if files is not None else pages():
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


def measured_problems(page: str, rel: str) -> list[str]:
    """Measured markers that do not say their command, date and machine."""
    out = []
    for m in MEASURED.finditer(page):
        attrs = dict(ATTR.findall(m.group("attrs")))
        missing = [a for a in ("cmd", "date", "machine") if not attrs.get(a)]
        if missing:
            out.append(f"{rel}: measured {m.group('name')} does not say its {', '.join(missing)}")
        elif not re.fullmatch(r"\d{4}-\d{2}-\d{2}", attrs["date"]):
            out.append(f"{rel}: measured {m.group('name')}: date {attrs['date']!r} is not YYYY-MM-DD")
    return out


def unmarked(page: str, rel: str) -> list[str]:
    """Figure-like numbers of ``page`` outside markers, code and comments, as ``file:line: text``."""
    def blank(m: re.Match[str]) -> str:  # keeps line numbers
        return re.sub(r"[^\n]", " ", m.group(0))

    text = MARK.sub(blank, page)
    text = MEASURED.sub(blank, text)
    text = re.sub(r"```.*?```", blank, text, flags=re.S)
    text = re.sub(r"<!--.*?-->", blank, text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", blank, text)
    for allowed in NOT_FIGURES.get(rel, ()):
        text = re.sub(allowed, blank, text)
    out = []
    for m in FIGURE_LIKE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out.append(f"{rel}:{line}: unmarked figure {m.group(0)!r}")
    return out


def audit(files: list[str] | None = None) -> list[str]:
    """Every figure marker with no source, measured marker without its record, unmarked figure."""
    known = {n for names in FIGURES.values() for n in names}
    problems = []
    for rel in files if files is not None else pages():
        page = (ROOT / rel).read_text(encoding="utf-8")
        problems += [f"{rel}: figure {m.group('name')} has no source" for m in MARK.finditer(page)
                     if m.group("name") not in known]
        problems += measured_problems(page, rel)
        problems += unmarked(page, rel)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Rewrite nothing; exit 1 if a figure differs.")
    parser.add_argument("--all", action="store_true", help="Also the expensive sources (tens of minutes).")
    parser.add_argument("--only", action="append", help="Only this source (repeatable).")
    parser.add_argument("--reuse", type=Path, help="Keep each source's outputs here and reuse them when present.")
    parser.add_argument("--list", action="store_true", help="List the sources and measured figures, run nothing.")
    ns = parser.parse_args(argv)
    if ns.list:
        for name, source in SOURCES.items():
            cmds = "; ".join(_command_line(c) for c in source.commands)
            print(f"{name} ({'cheap' if source.cheap else '--all'}): {cmds}")
        for rel in pages():
            for m in MEASURED.finditer((ROOT / rel).read_text(encoding="utf-8")):
                attrs = dict(ATTR.findall(m.group("attrs")))
                print(f"{rel}: measured {m.group('name')} ({attrs.get('date')}, {attrs.get('machine')}): "
                      f"{attrs.get('cmd')}")
        return 0
    unknown = set(ns.only or ()) - set(SOURCES)
    if unknown:
        parser.error(f"no source {', '.join(sorted(unknown))}; sources: {', '.join(SOURCES)}")
    problems = audit()
    stale = apply(regenerate(selected(not ns.all, set(ns.only) if ns.only else None), ns.reuse), write=not ns.check)
    for item in problems:
        print(item)
    for item in stale:
        print(("stale: " if ns.check else "rewrote: ") + item)
    return 1 if problems or (ns.check and stale) else 0


if __name__ == "__main__":
    raise SystemExit(main())
