"""CLI command ``train`` and the helpers the model commands share.

``train`` fits one model on the train part of a split, reports test RMSE/MAE (and how many test
predictions had to fall back to biases because the user or item was not in training) and saves
the model folder; :mod:`cfrec.cli.query` holds the commands that read such a folder.

Choices made here (also in each command's help):

* ``--split auto`` (the default) is ML-100K's official ``u1`` fold when the dataset is ML-100K,
  else a seeded random 80/20 split. ``--split none`` trains on every rating (no test score).
* Split specs that yield several folds (``folds``, ``cv5``) are rejected: ``train`` saves one
  model; cross-validation belongs to ``cfrec evaluate``/``cfrec benchmark``.
* Hyperparameters are layered: ``--preset`` < ``--params-json`` < ``--param`` < the flags
  (``--epochs``, ``--lr`` ...). Values are typed from the model's ``__init__`` signature.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from cfrec.cli._app import app, echo_json, epoch_printer, err_console, fail, say
from cfrec.cli._options import load_data, refuse_rating_model, with_data_options
from cfrec.cli._stages import StageLog
from cfrec.cli.sharded import distributed_world, job_rank, return_freed_memory, train_sharded
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError
from cfrec.models.registry import model_names

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

_MODEL_CHOICES = ", ".join(model_names())

#: Flags mapped to hyperparameter names.
_FLAG_PARAMS = {
    "epochs": "epochs",
    "lr": "lr",
    "factors": "n_factors",
    "weight_decay": "weight_decay",
    "batch_size": "batch_size",
    "seed": "seed",
    "device": "device",
}


# ---------------------------------------------------------------------- shared helpers
def _source_ref(dataset: str) -> str:
    """How to find the dataset again later: an absolute path for a path, else the name."""
    path = Path(dataset)
    return str(path.resolve()) if path.exists() else dataset


def build_params(
    model_cls: type[Recommender],
    *,
    preset: str | None = None,
    json_params: dict[str, Any] | None = None,
    assignments: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Layer hyperparameters: preset < JSON file < ``NAME=VALUE`` assignments < flags; all checked."""
    from cfrec.models.registry import (
        check_params,
        get_spec,
        param_names,
        parse_param_assignments,
        preset_params,
    )

    params: dict[str, Any] = {}
    if preset:
        params.update(preset_params(get_spec(model_cls.name or model_cls.__name__), preset))
    if json_params:
        params.update(check_params(model_cls, json_params))
    if assignments:
        params.update(parse_param_assignments(model_cls, assignments))
    names = set(param_names(model_cls))
    for flag, value in (flags or {}).items():
        if value is None:
            continue
        name = _FLAG_PARAMS[flag]
        if name not in names:
            if name == "seed":  # the split is still seeded; bias models are deterministic anyway
                continue
            if name == "device":
                err_console.print(f"note: {model_cls.__name__} does not use torch; --device ignored",
                                  highlight=False, soft_wrap=True, markup=False)
                continue
            raise CfrecError(f"--{flag.replace('_', '-')}: {model_cls.name} ({model_cls.__name__}) has no "
                             f"hyperparameter {name!r}; valid: {', '.join(sorted(names))}")
        params.update(check_params(model_cls, {name: value}))
    return params




def _fmt_fallback(counts: dict[str, int]) -> str:
    parts = [f"{counts[k]:,} {k.replace('_', ' ')}" for k in ("unknown_user", "unknown_item", "unknown_both")
             if counts.get(k)]
    return ", ".join(parts) if parts else "none"


# ---------------------------------------------------------------------- distributed train
def _fit_distributed(estimator: Any, train_part: Any, on_epoch: Any, checkpoint: Path | None,
                     ctx: Any) -> tuple[int, int]:
    """Every rank's share of the blocked fit (rank 0 alone reports progress); returns the range
    of users this rank's block holds (whose seen items its model keeps)."""
    from cfrec.distributed import fit_blocked, rank_data
    from cfrec.models.base import _item_info_for

    data = train_part.compact()
    part = rank_data(data, ctx.rank, ctx.world_size)
    fit_blocked(estimator, part, ctx, on_epoch=on_epoch if ctx.is_main else None, fingerprint=train_part.fingerprint(),
                item_info=_item_info_for(data) if ctx.is_main else None, checkpoint=checkpoint, release=True)
    return part.blocks.user_range(ctx.rank)


