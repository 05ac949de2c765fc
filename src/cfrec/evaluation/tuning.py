"""Hyperparameter search on a validation part carved from the training data (never the test part).

:func:`tune` runs an Optuna study: a grid over value lists (every combination, in a seeded
order) or a seeded TPE search over value lists and numeric ranges. Each trial fits the model on
the training part minus a validation part and records train and validation RMSE, so the gap
between them (over-fitting) is visible next to the score that picks the winner. The best
parameters are then refitted on the whole training part and measured once on the test part.

:func:`parse_space` turns command-line text (``n_factors=64,128``, ``lr=1e-4:1e-1:log``) into a
search space, with values typed from the model's ``__init__`` signature by the registry's
:func:`~cfrec.models.registry.coerce_param`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from cfrec._io import attributes, to_jsonable, write_text_atomic
from cfrec.data.interactions import Interactions
from cfrec.data.split import Split
from cfrec.errors import CfrecError
from cfrec.models.base import check_feedback
from cfrec.models.registry import (
    check_params,
    coerce_param,
    get_spec,
    param_names,
    param_spec,
    preset_params,
    split_assignment,
)

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

logger = logging.getLogger(__name__)

#: Columns of :attr:`TuningResult.trials` besides one column per searched hyperparameter.
RESULT_COLUMNS = ("train_rmse", "valid_rmse", "gap", "epochs_run", "fit_seconds", "state", "error")
#: Metrics trials can be chosen by: minimised (error) or maximised (ranking quality).
ERROR_METRICS = ("rmse", "mae")

#: Hyperparameters that describe hardware, not the model; never written to ``best_params.json``.
HARDWARE_PARAMS = frozenset({"device"})

#: Rows of the training part scored for the per-trial train RMSE (a seeded sample above this).
TRAIN_RMSE_ROWS = 200_000


# ---------------------------------------------------------------------- search space
@dataclass(frozen=True)
class Range:
    """A numeric search range for TPE: ``low`` to ``high`` inclusive, optionally log-uniform.

    ``integer=True`` draws ints (``n_factors``); otherwise floats.
    """

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise CfrecError(f"range {self.low}:{self.high}: low must be below high")
        if self.log and self.low <= 0:
            raise CfrecError(f"range {self.low}:{self.high}:log: a log range needs low > 0")

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


SpaceValue = Sequence[Any] | Range
Space = Mapping[str, SpaceValue]


@dataclass(frozen=True)
class TunePreset:
    """A named tuning setup (model, base hyperparameters preset, search space, default split)."""

    model: str
    space: dict[str, list[Any]]
    split: str
    model_preset: str | None = None
    description: str = ""


#: The course lab's two seed exercises: embedding size and weight decay of the lab's BiasedMF on
#: the global temporal 80/20 split.
PRESETS: dict[str, TunePreset] = {
    "lab-dim": TunePreset(
        model="mf", model_preset="lab", split="temporal:0.2",
        space={"n_factors": [16, 32, 64, 128, 256]},
        description="lab BiasedMF, embedding size 16..256, global temporal 80/20 split",
    ),
    "lab-wd": TunePreset(
        model="mf", model_preset="lab", split="temporal:0.2",
        space={"weight_decay": [0.0, 1e-5, 1e-4, 1e-3]},
        description="lab BiasedMF, weight decay 0..1e-3, global temporal 80/20 split",
    ),
}


#: The search space ``tune`` uses when none is given, by model name, in ``--param`` syntax; each
#: range or list holds the model's default value.
DEFAULT_SPACES: dict[str, tuple[str, ...]] = {
    "baseline": ("reg_user=0.5:50:log", "reg_item=0.5:50:log"),
    "mf": ("n_factors=16,32,64,128", "lr=0.003:0.03:log", "reg=0.01:0.3:log"),
    "als": ("n_factors=5,10,20,40", "reg=0.01:0.2:log", "reg_bias=0.5:10:log"),
    "svdpp": ("n_factors=16,32,64", "lr=0.002:0.02:log", "reg=0.02:0.3:log"),
    "neumf": ("n_factors=8,16,32", "lr=0.0003:0.003:log", "reg=0.005:0.05:log"),
    "bmf": ("n_factors=5,10,20",),
    "bfm": ("n_factors=5,10,20",),
    "hybrid": ("n_factors=32,64,128", "lr=0.02:0.3:log", "reg=0.001:0.03:log"),
    "ials": ("n_factors=16,32,48,64,128", "reg=5:200:log", "alpha=0.3:10:log"),
    "ease": ("lam=50:1000:log", "rating_power=0,0.5,1,1.5,2"),
    "itemknn": ("k=10,20,30,50,100", "shrinkage=0,10,50,100"),
    "bpr": ("n_factors=32,64,128", "lr=0.05:0.5:log", "reg=0.001:0.03:log"),
    "multvae": ("dropout=0.2,0.5,0.7", "beta_cap=0.1,0.2,0.4"),
    "two-stage": ("weight=0:1", "candidates=50,100,200"),
    "pop": ("reg_item=0.5:50:log",),
}


def default_space(model_cls: type[Recommender]) -> dict[str, SpaceValue]:
    """The default search space of a model (see :data:`DEFAULT_SPACES`); empty when it has none."""
    return parse_space(model_cls, DEFAULT_SPACES.get(model_cls.name, ()))[0]


def preset_space(preset: TunePreset | str) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``(base_params, space)`` of a tuning preset, ready for :func:`tune`.

    The base parameters come from the model preset (``BiasedMF.lab()``), minus the searched ones.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise CfrecError(f"unknown tuning preset {preset!r}; choose one of {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    base: dict[str, Any] = {}
    if preset.model_preset:
        base = {k: v for k, v in preset_params(preset.model, preset.model_preset).items()
                if k not in preset.space}
    return base, {k: list(v) for k, v in preset.space.items()}


def parse_space(model_cls: type[Recommender], specs: Sequence[str]) -> tuple[dict[str, SpaceValue], dict[str, Any]]:
    """Parse ``NAME=v1,v2,...`` (values to try), ``NAME=low:high[:log]`` (a range) and
    ``NAME=value`` (a fixed setting) into ``(space, fixed_params)``.
    """
    space: dict[str, SpaceValue] = {}
    fixed: dict[str, Any] = {}
    for text in specs:
        name, raw = split_assignment(text)
        _checked(model_cls, name)
        if name in space or name in fixed:
            raise CfrecError(f"hyperparameter {name!r} given twice")
        accepted, _, choices, _ = param_spec(model_cls, name)
        numeric = choices is None and (int in accepted or float in accepted)
        if "," in raw:
            values = [coerce_param(model_cls, name, v) for v in raw.split(",") if v.strip()]
            if len(set(map(repr, values))) != len(values):
                raise CfrecError(f"{text!r}: repeated values")
            space[name] = values
        elif ":" in raw and numeric:
            parts = raw.split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2].strip().lower() != "log"):
                raise CfrecError(f"bad range {text!r}: expected NAME=low:high or NAME=low:high:log")
            integer = int in accepted and float not in accepted
            low = coerce_param(model_cls, name, parts[0])
            high = coerce_param(model_cls, name, parts[1])
            if low is None or high is None:
                raise CfrecError(f"bad range {text!r}: low and high must be numbers")
            space[name] = Range(float(low), float(high), log=len(parts) == 3, integer=integer)
        else:
            fixed[name] = coerce_param(model_cls, name, raw)
    return space, fixed


def _checked(model_cls: type[Recommender], name: str) -> str:
    if name not in param_names(model_cls):
        raise CfrecError(f"{model_cls.name or model_cls.__name__} has no hyperparameter {name!r}; "
                         f"valid: {', '.join(param_names(model_cls))}")
    return name


def _normalise_space(model_cls: type[Recommender], space: Space) -> dict[str, SpaceValue]:
    out: dict[str, SpaceValue] = {}
    for name, dim in space.items():
        _checked(model_cls, name)
        if isinstance(dim, Range):
            out[name] = dim
        elif isinstance(dim, tuple) and len(dim) in (2, 3) and all(
                isinstance(x, int | float) for x in dim[:2]) and (len(dim) == 2 or dim[2] == "log"):
            integer = all(isinstance(x, int) and not isinstance(x, bool) for x in dim[:2])
            out[name] = Range(float(dim[0]), float(dim[1]), log=len(dim) == 3, integer=integer)
        elif isinstance(dim, Sequence) and not isinstance(dim, str):
            values = [coerce_param(model_cls, name, v) for v in dim]
            if not values:
                raise CfrecError(f"search space for {name!r} is empty")
            out[name] = values
        else:
            raise CfrecError(f"search space for {name!r}: expected a list of values or a Range, got {dim!r}")
    if not out:
        raise CfrecError("empty search space: give at least one hyperparameter to vary")
    return out


# ---------------------------------------------------------------------- result
@dataclass
class TuningResult:
    """The outcome of :func:`tune`.

    Attributes
    ----------
    trials
        One row per trial: the searched hyperparameters, ``train_rmse``, ``valid_rmse``,
        ``gap`` (valid - train), ``epochs_run``, ``fit_seconds``, ``state`` and ``error``; with a
        ranking metric also ``valid_<metric>`` (``valid_ndcg@10``).
    best_params
        Every hyperparameter of the winning model (base parameters plus the tuned ones).
    best_trial, best_valid_rmse
        The winning trial number and its validation RMSE (NaN for ranking-only models).
    metric, best_score, carve
        The metric trials were chosen by, the winner's validation value of it, and how the
        validation part was carved (``random``, ``per-user`` or ``temporal``).
    test
        Metrics of the best parameters refitted on the whole training part, measured on the
        test part (``rmse``, ``mae``, ``n``, fallback counts), or ``None`` without a test part.
    best_model
        That refitted model (not serialised).
    """

    model: str
    space: dict[str, SpaceValue]
    base_params: dict[str, Any]
    trials: pd.DataFrame
    best_params: dict[str, Any]
    best_trial: int
    best_valid_rmse: float
    sampler: str
    seed: int | None
    valid_fraction: float
    dataset: str = ""
    split: str = ""
    test: dict[str, Any] | None = None
    seconds: float = 0.0
    metric: str = "rmse"
    best_score: float = math.nan
    carve: str = "random"
    best_model: Any = field(default=None, repr=False)

    def summary(self) -> dict[str, Any]:
        """Everything but the trial table, JSON-friendly."""
        return to_jsonable({
            **attributes(self, "model", "dataset", "split", "sampler", "seed", "valid_fraction",
                         "metric", "carve", "best_score"),
            "space": {k: (v.to_json() if isinstance(v, Range) else list(v)) for k, v in self.space.items()},
            "base_params": self.base_params,
            "n_trials": len(self.trials),
            **attributes(self, "best_trial", "best_valid_rmse", "best_params", "test", "seconds"),
        })

    def to_dict(self) -> dict[str, Any]:
        out = self.summary()
        out["trials"] = to_jsonable(self.trials.to_dict(orient="records"))
        return out

    def to_csv(self, path: str | Path) -> Path:
        """Write the trial table as CSV (atomically)."""
        return write_text_atomic(Path(path), self.trials.to_csv(index=False))

    def to_json(self, path: str | Path) -> Path:
        """Write the summary plus the trial table as JSON (atomically)."""
        return write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")

    def best_params_json(self) -> dict[str, Any]:
        """The content of ``best_params.json``, which ``cfrec train --params-json`` reads."""
        params = {k: v for k, v in self.best_params.items() if k not in HARDWARE_PARAMS}
        return to_jsonable({
            "model": self.model,
            "params": params,
            "valid_rmse": self.best_valid_rmse,
            "metric": self.metric,
            f"valid_{self.metric}": self.best_score,
            "test": self.test,
            "dataset": self.dataset,
            "split": self.split,
            "source": "cfrec tune",
        })

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``trials.csv``, ``trials.json`` and ``best_params.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return {
            "csv": self.to_csv(folder / "trials.csv"),
            "json": self.to_json(folder / "trials.json"),
            "best_params": write_text_atomic(folder / "best_params.json",
                                         json.dumps(self.best_params_json(), indent=2, allow_nan=False) + "\n"),
        }


def load_best_params(path: str | Path) -> tuple[str | None, dict[str, Any]]:
    """Read a ``best_params.json`` (or a plain ``{name: value}`` JSON object) -> ``(model, params)``."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CfrecError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CfrecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise CfrecError(f"{path}: expected a JSON object of hyperparameters")
    if "params" in obj:
        params = obj["params"]
        if not isinstance(params, dict):
            raise CfrecError(f"{path}: field 'params' must be an object")
        model = obj.get("model")
        return (str(model) if model is not None else None), dict(params)
    return None, dict(obj)


