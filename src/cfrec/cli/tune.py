"""CLI command ``tune``: hyperparameter search on a validation part carved from the train part.

The test part of the split is touched once, by the best parameters refitted on the whole train
part. ``--out DIR`` writes ``trials.csv``, ``trials.json`` and ``best_params.json`` (the last is
what ``cfrec train --params-json`` reads).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer
from rich.markup import escape
from rich.table import Table

from cfrec.cli._app import app, console, echo_json, err_console, fail
from cfrec.cli._options import load_data, refuse_rating_model, with_data_options
from cfrec.cli.models import _MODEL_CHOICES, _fmt_fallback, build_params
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from cfrec.models.base import Recommender


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:g}"
    return str(v)


@app.command()
@with_data_options
def tune(
    dataset: Annotated[str, typer.Argument(help="MovieLens name (ml-100k ...) or a ratings file/folder.")],
    data_options: DataOptions,
    model: Annotated[str | None, typer.Option("--model", "-m", help=_MODEL_CHOICES + ".")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p",
        help="NAME=v1,v2,... (values to try), NAME=low:high[:log] (a range, TPE only) or NAME=value "
             "(fixed). Repeatable.",
    )] = None,
    preset: Annotated[str | None, typer.Option(
        help="lab-dim (lab BiasedMF, n_factors 16..256) or lab-wd (weight_decay 0..1e-3); both on the "
             "lab's global temporal 80/20 split unless --split is given.",
    )] = None,
    split: Annotated[str, typer.Option(
        help="Split whose train part is tuned on (auto: the preset's, else u1 on ML-100K, else random:0.2).",
    )] = "auto",
    trials: Annotated[int | None, typer.Option(help="Number of trials (default: whole grid; 20 for TPE).")] = None,
    sampler: Annotated[str, typer.Option(help="auto (grid unless a range is given), grid or tpe.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seeds sampler, validation carve, split and model.")] = 0,
    valid_fraction: Annotated[float, typer.Option(help="Share of the train part held out for validation.")] = 0.1,
    metric: Annotated[str | None, typer.Option(help="What picks the winner: rmse or mae (lower is better) "
                                                    "or a ranking metric such as ndcg@10, recall@10, map@10 "
                                                    "(higher is better; the way to tune ranking models). "
                                                    "Default: rmse for a rating model on ratings, ndcg@10 "
                                                    "for a ranking model or an interaction log.")] = None,
    carve: Annotated[str, typer.Option(help="Validation carve: auto (ranking metric: per-user holdout, or "
                                            "the latest ratings on a temporal split; rmse/mae: random "
                                            "rows), random, per-user or temporal.")] = "auto",
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for trials.csv, trials.json, "
                                                                 "best_params.json.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON (progress to stderr).")] = False,
) -> None:
    """Search hyperparameters by a validation metric (RMSE, or NDCG@10 ...), then refit the best and score the test part once."""
    from cfrec.data.split import folds_home, single_split
    from cfrec.evaluation.tuning import (
        DEFAULT_SPACES,
        PRESETS,
        default_space,
        parse_space,
        preset_space,
    )
    from cfrec.evaluation.tuning import tune as run_tune
    from cfrec.models.registry import model_class

    space: dict[str, Any] = {}
    base: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            fail(f"unknown tuning preset {preset!r}; choose one of {', '.join(PRESETS)}")
        p = PRESETS[preset]
        if model is not None:
            chosen_cls: type[Recommender] = model_class(model)
            if chosen_cls.name != p.model:
                fail(f"preset {preset!r} tunes {p.model!r}, not {model!r}")
        model = p.model
        base, space = preset_space(p)
        if split == "auto":
            split = p.split
    if model is None:
        fail("choose a model with --model (or a --preset)")
    cls: type[Recommender] = model_class(model)
    extra_space, fixed = parse_space(cls, param or [])
    for name in extra_space:
        base.pop(name, None)
    for name in fixed:
        space.pop(name, None)
    space.update(extra_space)
    base.update(fixed)
    base.update(build_params(cls, flags={"device": device}))
    searched_default = False
    if not space and preset is None:
        space = {k: v for k, v in default_space(cls).items() if k not in fixed}
        searched_default = bool(space)
    if not space:
        fail("nothing to tune: give --param NAME=v1,v2,... or NAME=low:high[:log], or a --preset")

    progress = err_console if json_out else console
    data = load_data(dataset, data_options)
    probe = cls(**base)
    refuse_rating_model(data, probe)
    if metric is None:
        metric = "rmse" if probe.predicts_ratings else "ndcg@10"
    chosen = single_split(data, split, seed=seed, data_home=folds_home(dataset))
    target = data if chosen is None else chosen
    progress.print(
        f"tuning {cls.name} ({cls.__name__}) on {data.name}, split {'none' if chosen is None else chosen.name}: "
        f"{', '.join(space)}; validation = {valid_fraction:.0%} of the train part"
        + (f" (the default search space: {' '.join(DEFAULT_SPACES[cls.name])}; --param sets another)"
           if searched_default else ""),
        highlight=False, soft_wrap=True, markup=False,
    )

    ranking_metric = metric.strip().lower() not in ("rmse", "mae")
    score_key = f"valid_{metric.strip().lower()}"

    def measures(row: dict[str, Any]) -> str:
        parts = []
        if isinstance(row.get("valid_rmse"), float) and not math.isnan(row["valid_rmse"]):
            parts.append(f"train_rmse {row['train_rmse']:.4f}  valid_rmse {row['valid_rmse']:.4f}  "
                         f"gap {row['gap']:+.4f}")
        if ranking_metric and score_key in row:
            parts.append(f"{score_key} {row[score_key]:.4f}")
        return "  ".join(parts)

    def on_trial(row: dict[str, Any]) -> None:
        shown = "  ".join(f"{k}={_fmt(row[k])}" for k in space)
        if row["state"] != "complete":
            progress.print(f"  trial {row['trial']:>3}  {shown}  failed: {row['error']}", highlight=False, soft_wrap=True, markup=False)
            return
        progress.print(f"  trial {row['trial']:>3}  {shown}  {measures(row)}  ({row['fit_seconds']:.1f} s)",
                       highlight=False, soft_wrap=True, markup=False)

    try:
        # typer has no Literal choices; tune() itself rejects an unknown sampler with a CfrecError
        result = run_tune(target, cls.name, space, n_trials=trials,
                          sampler=cast(Literal["auto", "grid", "tpe"], sampler),
                          seed=seed, base_params=base, valid_fraction=valid_fraction, metric=metric,
                          carve=cast(Literal["auto", "random", "per-user", "temporal"], carve),
                          on_trial=on_trial)
    except ValueError as exc:
        if isinstance(exc, CfrecError):
            raise
        fail(f"tuning failed: {exc}")
    saved = result.save(out) if out is not None else None
    if json_out:
        obj = result.to_dict()
        if saved is not None:
            obj["files"] = {k: str(v.resolve()) for k, v in saved.items()}
        echo_json(obj)
        return

    table = Table(title=f"{len(result.trials)} trials (sampler {result.sampler}, seed {result.seed}, "
                        f"validation carve {result.carve})", title_justify="left")
    table.add_column("trial", justify="right")
    for name in space:
        table.add_column(name, justify="right")
    rated = result.trials["valid_rmse"].notna().any()
    columns = (["train_rmse", "valid_rmse", "gap"] if rated else []) + ([score_key] if ranking_metric else [])
    for col in [*columns, "epochs", "fit s"]:
        table.add_column(col.replace("_", " ").replace("rmse", "RMSE"), justify="right")
    for row in result.trials.sort_values("trial").to_dict(orient="records"):
        best = row["trial"] == result.best_trial
        cells = [str(row["trial"]) + (" *" if best else "")]
        cells += [escape(_fmt(row[n])) for n in space]
        if row["state"] == "complete":
            cells += [f"{row[c]:+.4f}" if c == "gap" else f"{row[c]:.4f}" for c in columns]
            cells += [str(row["epochs_run"] or "-"), f"{row['fit_seconds']:.1f}"]
        else:
            cells += ["failed"] + [""] * len(columns) + [f"{row['fit_seconds']:.1f}"]
        table.add_row(*cells, style="bold" if best else None)
    console.print(table)
    tuned = ", ".join(f"{k}={_fmt(result.best_params[k])}" for k in space)
    label = score_key.replace("_", " ").replace("rmse", "RMSE").replace("mae", "MAE")
    console.print(f"best (trial {result.best_trial}): {tuned}; {label} {result.best_score:.4f}",
                  highlight=False, soft_wrap=True, markup=False)
    if result.test is not None:
        t = result.test
        shown_test = [f"test RMSE {t['rmse']:.4f}  MAE {t['mae']:.4f}" if t.get("rmse") is not None else ""]
        shown_test += [f"test {key} {t[key]:.4f}" for key in t if "@" in key]
        console.print(
            f"refitted on the whole train part: {'  '.join(x for x in shown_test if x)}  on {t['n']:,} "
            f"ratings; cold-start fallbacks: {_fmt_fallback(t['fallback'])} ({t['fallback_share']:.1%})",
            highlight=False, soft_wrap=True, markup=False,
        )
    if result.test is not None and result.test.get("tuned_loses_to_defaults"):
        t = result.test
        console.print(f"note: the tuned model scores worse on the test part than the defaults ({metric} "
                      f"{t['tuned']:.4f} tuned vs {t['defaults']:.4f} with the defaults): the validation "
                      "winner did not carry over; more trials, another carve or the defaults may serve better",
                      highlight=False, soft_wrap=True, markup=False)
    if saved is not None:
        console.print(f"wrote {saved['csv']}, {saved['json']}, {saved['best_params']}", highlight=False, soft_wrap=True, markup=False)
        split_arg = "" if split == "auto" else f" --split {split}"
        console.print(f"train it: cfrec train {dataset}{split_arg} --params-json {saved['best_params']} "
                      f"--out MODEL_DIR",
                      highlight=False, soft_wrap=True, markup=False)