# ---------------------------------------------------------------------- train
@app.command()
@with_data_options
def train(
    dataset: Annotated[str, typer.Argument(help="MovieLens name (ml-100k, ml-1m ...), a ratings file/folder, or a folder "
                                              "'cfrec shard' wrote (each rank reads its own parts).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to save the model into (replaced atomically).")],
    data_options: DataOptions,
    model: Annotated[str | None, typer.Option("--model", "-m", help=f"{_MODEL_CHOICES} (default: the one in "
                                                                    "--params-json).")] = None,
    preset: Annotated[str | None, typer.Option(help="Model preset, e.g. 'lab' (the course lab's BiasedMF).")] = None,
    split: Annotated[str, typer.Option(
        help="auto (u1 on ML-100K, else random:0.2), none (train on everything), temporal[:0.2], "
             "user-temporal[:0.2|:n=5], random[:0.2], u1..u5, ua, ub. Multi-fold specs are rejected.",
    )] = "auto",
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="Hyperparameter NAME=VALUE (repeatable); typed from the model's signature.",
    )] = None,
    params_json: Annotated[Path | None, typer.Option(
        help="best_params.json from 'cfrec tune' (or a JSON object of hyperparameters).",
    )] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    factors: Annotated[int | None, typer.Option(help="Latent factors (n_factors).")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="L2 weight decay.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Minibatch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seeds the split and the model (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default: cuda when available).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Fail (and save nothing) when the model's test RMSE is worse than the bias "
                         "baseline's on the same split, instead of warning.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary (progress goes to stderr).")] = False,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", min=1, help="Processes on this machine (als, ials, mf): a blocked fit on torch.distributed, "
                               "the same model as one process; across machines start it with torchrun "
                               "(docs/distributed.md).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Distributed fit: save every rank's blocks after each iteration in this folder and resume "
             "from the last complete one (after --max-restarts, or a job started again).")] = None,
    max_restarts: Annotated[int, typer.Option(
        "--max-restarts", min=0, help="With --nproc: restart the processes this many times after a "
                                      "failure (use --checkpoint to resume rather than start over).")] = 0,
) -> None:
    """Train a model on the train part of a split, score the test part and save the model.

    Each stage (load, split, fit, evaluate, save) is timed with its peak memory. Under torchrun
    (``WORLD_SIZE`` > 1) or with ``--nproc N`` ALS, iALS and BiasedMF fit blocked over the
    processes (BiasedMF by stratified blocks), every rank scores its users' share of the test
    part and rank 0 alone prints and saves. A folder ``cfrec shard`` wrote trains ALS or iALS
    with ``--split none`` on one process per part.
    """
    from cfrec.data.shard import is_sharded
    from cfrec.data.split import folds_home, single_split
    from cfrec.evaluation.protocols import summarize_test
    from cfrec.evaluation.tuning import load_best_params
    from cfrec.models.baseline import Baseline
    from cfrec.models.persistence import check_writable
    from cfrec.models.registry import model_class, resolve_name

    json_params: dict[str, Any] | None = None
    if params_json is not None:
        file_model, json_params = load_best_params(params_json)
        if model is None:
            model = file_model
        elif file_model is not None and model_class(file_model) is not model_class(model):
            fail(f"{params_json} holds parameters for {file_model!r}, not {model!r}")
    if model is None:
        fail(f"choose a model with --model ({_MODEL_CHOICES})")
    spec, alias_preset = resolve_name(model)
    cls: type[Recommender] = spec.cls()
    preset = preset or alias_preset
    flags = {"epochs": epochs, "lr": lr, "factors": factors, "weight_decay": weight_decay,
             "batch_size": batch_size, "seed": seed, "device": device}
    params = build_params(cls, preset=preset, json_params=json_params, assignments=param or [], flags=flags)
    try:
        estimator = cls(**params)
    except (TypeError, ValueError) as exc:
        fail(f"invalid hyperparameters for {cls.name}: {exc}")

    check_writable(out)  # before a long fit, not after it
    if is_sharded(dataset):

        train_sharded(dataset, out, estimator, split=split, nproc=nproc, checkpoint=checkpoint,
                      max_restarts=max_restarts, json_out=json_out, seed=seed)
        return
    world = distributed_world(cls, nproc, max_restarts)
    if world == 0:  # this process launched the job: its ranks did the work
        return
    if world > 1:

        return_freed_memory()
    if checkpoint is not None and world == 1:
        fail("--checkpoint applies to a distributed fit (--nproc N or torchrun)")
    main_rank = world == 1 or job_rank() == 0
    to_err = json_out
    stages = StageLog()
    with stages.stage("load"):
        data = load_data(dataset, data_options)
    refuse_rating_model(data, estimator)
    with stages.stage("split"):
        chosen = single_split(data, split, seed=seed, data_home=folds_home(dataset))
    train_part = data if chosen is None else chosen.train
    split_name = "none" if chosen is None else chosen.name
    cold = chosen.cold_start() if chosen is not None else None
    if main_rank:
        say(f"training {cls.name} ({cls.__name__}) on {data.name}, split {split_name}: "
            f"{len(train_part):,} train / {0 if chosen is None else len(chosen.test):,} test ratings"
            + (f" on {world} processes" if world > 1 else ""), stderr=to_err)

    on_epoch = epoch_printer(to_err)
    test = baseline_rmse = None
    with ExitStack() as job:
        ctx = None
        if world > 1:
            from cfrec.distributed import from_env, summarize_test_sharded

            ctx = job.enter_context(from_env(getattr(estimator, "device", None)))
        with stages.stage("fit"):
            try:
                if ctx is not None:
                    users = _fit_distributed(estimator, train_part, on_epoch, checkpoint, ctx)
                else:
                    estimator.fit(train_part, on_epoch=on_epoch)
            except ValueError as exc:
                if isinstance(exc, CfrecError):
                    raise
                fail(f"{cls.name} training failed: {exc}")
        seconds = stages.stages[-1].seconds
        if ctx is not None and chosen is not None and len(chosen.test):  # each rank scores its users
            with stages.stage("evaluate"):
                test = summarize_test_sharded(estimator, chosen.test, ctx, users=users)
    if not main_rank:  # rank 0 saves
        return

    if chosen is not None and len(chosen.test) and test is None:
        with stages.stage("evaluate"):
            test = summarize_test(estimator, chosen.test)
    if chosen is not None and len(chosen.test) and estimator.predicts_ratings and cls is not Baseline:
        with stages.stage("baseline"):
            baseline_rmse = summarize_test(Baseline().fit(chosen.train), chosen.test)["rmse"]
    worse = baseline_rmse is not None and test is not None and test["rmse"] > baseline_rmse
    if worse:
        assert test is not None and baseline_rmse is not None
        message = (f"{cls.name}'s test RMSE {test['rmse']:.4f} is worse than the bias baseline's "
                   f"{baseline_rmse:.4f} on the same split: the fit failed to learn (learning rate, "
                   f"epochs or regularisation?)")
        if strict:
            fail(message + "; nothing saved (--strict)")
        err_console.print(f"[bold red]WARNING:[/] {escape(message)}; saved anyway (--strict refuses)",
                          highlight=False, soft_wrap=True)
    estimator.fit_info_.update({
        "source": _source_ref(dataset),
        "split": split_name,
        "split_seed": 0 if seed is None else seed,
        "test": test,
    })
    with stages.stage("save"):
        saved = estimator.save(out)

    summary = {
        "model": cls.name,
        "params": estimator.get_params(),
        "dataset": data.name,
        "split": split_name,
        "train_ratings": len(train_part),
        "fit_seconds": seconds,
        "epochs_run": len(estimator.history_),
        "test": test,
        "baseline_test_rmse": baseline_rmse,
        "worse_than_baseline": worse,
        "cold_start": cold.to_dict() if cold is not None else None,
        "stages": stages.to_dict(),
        "out": str(saved.resolve()),
    }
    if json_out:
        echo_json(summary)
        return
    say(f"fitted in {seconds:.1f} s")
    if test is not None and test["rmse"] is None:
        say(f"test NDCG@10 {test['ndcg@10']:.4f}  Recall@10 {test['recall@10']:.4f} (full ranking; "
            f"{type(estimator).__name__} scores preferences, not ratings, so no RMSE)")
    elif test is not None:
        base = f" (bias baseline {baseline_rmse:.4f})" if baseline_rmse is not None else ""
        say(f"test RMSE {test['rmse']:.4f}{base}  MAE {test['mae']:.4f}  on {test['n']:,} ratings; "
            f"cold-start fallbacks: {_fmt_fallback(test['fallback'])} "
            f"({test['fallback_share']:.1%} of test predictions)")
    else:
        say("no test part (--split none): trained on every rating")
    say(f"stages: {stages.summary()}")
    say(f"saved to {saved.resolve()}")