# ---------------------------------------------------------------------- search
def tune(
    data_or_split: Split | Interactions,
    model_name: str,
    space: Space,
    *,
    n_trials: int | None = None,
    sampler: Literal["auto", "grid", "tpe"] = "auto",
    seed: int | None = 0,
    base_params: Mapping[str, Any] | None = None,
    valid_fraction: float = 0.1,
    refit: bool = True,
    metric: str | None = None,
    carve: Literal["auto", "random", "per-user", "temporal"] = "auto",
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuningResult:
    """Search hyperparameters of a registered model by a validation metric (RMSE by default).

    Parameters
    ----------
    data_or_split
        A :class:`~cfrec.data.Split` (tuning uses only its train part; the test part is used
        once, for the refitted best model) or plain :class:`~cfrec.data.Interactions` (no test).
    model_name
        Registry name (``"mf"``, ``"als"`` ...).
    space
        ``{name: [values...]}`` for values to try, ``{name: Range(low, high, log=...)}`` (or a
        ``(low, high)`` / ``(low, high, "log")`` tuple) for a numeric range.
    n_trials
        Default: the full grid for ``grid``, 20 for ``tpe``.
    sampler
        ``"grid"`` (every combination of value lists, seeded order), ``"tpe"`` (seeded
        Bayesian search; needed for ranges), ``"auto"`` (grid when there are no ranges).
    seed
        Seeds the sampler, the validation carve and (when the model has a ``seed``
        hyperparameter not set otherwise) the model, so a run is reproducible.
    base_params
        Hyperparameters fixed across trials (a preset's, ``epochs`` ...).
    valid_fraction
        Share of the training part held out to score trials (users and items keep at least
        one training rating, so it measures rating prediction, not cold start).
    refit
        Refit the best parameters on the whole training part and measure the test part.
    metric
        ``"rmse"`` or ``"mae"`` (minimised), or a ranking metric such as ``"ndcg@10"`` or
        ``"recall@20"`` (maximised; full ranking of the items unrated in the fit part, relevant =
        validation rating >= 4, or every validation interaction on a log). Ranking-only models
        can be tuned by ranking metrics only. ``None``: RMSE for a rating model on ratings,
        NDCG@10 for a ranking model or an interaction log (where rating models are refused).
    carve
        How the validation part is held out (:func:`cfrec.data.split.carve_validation`).
        ``"auto"``: for a ranking metric, the part that matches the test protocol (the latest
        ratings of a temporal split, else a per-user holdout); for RMSE/MAE, random rows whose
        user and item stay in the fit part (validation then measures rating prediction, not the
        cold start that dominates a global temporal split's test part).
    on_trial
        Called with each finished trial's row (a dict) for progress display.
    """
    from cfrec.data.split import carve_validation

    optuna = _import_optuna()
    start = time.perf_counter()
    cls = get_spec(model_name).cls()
    short = getattr(cls, "name", "") or model_name
    dims = _normalise_space(cls, space)
    base = check_params(cls, dict(base_params or {}))
    overlap = sorted(set(base) & set(dims))
    if overlap:
        raise CfrecError(f"{', '.join(overlap)} both fixed and searched; give each hyperparameter once")
    if seed is not None and "seed" in param_names(cls) and "seed" not in base and "seed" not in dims:
        base["seed"] = int(seed)
    if not 0 < valid_fraction < 1:
        raise CfrecError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")

    split: Split | None
    if isinstance(data_or_split, Split):
        split, train = data_or_split, data_or_split.train
    elif isinstance(data_or_split, Interactions):
        split, train = None, data_or_split
    else:
        raise CfrecError(f"tune() needs a Split or Interactions, got {type(data_or_split).__name__}")
    from cfrec.evaluation.protocols import metric_names

    probe = cls(**base)
    check_feedback(probe, train)
    if metric is None:
        metric = "rmse" if probe.predicts_ratings else "ndcg@10"
    metric = metric_names([metric], 10)[0]
    carve_kind = carve
    if carve_kind == "auto":
        temporal = split is not None and split.name.startswith("temporal")
        carve_kind = "random" if metric in ERROR_METRICS else ("temporal" if temporal else "per-user")
    fit_part, valid_part = carve_validation(train, valid_fraction, seed, kind=carve_kind)
    if valid_part is None or len(valid_part) == 0:
        raise CfrecError(f"training part too small ({len(train)} ratings) to carve a validation part")
    logger.info("tuning %s: %d fit ratings, %d validation ratings", short, len(fit_part), len(valid_part))
    train_rows = _sample_rows(len(fit_part), TRAIN_RMSE_ROWS, seed)

    has_range = any(isinstance(d, Range) for d in dims.values())
    kind = sampler
    if kind == "auto":
        kind = "tpe" if has_range else "grid"
    if kind == "grid":
        if has_range:
            bad = [k for k, d in dims.items() if isinstance(d, Range)]
            raise CfrecError(f"grid search needs value lists, but {', '.join(bad)} is a range; "
                             f"use sampler 'tpe' or list values")
        grid = {k: list(d) for k, d in dims.items() if not isinstance(d, Range)}  # no ranges here
        grid_size = math.prod(len(values) for values in grid.values())
        n = grid_size if n_trials is None else min(int(n_trials), grid_size)
        optuna_sampler = optuna.samplers.GridSampler(grid, seed=seed)
    elif kind == "tpe":
        n = 20 if n_trials is None else int(n_trials)
        optuna_sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        raise CfrecError(f"unknown sampler {sampler!r}; choose auto, grid or tpe")
    if n < 1:
        raise CfrecError("n_trials must be >= 1")

    rows: list[dict[str, Any]] = []
    tried: dict[int, dict[str, Any]] = {}  # exact values per trial (the table may widen None to NaN)

    def objective(trial: Any) -> float:
        params = {}
        for name, dim in dims.items():
            if isinstance(dim, Range):
                if dim.integer:
                    params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
                else:
                    params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
            else:
                params[name] = trial.suggest_categorical(name, list(dim))
        tried[trial.number] = params
        row = _run_trial(cls, {**base, **params}, fit_part, valid_part, train_rows, metric)
        row = {"trial": trial.number, **params, **row}
        rows.append(row)
        if on_trial is not None:
            on_trial(dict(row))
        return row[score_column] if row["state"] == "complete" else float("nan")

    score_column = "valid_rmse" if metric == "rmse" else f"valid_{metric}"
    minimise = metric in ERROR_METRICS
    with _quiet_optuna(optuna):
        study = optuna.create_study(direction="minimize" if minimise else "maximize", sampler=optuna_sampler)
        study.optimize(objective, n_trials=n, catch=())

    extra = [] if score_column in RESULT_COLUMNS else [score_column]
    table = pd.DataFrame(rows, columns=["trial", *dims, *RESULT_COLUMNS[:2], *extra, *RESULT_COLUMNS[2:]])
    done = table[table["state"] == "complete"]
    if done.empty:
        raise CfrecError(f"all {len(table)} trials failed; first error: {table['error'].iloc[0]}")
    # pandas-stubs types idxmin() as Hashable, which no .loc overload takes; it is a row label
    pick = done[score_column].idxmin() if minimise else done[score_column].idxmax()
    best_row = done.loc[pick]  # type: ignore[call-overload]
    best_tuned = tried[int(best_row["trial"])]
    best_params = cls(**{**base, **best_tuned}).get_params()

    test_metrics: dict[str, Any] | None = None
    best_model = None
    if refit:
        best_model = cls(**best_params)
        best_model.fit(train)
        if split is not None and len(split.test):
            from cfrec.evaluation.protocols import evaluate, summarize_test

            test_metrics = summarize_test(best_model, split.test)
            if metric not in ERROR_METRICS:
                test_metrics[metric] = float(evaluate(best_model, split.test, metrics=[metric])[metric])
            # the same test metric for the untuned model (base settings, searched ones at their
            # defaults): a winner by validation can lose on the test part, and then it is said
            defaults = cls(**base).fit(train)
            test_metrics["defaults"] = float(evaluate(defaults, split.test, metrics=[metric])[metric])
            test_metrics["tuned"] = float(evaluate(best_model, split.test, metrics=[metric])[metric])
            worse = (test_metrics["tuned"] > test_metrics["defaults"] if minimise
                     else test_metrics["tuned"] < test_metrics["defaults"])
            test_metrics["tuned_loses_to_defaults"] = bool(worse)
    return TuningResult(
        model=short,
        space=dims,
        base_params=base,
        trials=table,
        best_params=best_params,
        best_trial=int(best_row["trial"]),
        best_valid_rmse=float(best_row["valid_rmse"]),
        metric=metric,
        best_score=float(best_row[score_column]),
        carve=carve_kind,
        sampler=kind,
        seed=seed,
        valid_fraction=valid_fraction,
        dataset=train.name,
        split=split.name if split is not None else "",
        test=test_metrics,
        seconds=time.perf_counter() - start,
        best_model=best_model,
    )


def _run_trial(
    cls: type[Recommender],
    params: dict[str, Any],
    fit_part: Interactions,
    valid_part: Interactions,
    train_rows: np.ndarray,
    metric: str = "rmse",
) -> dict[str, Any]:
    """Fit one configuration; a diverging or invalid configuration is a failed trial, not a crash."""
    from cfrec.evaluation.protocols import evaluate
    from cfrec.metrics import mae, rmse

    t0 = time.perf_counter()
    model = cls(**params)
    if metric in ERROR_METRICS and not model.predicts_ratings:
        raise CfrecError(f"{cls.__name__} with {params} scores preferences, not ratings: tuning it by "
                         f"validation {metric.upper()} means nothing; tune it by a ranking metric "
                         "(metric='ndcg@10', --metric ndcg@10)")
    try:
        model.fit(fit_part)
    except (CfrecError, ValueError, FloatingPointError) as exc:
        logger.info("trial with %s failed: %s", params, exc)
        return {"train_rmse": math.nan, "valid_rmse": math.nan, f"valid_{metric}": math.nan,
                "gap": math.nan, "epochs_run": 0, "fit_seconds": time.perf_counter() - t0,
                "state": "fail", "error": str(exc)}
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"train_rmse": math.nan, "valid_rmse": math.nan, "gap": math.nan}
    if model.predicts_ratings:  # train vs validation error shows over-fitting, as in the lab
        tr = fit_part.subset(train_rows) if len(train_rows) < len(fit_part) else fit_part
        row["train_rmse"] = float(rmse(tr.ratings, model.predict(tr.raw_users(), tr.raw_items())))
        valid_pred = model.predict(valid_part.raw_users(), valid_part.raw_items())
        row["valid_rmse"] = float(rmse(valid_part.ratings, valid_pred))
        row["gap"] = row["valid_rmse"] - row["train_rmse"]
        if metric == "mae":
            row["valid_mae"] = float(mae(valid_part.ratings, valid_pred))
    if metric not in ERROR_METRICS:
        row[f"valid_{metric}"] = float(evaluate(model, valid_part, metrics=[metric])[metric])
    score = row["valid_rmse"] if metric == "rmse" else row[f"valid_{metric}"]
    history = getattr(model, "history_", None) or []
    return {**row, "epochs_run": len(history), "fit_seconds": seconds,
            "state": "complete" if math.isfinite(score) else "fail", "error": ""}


def _sample_rows(n: int, cap: int, seed: int | None) -> np.ndarray:
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def grid_size(space: Space) -> int:
    """Number of combinations of a space made of value lists."""
    return math.prod(len(v) for v in space.values() if not isinstance(v, Range))


# ---------------------------------------------------------------------- helpers
def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise CfrecError("tuning needs Optuna: pip install 'cfrec[tune]'") from None
    return optuna


@contextlib.contextmanager
def _quiet_optuna(optuna: Any) -> Iterator[None]:
    """Silence Optuna's per-trial INFO lines for the duration (restoring the caller's level)."""
    level = optuna.logging.get_verbosity()
    if logger.isEnabledFor(logging.DEBUG):
        yield
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


