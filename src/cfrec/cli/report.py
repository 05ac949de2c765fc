"""CLI commands ``report``, ``quickstart`` and ``export``.

* ``report`` loads a model folder, reloads its dataset (``--dataset`` or the one the model
  records; a quickstart model on synthetic data is regenerated from its recorded seed), finds the
  split it was trained on (``--split`` overrides) and writes one self-contained HTML page.
* ``quickstart`` runs the whole pipeline on ML-100K (or, offline, on a synthetic stand-in it
  labels as such) and prints where the report is.
* ``export`` writes item and user embeddings with raw ids and titles (Parquet or CSV plus .npy).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer

from cfrec.cli._app import app, console, err_console, fail
from cfrec.cli._options import load_data, with_data_options
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError


def _say(message: str, *, style: str | None = None) -> None:
    console.print(message, style=style, highlight=False, soft_wrap=True, markup=False)


def _load_model(model_dir: Path) -> Any:
    from cfrec.models.base import Recommender

    return Recommender.load(model_dir)


def _dataset_for(model: Any, dataset: str | None, options: DataOptions) -> Any:
    """The dataset to report on: ``--dataset``, else the model's recorded source or name."""
    from cfrec.data import load_dataset

    info = getattr(model, "fit_info_", {}) or {}
    if dataset:
        return load_data(dataset, options)
    synth = info.get("synthetic")
    if isinstance(synth, dict):
        from cfrec.data import make_synthetic

        data = make_synthetic(*synth["shape"], seed=synth.get("seed", 0), name=synth.get("name", "synthetic"))
        return data
    candidates = [c for c in (info.get("source"), info.get("dataset")) if c]
    if not candidates:
        raise CfrecError("the model does not record which dataset it was trained on; pass --dataset")
    errors = []
    for ref in dict.fromkeys(candidates):
        try:
            return load_data(ref, options) if not options.is_default() else load_dataset(ref)
        except CfrecError as exc:
            errors.append(f"{ref}: {exc}")
    raise CfrecError("cannot reload the model's dataset (" + "; ".join(errors) + "); pass --dataset")


@app.command()
@with_data_options
def report(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train' or 'cfrec quickstart'.")],
    data_options: DataOptions,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    dataset: Annotated[str | None, typer.Option(help="Dataset name or path (default: the one the model "
                                                     "was trained on).")] = None,
    split: Annotated[str | None, typer.Option(help="Split spec whose test part is evaluated (default: the "
                                                   "split the model was trained on, found by fingerprint).")] = None,
    tuning: Annotated[list[Path] | None, typer.Option(help="Tuning trials (CSV or Parquet from 'cfrec tune') to "
                                                           "plot RMSE vs dimension / weight decay; repeatable.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Cut-off of the top-k lists.")] = 10,
    target_rmse: Annotated[float | None, typer.Option(help="Draw this RMSE as a target line on the "
                                                           "learning curves.")] = None,
) -> None:
    """Write a self-contained HTML report: data, split, metrics, plots, recommendations, similar items."""
    import pandas as pd

    from cfrec.app.report import build_report

    start = time.perf_counter()
    model = _load_model(model_dir)
    data = _dataset_for(model, dataset, data_options)
    trials = []
    for table in tuning or []:
        if not table.is_file():
            fail(f"{table}: no such file")
        try:
            trials.append(pd.read_parquet(table) if table.suffix.lower() == ".parquet" else pd.read_csv(table))
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            fail(f"{table}: cannot read tuning trials ({exc})")
    _say(f"report on {type(model).__name__} with {data.name} ({len(data):,} ratings)")
    rep = build_report(model, data, split=split, tuning=trials, k=k, target_rmse=target_rmse,
                       progress=lambda msg: _say(f"  {msg}"))
    path = rep.write(out)
    for note in rep.notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    key = "rmse" if model.metric_applies("rmse") else f"ndcg@{k}"
    value = rep.metrics.get(key)
    if value is not None:
        line = f"test {key.upper() if key == 'rmse' else key.replace('ndcg', 'NDCG')} {value:.4f} on split {rep.split_name}"
        if rep.baseline_metrics and rep.baseline_metrics.get(key) is not None:
            line += f" (baseline {rep.baseline_metrics[key]:.4f})"
        _say(line)
    _say(f"report written to {path.resolve()} ({path.stat().st_size / 1e6:.1f} MB, "
         f"{time.perf_counter() - start:.1f} s)")


