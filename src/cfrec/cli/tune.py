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

from cfrec.cli._app import app, console, err_console, fail
from cfrec.cli._options import load_data, with_data_options
from cfrec.cli.models import _MODEL_CHOICES, _echo_json, _fmt_fallback, build_params
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
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for trials.csv, trials.json, "
                                                                 "best_params.json.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON (progress to stderr).")] = False,
) -> None:
    """Search hyperparameters by validation RMSE, then refit the best and score the test part once."""
    from cfrec.data.split import folds_home, single_split
    from cfrec.evaluation.tuning import PRESETS, parse_space, preset_space
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
    if not space:
        fail("nothing to tune: give --param NAME=v1,v2,... or NAME=low:high[:log], or a --preset")

    progress = err_console if json_out else console
    data = load_data(dataset, data_options)
    chosen = single_split(data, split, seed=seed, data_home=folds_home(dataset))
    target = data if chosen is None else chosen
    progress.print(
        f"tuning {cls.name} ({cls.__name__}) on {data.name}, split {'none' if chosen is None else chosen.name}: "
        f"{', '.join(space)}; validation = {valid_fraction:.0%} of the train part",
        highlight=False, soft_wrap=True, markup=False,
    )

    def on_trial(row: dict[str, Any]) -> None:
        shown = "  ".join(f"{k}={_fmt(row[k])}" for k in space)
        if row["state"] != "complete":
            progress.print(f"  trial {row['trial']:>3}  {shown}  failed: {row['error']}", highlight=False, soft_wrap=True, markup=False)
            return
        progress.print(
            f"  trial {row['trial']:>3}  {shown}  train_rmse {row['train_rmse']:.4f}  "
            f"valid_rmse {row['valid_rmse']:.4f}  gap {row['gap']:+.4f}  ({row['fit_seconds']:.1f} s)",
            highlight=False, soft_wrap=True, markup=False,
        )

    try:
        # typer has no Literal choices; tune() itself rejects an unknown sampler with a CfrecError
        result = run_tune(target, cls.name, space, n_trials=trials,
                          sampler=cast(Literal["auto", "grid", "tpe"], sampler),
                          seed=seed, base_params=base, valid_fraction=valid_fraction, on_trial=on_trial)
    except ValueError as exc:
        if isinstance(exc, CfrecError):
            raise
        fail(f"tuning failed: {exc}")
    saved = result.save(out) if out is not None else None
    if json_out:
        obj = result.to_dict()
        if saved is not None:
            obj["files"] = {k: str(v.resolve()) for k, v in saved.items()}
        _echo_json(obj)
        return

    table = Table(title=f"{len(result.trials)} trials (sampler {result.sampler}, seed {result.seed})",
                  title_justify="left")
    table.add_column("trial", justify="right")
    for name in space:
        table.add_column(name, justify="right")
    for col in ("train RMSE", "valid RMSE", "gap", "epochs", "fit s"):
        table.add_column(col, justify="right")
    for row in result.trials.sort_values("trial").to_dict(orient="records"):
        best = row["trial"] == result.best_trial
        cells = [str(row["trial"]) + (" *" if best else "")]
        cells += [escape(_fmt(row[n])) for n in space]
        if row["state"] == "complete":
            cells += [f"{row['train_rmse']:.4f}", f"{row['valid_rmse']:.4f}", f"{row['gap']:+.4f}",
                      str(row["epochs_run"] or "-"), f"{row['fit_seconds']:.1f}"]
        else:
            cells += ["failed", "", "", "", f"{row['fit_seconds']:.1f}"]
        table.add_row(*cells, style="bold" if best else None)
    console.print(table)
    tuned = ", ".join(f"{k}={_fmt(result.best_params[k])}" for k in space)
    console.print(f"best (trial {result.best_trial}): {tuned}; valid RMSE {result.best_valid_rmse:.4f}",
                  highlight=False, soft_wrap=True, markup=False)
    if result.test is not None:
        t = result.test
        console.print(
            f"refitted on the whole train part: test RMSE {t['rmse']:.4f}  MAE {t['mae']:.4f}  on {t['n']:,} "
            f"ratings; cold-start fallbacks: {_fmt_fallback(t['fallback'])} ({t['fallback_share']:.1%})",
            highlight=False, soft_wrap=True, markup=False,
        )
    if saved is not None:
        console.print(f"wrote {saved['csv']}, {saved['json']}, {saved['best_params']}", highlight=False, soft_wrap=True, markup=False)
        split_arg = "" if split == "auto" else f" --split {split}"
        console.print(f"train it: cfrec train {dataset}{split_arg} --params-json {saved['best_params']} "
                      f"--out MODEL_DIR",
                      highlight=False, soft_wrap=True, markup=False)
