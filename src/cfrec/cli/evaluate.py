"""CLI commands ``evaluate`` (score a saved model on the test part of its split) and ``benchmark``
(compare models under one protocol).

``evaluate`` only scores a model on the test part of the split it was trained on: the model
records the fingerprint of its training data, and the command checks that the train part of the
chosen split has that fingerprint. Without ``--split`` it uses the split recorded by ``cfrec
train`` or, failing that, searches the usual splits (temporal, user-temporal, random, u1..u5, ua,
ub, kfold) for the matching one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cfrec._io import to_jsonable
from cfrec.cli._app import app, console, err_console, say
from cfrec.cli._options import load_data, with_data_options
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from rich.console import JustifyMethod

# ---------------------------------------------------------------------- evaluate
@app.command("evaluate")
@with_data_options
def evaluate_cmd(
    model_dir: Annotated[Path, typer.Argument(help="A model folder written by 'cfrec train' (or Recommender.save).")],
    data_options: DataOptions,
    dataset: Annotated[str | None, typer.Option(
        help="MovieLens name or ratings file/folder (default: the one the model was trained on).")] = None,
    split: Annotated[str | None, typer.Option(
        help="Split spec the model was trained on: temporal[:0.2], user-temporal[:0.2|:n=5], random[:0.2], "
             "kfold[:5], u1..u5, ua, ub (default: the recorded one, else searched by fingerprint).")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="Comma-separated metrics: rmse, mae, precision@K, recall@K, ndcg@K, map@K, mrr@K, "
             "hit_rate@K, coverage@K, popularity@K (default: all at --k).")] = None,
    k: Annotated[int, typer.Option(help="Cut-off for ranking metrics named without @K.")] = 10,
    relevance: Annotated[float, typer.Option(
        help="A test item is relevant when its rating is >= this (ranking metrics); on an "
             "interaction log every held-out interaction is relevant.")] = 4.0,
    seed: Annotated[int | None, typer.Option(help="Seed of a random/k-fold split (default: the recorded one, else 0).")] = None,
    online: Annotated[bool, typer.Option(
        "--online", help="Also replay the test part in time order with fold-in (online RMSE).")] = False,
    reveal: Annotated[str, typer.Option(
        help="Online replay order: group (a user's ratings of the same second are all predicted before "
             "any of them is revealed) or rating (one at a time, so same-second ratings are seen before "
             "their peers are predicted; for comparison).")] = "group",
    allow_mismatch: Annotated[bool, typer.Option(
        "--allow-mismatch", help="Evaluate even if the split's train part is not what the model was trained on.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Score a saved model on the test part of the split it was trained on."""
    from cfrec.data.split import find_training_split, folds_home
    from cfrec.evaluation.protocols import RATING_METRICS, evaluate_detailed, metric_names
    from cfrec.models.base import Recommender

    names = metric_names(metrics, k)  # validate before loading anything
    from cfrec.evaluation.online import REVEALS

    reveal = reveal.strip().lower()
    if reveal not in REVEALS:
        raise CfrecError(f"--reveal: expected group or rating, got {reveal!r}")
    if reveal != "group" and not online:
        raise CfrecError("--reveal applies to the online replay; add --online")
    model = Recommender.load(model_dir)
    info = getattr(model, "fit_info_", {}) or {}
    source = dataset or info.get("source") or info.get("dataset")
    if not source:
        raise CfrecError(f"{model_dir}: the model does not record its dataset; pass --dataset")
    data = load_data(source, data_options)
    used_seed = seed if seed is not None else int(info.get("split_seed", 0) or 0)
    fingerprint = info.get("fingerprint")
    recorded = None if split else info.get("split")
    if isinstance(recorded, str) and recorded.strip().lower() == "none":
        raise CfrecError("this model was trained on every rating (--split none): there is no held-out "
                         "test part to evaluate it on; retrain it with a split")
    if split is None and fingerprint is None:
        raise CfrecError("the model does not record the fingerprint of its training data; pass --split "
                         "(and --seed) to say which split it was trained on")
    chosen, matches = find_training_split(data, fingerprint, spec=split, seed=used_seed,
                                          recorded=recorded, data_home=folds_home(source))
    if not matches and split is None:
        raise CfrecError(f"none of the usual splits (seed {used_seed}) has the train part this model was "
                         f"trained on; pass the split it was trained with as --split SPEC (and --seed), "
                         f"or check --dataset")
    if not matches:
        msg = (f"the train part of split {chosen.name!r} of {data.name} is not the data this model was "
               f"trained on (fingerprint differs): its test part may overlap the model's training data "
               f"or miss part of it")
        if fingerprint is not None and not allow_mismatch:
            raise CfrecError(msg + "; pass the split it was trained with (see 'fit_info' in model.json) "
                                   "or --allow-mismatch to evaluate anyway")
        err_console.print(f"warning: {msg}" if fingerprint is not None else
                          "warning: the model records no training fingerprint; cannot check the split",
                          highlight=False, soft_wrap=True, markup=False)
    ev = evaluate_detailed(model, chosen.test, k=k, relevance=relevance, metrics=names)
    online_res = None
    if online:
        from cfrec.evaluation.online import online_evaluate

        online_res = online_evaluate(model, chosen.test, train=chosen.train, name=model.name,
                                     reveal=reveal)  # type: ignore[arg-type]
    if json_out:
        typer.echo(json.dumps(to_jsonable({
            "model_dir": str(Path(model_dir).resolve()),
            "model": model.name,
            "params": model.get_params(),
            "dataset": data.name,
            "split": chosen.name,
            "train_matches_model": matches,
            "relevance": None if chosen.test.is_implicit else relevance,
            "k": k,
            "metrics": ev.metrics,
            "breakdown": ev.breakdown.to_dict() if ev.breakdown is not None else None,
            "cold_start": chosen.cold_start().to_dict(),
            "online": online_res.to_dict() if online_res is not None else None,
        }), indent=2, allow_nan=False))
        return
    console.print(f"{model.name} on {data.name}, split {chosen.name} ({len(chosen.test):,} test ratings)",
                  highlight=False, soft_wrap=True, markup=False)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in ev.metrics.items():
        table.add_row(escape(key), escape(_cell(key, value)))
    console.print(table)
    if not all(model.metric_applies(m) for m in RATING_METRICS):
        say(f"{type(model).__name__}'s scores are {model.score_label}: RMSE and MAE are n/a")
    relevant = ("every held-out interaction" if chosen.test.is_implicit
                else f"test rating >= {relevance:g}")
    console.print(f"ranking: all items unrated in training are candidates; relevant = {relevant}; "
                  "users without a relevant test item are excluded from the averages",
                  highlight=False, soft_wrap=True, markup=False)
    bd = ev.breakdown
    if bd is not None and bd["all"].n != bd["known user & item"].n:
        console.print("rating error by whether the user/item was in training:", highlight=False,
                      soft_wrap=True, markup=False)
        bt = Table()
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("test ratings", "left"), ("n", "right"), ("share", "right"), ("RMSE", "right"), ("MAE", "right"))
        for col, just in columns:
            bt.add_column(col, justify=just)
        for g in bd.groups:
            bt.add_row(g.group, str(g.n), f"{g.share:.1%}", _cell("rmse", g.rmse), _cell("mae", g.mae))
        console.print(bt)
    if online_res is not None:
        _print_online(online_res)