@app.command()
@with_data_options
def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("cfrec-quickstart"),
    model: Annotated[str | None, typer.Option(help="Model to train (default: mf, the lab's BiasedMF "
                                                   "family).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (or ALS iterations) override.")] = None,
    split: Annotated[str, typer.Option(help="Split spec (default: each user's latest 20% held out).")]
    = "user-temporal:0.2",
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Use the built-in synthetic dataset "
                                                                "instead of ML-100K.")] = False,
    dataset: Annotated[str, typer.Option("--data", "--dataset", help="Dataset to load instead of ML-100K "
                                                                      "(a MovieLens name or a ratings file).")] = "ml-100k",
    data_options: DataOptions = DataOptions(),
    exercises: Annotated[bool, typer.Option("--exercises/--no-exercises", help="Run the course lab's "
                                            "seed exercises (embedding size, weight decay) for the "
                                            "report's tuning plots (about 20 s).")] = True,
) -> None:
    """The whole pipeline on ML-100K in under two minutes: statistics, training, evaluation,
    recommendations, similar items and an HTML report."""
    from cfrec.app.quickstart import run_quickstart

    # The progress lines below already say when synthetic data stands in; skip the log copy.
    logging.getLogger("cfrec.app.quickstart").setLevel(logging.ERROR)
    start = time.perf_counter()

    def progress(message: str) -> None:
        if message.startswith("SYNTHETIC DATA"):
            console.print(message, style="bold yellow", highlight=False, soft_wrap=True, markup=False)
        else:
            _say(f"[{time.perf_counter() - start:5.1f}s] {message}")

    result = run_quickstart(out, dataset=dataset, data_options=data_options, synthetic=synthetic, model=model, epochs=epochs,
                            split=split, exercises=exercises, progress=progress)
    tag = " [SYNTHETIC DATA]" if result.synthetic else ""
    _say("")
    _say(f"Results{tag}: {result.model_name} on {result.dataset}, split {result.split}", style="bold")
    for name in ("rmse", "mae", "precision@10", "ndcg@10", "hit_rate@10"):
        if name in result.metrics:
            base = (result.baseline_metrics or {}).get(name)
            extra = f"   (baseline {base:.4f})" if base is not None else ""
            _say(f"  {name:<13} {result.metrics[name]:.4f}{extra}")
    if result.recommender_metrics:
        _say(f"Recommendations {result.recommender_name}:", style="bold")
        for name in ("ndcg@10", "recall@10", "precision@10"):
            if name in result.recommender_metrics:
                alone = result.metrics.get(name)
                extra = f"   ({result.model_name} alone {alone:.4f})" if alone is not None else ""
                _say(f"  {name:<13} {result.recommender_metrics[name]:.4f}{extra}")
    for recs in result.recommendations[:1]:
        rated = recs.recommended["predicted"].notna().all()
        what = "predicted rating" if rated else "score"
        order = f", {result.recommender_name}" if result.recommender_name else ""
        _say(f"Top 5 recommendations for user {recs.user_id}{tag} ({what}, title){order}:", style="bold")
        column = recs.recommended["predicted" if rated else "score"]
        for title, value in zip(recs.recommended["title"][:5], column[:5], strict=True):
            _say(f"  {value:.2f}  {title}")
    for sim in result.similar:
        _say(f"Most similar to {sim.title}{tag}:", style="bold")
        for title, cos in zip(sim.neighbours["title"][:5], sim.neighbours["similarity"][:5], strict=True):
            _say(f"  {cos:.3f}  {title}")
    if result.synthetic:
        console.print(f"All of the above is SYNTHETIC DATA ({result.unavailable_reason}).",
                      style="bold yellow", highlight=False, soft_wrap=True, markup=False)
    _say(f"Model saved to {result.model_dir.resolve()}")
    if result.recommender_dir is not None:
        _say(f"Two-stage recommender saved to {result.recommender_dir.resolve()} "
             f"(cfrec recommend {result.recommender_dir} --user ID)")
    _say(f"Report written to {result.report_path.resolve()}  (open it in a browser)", style="bold green")
    _say(f"Done in {time.perf_counter() - start:.1f} s.")


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="Model folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Table format: parquet or csv.")] = "parquet",
) -> None:
    """Write item and user embeddings with raw ids and titles (tables plus .npy matrices)."""
    from cfrec.models.export import export_embeddings

    fmt = format.lower()
    if fmt not in ("parquet", "csv"):
        fail(f"--format must be parquet or csv, not {format!r}")
    model = _load_model(model_dir)
    result = export_embeddings(model, out, format=cast(Literal["parquet", "csv"], fmt))  # checked above
    _say(f"exported {result.n_items:,} item and {result.n_users:,} user embeddings "
         f"(dimension {result.n_factors}) to {result.out_dir.resolve()}:")
    for path in result.files.values():
        _say(f"  {path.name}")