def _print_online(res: Any) -> None:
    """The online result as text and a table (the Markdown form is for documents)."""
    console.print(res.headline(), highlight=False, soft_wrap=True, markup=False)
    if res.same_second is not None:
        console.print(f"same-second groups: {res.same_second.describe()}", highlight=False, soft_wrap=True,
                      markup=False)
        sizes = ", ".join(f"{size}: {n:,}" for size, n in res.same_second.sizes.items() if size > 1)
        if sizes:
            console.print(f"groups by size (ratings: groups): {sizes}", highlight=False, soft_wrap=True,
                          markup=False)
    header, body = res.table_rows()
    table = Table()
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)


def _cell(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}"


# ---------------------------------------------------------------------- benchmark
@app.command("benchmark")
@with_data_options
def benchmark_cmd(
    dataset: Annotated[str, typer.Argument(help="MovieLens name (ml-100k ...) or a ratings file/folder.")],
    data_options: DataOptions,
    protocol: Annotated[str, typer.Option(
        help="auto (ML-100K's official folds u1..u5 for ML-100K, else cv5), folds, cv5, temporal, "
             "user-temporal, online (temporal 80/20 with prequential fold-in; a user's same-second "
             "ratings revealed together), online:rating (revealed one at a time), online:both, or any "
             "split spec.")] = "auto",
    models: Annotated[str | None, typer.Option(
        help="Comma-separated models; hyperparameters as mf:n_factors=64,epochs=20; mf-lab is the "
             "course lab's recipe. Default: baseline,mf,als,svdpp,neumf,ials (without neumf for "
             "the online protocol, whose replay would fold NeuMF in once per test rating).")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON to this file (atomically).")] = None,
    seed: Annotated[int, typer.Option(help="Seeds the splits and the models.")] = 0,
    k: Annotated[int, typer.Option(help="Ranking cut-off.")] = 10,
    relevance: Annotated[float, typer.Option(
        help="Relevant = test rating >= this (on an interaction log: every held-out interaction).")] = 4.0,
    popularity: Annotated[bool, typer.Option(
        "--popularity/--no-popularity", help="Include the most-popular baseline row.")] = True,
) -> None:
    """Fit and score several models under one protocol; print one Markdown table."""
    from cfrec._io import write_json_atomic
    from cfrec.data.split import folds_home, is_full_ml100k
    from cfrec.evaluation.benchmark import online_reveals, run_benchmark
    from cfrec.models.registry import default_models

    data = load_data(dataset, data_options)
    if protocol.strip().lower() == "auto":
        protocol = "folds" if is_full_ml100k(data) else "cv5"
        say(f"protocol {protocol} ({'ML-100K' if protocol == 'folds' else 'not ML-100K'}: "
            f"{'its official folds u1..u5' if protocol == 'folds' else '5-fold cross-validation'}; "
            "--protocol chooses another)", stderr=True)
    if models is None:
        chosen_models = default_models("online" if online_reveals(protocol) is not None else protocol)
        if data.is_implicit:  # rating models are refused on interactions
            from cfrec.models.names import ranking_names

            chosen_models = [m for m in chosen_models if m in ranking_names()]
        models = ",".join(chosen_models)

    def on_fold(name: str, fold: Any) -> None:
        m = fold.metrics
        rating = f"RMSE {m['rmse']:.4f}, " if isinstance(m.get("rmse"), float) and not math.isnan(m["rmse"]) else ""
        say(f"  {name} {fold.split}: {rating}NDCG@{k} {m.get(f'ndcg@{k}', math.nan):.4f} "
            f"(fit {fold.fit_seconds:.1f} s)", stderr=True)

    def on_row(row: Any) -> None:
        m = row.mean
        say(f"{row.model}: NDCG@{k} {m.get(f'ndcg@{k}', math.nan):.4f}, fit "
            f"{m.get('fit_seconds', math.nan):.1f} s a fold", stderr=True)

    say(f"benchmark on {data.name}, protocol {protocol}: {models}", stderr=True)
    result = run_benchmark(data, protocol=protocol, models=models, seed=seed, k=k, relevance=relevance,
                           data_home=folds_home(dataset), popularity=popularity, on_row=on_row,
                           on_fold=on_fold)
    console.print(result.to_markdown(), highlight=False, soft_wrap=True, markup=False)
    if json_file is not None:
        path = write_json_atomic(json_file, result.to_dict())
        err_console.print(f"wrote {path}", highlight=False, soft_wrap=True, markup=False)
