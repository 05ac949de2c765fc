"""The quickstart pipeline behind ``cfrec quickstart`` (and ``make demo``).

ML-100K (from the data home, downloaded when missing) -> statistics -> leakage-free split ->
the best available latent-factor model -> evaluation against the bias-only baseline ->
recommendations and similar items -> a saved model and a self-contained HTML report.

Offline with no cached copy it still runs the whole pipeline, on a built-in synthetic dataset of
the same shape, and says so in every output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cfrec._io import attributes, to_jsonable, write_json_atomic
from cfrec.data.interactions import Interactions
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError, DatasetUnavailable
from cfrec.models.registry import QUICKSTART_MODEL, QUICKSTART_PARAMS, model_class

if TYPE_CHECKING:
    import pandas as pd

    from cfrec.app.report import SimilarItems, UserRecs
    from cfrec.data.split import Split
    from cfrec.models.base import Recommender

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_OUT", "ML100K_SHAPE", "QuickstartResult", "run_lab_exercises", "run_quickstart"]

DEFAULT_OUT = "cfrec-quickstart"
#: (users, items, ratings) of ML-100K: the shape of the synthetic stand-in.
ML100K_SHAPE: tuple[int, int, int] = (943, 1682, 100_000)
SYNTHETIC_NAME = "synthetic (ML-100K-shaped)"

Progress = Callable[[str], None]


@dataclass
class QuickstartResult:
    """Everything the quickstart produced (paths, numbers, example outputs)."""

    out_dir: Path
    report_path: Path
    model_dir: Path
    summary_path: Path
    dataset: str
    synthetic: bool
    unavailable_reason: str | None
    model_name: str
    params: dict[str, Any]
    split: str
    stats: dict[str, Any]
    cold_start: dict[str, Any]
    metrics: dict[str, float]
    baseline_metrics: dict[str, float] | None
    recommendations: list[UserRecs] = field(default_factory=list)
    similar: list[SimilarItems] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    recommender_dir: Path | None = None
    recommender_metrics: dict[str, float] = field(default_factory=dict)
    recommender_name: str = ""

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (what ``summary.json`` holds)."""
        return to_jsonable({
            **attributes(self, "dataset", "synthetic", "unavailable_reason"),
            "model": self.model_name,
            **attributes(self, "params", "split", "stats", "cold_start", "metrics",
                         "baseline_metrics"),
            "recommender": self.recommender_name,
            **attributes(self, "recommender_metrics", "recommender_dir"),  # a Path becomes a str
            "recommendations": {str(r.user_id): r.recommended["item_id"].tolist() for r in self.recommendations},
            "similar": {str(s.item_id): s.neighbours["item_id"].tolist() for s in self.similar},
            "seconds": self.seconds,
            "report": str(self.report_path),
            "model_dir": str(self.model_dir),
        })


def _model_params(name: str, params: Mapping[str, Any] | None, epochs: int | None) -> dict[str, Any]:
    """The quickstart's settings for its own model (registry ``QUICKSTART_PARAMS``), an epoch or
    iteration override, then ``params``; checked against the model's hyperparameters."""
    accepted = set(model_class(name)._param_names())
    out = dict(QUICKSTART_PARAMS) if name == QUICKSTART_MODEL else {}
    if "seed" in accepted:
        out.setdefault("seed", 0)
    if epochs is not None:
        for key in ("epochs", "iterations"):
            if key in accepted:
                out[key] = int(epochs)
    out.update(params or {})
    unknown = sorted(set(out) - accepted)
    if unknown:
        raise CfrecError(f"model {name!r} has no hyperparameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(accepted))}")
    return out


def load_or_synthesize(dataset: str = "ml-100k", *, data_options: DataOptions | None = None,
                       data_home: str | Path | None = None, download: bool = True, synthetic: bool = False,
                       synthetic_shape: tuple[int, int, int] | None = None,
                       seed: int = 0) -> tuple[Interactions, str | None]:
    """The dataset, or a MovieLens-shaped synthetic stand-in when it cannot be had.

    Returns ``(data, reason)``; ``reason`` is ``None`` for the real data and says why the
    synthetic set is used otherwise (``synthetic=True`` forces it).
    """
    from cfrec.data import make_synthetic

    reason: str | None = None
    if synthetic:
        reason = "synthetic data was requested"
    else:
        from cfrec.data import load_dataset

        try:
            return load_dataset(dataset, data_home=data_home, download=download, options=data_options), None
        except DatasetUnavailable as exc:
            reason = f"could not get {dataset}: {exc}"
            logger.warning("%s; using synthetic data instead", reason)
    n_users, n_items, n_ratings = ML100K_SHAPE if synthetic_shape is None else synthetic_shape
    data = make_synthetic(n_users, n_items, n_ratings, seed=seed, name=SYNTHETIC_NAME)
    return data, reason


def run_quickstart(
    out_dir: str | Path = DEFAULT_OUT,
    *,
    dataset: str = "ml-100k",
    data_options: DataOptions | None = None,
    data_home: str | Path | None = None,
    download: bool = True,
    synthetic: bool = False,
    synthetic_shape: tuple[int, int, int] | None = None,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    split: str = "user-temporal:0.2",
    k: int = 10,
    seed: int = 0,
    exercises: bool = True,
    progress: Progress | None = None,
) -> QuickstartResult:
    """Run the whole pipeline and write ``report.html``, ``model/`` and ``summary.json`` to ``out_dir``.

    Parameters
    ----------
    out_dir
        Output folder (created; files in it are replaced atomically).
    dataset, data_options, data_home, download
        What to load (a MovieLens name or a path, read with the data options) and from where.
    synthetic, synthetic_shape
        Force the synthetic stand-in, and its (users, items, ratings) when it is used (default
        :data:`ML100K_SHAPE`).
    model, params, epochs
        Model name (default: the registry's quickstart model, BiasedMF), extra
        hyperparameters, and an epoch/iteration count override (for quick runs).
    split
        Split spec for ``make_splits``. The default holds out each user's latest 20% of ratings:
        every test user is known, so the metrics measure the model rather than cold-start
        fallbacks (the global ``temporal`` split's test part is ~85% unknown users on ML-100K).
    exercises
        Also run the course lab's two seed exercises (the lab's BiasedMF recipe with embedding
        size 16..256, and with weight decay 0..1e-3, scored on a validation part of the training
        data) and plot them in the report; about 20 s on two cores.
    progress
        Called with one human-readable line per step (the CLI prints them).
    """
    from cfrec.app.report import (
        build_report,
        compare_to_baseline,
        dataset_statistics,
        describe_ranker,
        evaluate_model,
    )
    from cfrec.data import make_splits
    from cfrec.models.registry import get_spec, make_model

    say = progress or (lambda _msg: None)
    seconds: dict[str, float] = {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    say(f"loading {dataset}")
    data, reason = load_or_synthesize(dataset, data_options=data_options, data_home=data_home, download=download,
                                      synthetic=synthetic, synthetic_shape=synthetic_shape, seed=seed)
    is_synthetic = reason is not None
    if is_synthetic:
        say(f"SYNTHETIC DATA: {reason}. Running the whole pipeline on a built-in synthetic dataset "
            f"shaped like ML-100K ({len(data):,} ratings, {data.n_users:,} users, {data.n_items:,} items); "
            "its numbers say nothing about real MovieLens users.")
    stats = dataset_statistics(data)
    seconds["load"] = time.perf_counter() - t
    say(f"{data.name}: {len(data):,} ratings by {int((data.user_counts() > 0).sum()):,} users on "
        f"{int((data.item_counts() > 0).sum()):,} items")

    t = time.perf_counter()
    the_split = make_splits(data, split, seed=seed, data_home=data_home)[0]
    cold = the_split.cold_start()
    seconds["split"] = time.perf_counter() - t
    say(f"split {the_split.name}: {len(the_split.train):,} training / {len(the_split.test):,} test "
        f"ratings ({cold.share:.1%} of test ratings have an unseen user or item)")

    name = get_spec(model or QUICKSTART_MODEL).name
    hyper = _model_params(name, params, epochs)
    estimator: Recommender = make_model(name, **hyper)
    say(f"training {type(estimator).__name__} ({', '.join(f'{k_}={v}' for k_, v in hyper.items()) or 'defaults'})")

    def on_epoch(rec: dict[str, Any]) -> None:
        parts = [f"epoch {rec.get('epoch')}/{rec.get('epochs', '?')}"]
        for key in ("train_loss", "train_rmse", "valid_rmse"):
            if rec.get(key) is not None:
                parts.append(f"{key} {rec[key]:.4f}")
        say("  " + ", ".join(parts))

    t = time.perf_counter()
    estimator.fit(the_split.train, on_epoch=on_epoch)
    seconds["train"] = time.perf_counter() - t
    # Record where the data and split came from, so `cfrec report model/` can rebuild them.
    estimator.fit_info_.update({"split": the_split.name, "split_seed": seed})
    if is_synthetic:
        shape = list(ML100K_SHAPE if synthetic_shape is None else synthetic_shape)
        estimator.fit_info_["synthetic"] = {"shape": shape, "seed": seed, "name": data.name}
    else:
        source = Path(dataset)
        estimator.fit_info_["source"] = str(source.resolve()) if source.exists() else dataset
    model_dir = estimator.save(out / "model")

    t = time.perf_counter()
    say("evaluating on the test part (and the bias-only baseline for comparison)")
    metrics = evaluate_model(estimator, the_split.test, train=the_split.train, k=k)
    baseline = None if name == "baseline" else compare_to_baseline(the_split.train, the_split.test, k=k)
    seconds["evaluate"] = time.perf_counter() - t
    line = f"RMSE {metrics.get('rmse', float('nan')):.4f}"
    if baseline is not None:
        line += f" (baseline {baseline.get('rmse', float('nan')):.4f})"
    say(line)

    t = time.perf_counter()
    recommender = best_recommender(estimator, the_split.train)
    recommender_dir = None
    ranking: dict[str, float] = {}
    if recommender is not estimator:
        say(f"recommendations: {describe_ranker(recommender)}")
        ranking = evaluate_model(recommender, the_split.test, train=the_split.train, k=k)
        say(f"NDCG@{k} {ranking[f'ndcg@{k}']:.4f} for the two-stage lists "
            f"({type(estimator).__name__} alone {metrics.get(f'ndcg@{k}', float('nan')):.4f})")
        recommender.fit_info_.update(estimator.fit_info_)
        recommender_dir = recommender.save(out / "recommender")
    seconds["recommender"] = time.perf_counter() - t

    tuning_tables = []
    if exercises:
        t = time.perf_counter()
        tuning_tables = run_lab_exercises(the_split, seed=seed, progress=say)
        seconds["exercises"] = time.perf_counter() - t

    t = time.perf_counter()
    notes = [f"SYNTHETIC DATA: {reason}. The pipeline ran on a built-in synthetic dataset shaped "
             "like ML-100K instead."] if is_synthetic else []
    report = build_report(estimator, data, split=the_split, metrics=metrics, baseline_metrics=baseline,
                          tuning=tuning_tables, k=k, synthetic=is_synthetic, notes=notes, data_home=data_home,
                          recommender=recommender, progress=lambda msg: say(f"report: {msg}"))
    report_path = report.write(out / "report.html")
    seconds["report"] = time.perf_counter() - t

    result = QuickstartResult(
        out_dir=out, report_path=report_path, model_dir=model_dir, summary_path=out / "summary.json",
        dataset=data.name, synthetic=is_synthetic, unavailable_reason=reason,
        model_name=type(estimator).__name__, params=estimator.get_params(), split=the_split.name,
        stats=stats, cold_start=cold.to_dict(), metrics=metrics, baseline_metrics=baseline,
        recommendations=report.users, similar=report.similar, seconds=seconds,
        recommender_dir=recommender_dir, recommender_metrics=ranking,
        recommender_name=describe_ranker(recommender),
    )
    write_json_atomic(result.summary_path, result.summary())
    return result


def best_recommender(model: Recommender, train: Interactions) -> Recommender:
    """The model whose lists to show: for a rating model, a two-stage one (EASE candidates, or
    iALS's for a catalogue too large for EASE, ordered with ``model``'s predicted ratings); a
    ranking model shows its own."""
    from cfrec.models.ease import EASE
    from cfrec.models.ials import IALS
    from cfrec.models.two_stage import TwoStage

    if not model.predicts_ratings:
        return model
    n_items = len(model.item_map_)
    retriever: Recommender = EASE() if n_items <= EASE().max_items else IALS()
    return TwoStage.from_parts(retriever.fit(train), model)


def run_lab_exercises(split: Split, *, seed: int = 0, progress: Progress | None = None) -> list[pd.DataFrame]:
    """The course lab's seed exercises on ``split``'s training part: trial tables for the report.

    Runs the ``lab-dim`` and ``lab-wd`` tuning presets (grid search, validation carved from the
    training part; the test part is not touched).
    """
    from cfrec.evaluation.tuning import preset_space, tune

    say = progress or (lambda _msg: None)
    tables = []
    for preset in ("lab-dim", "lab-wd"):
        base, space = preset_space(preset)
        keys = (*space, "train_rmse", "valid_rmse")
        say(f"lab exercise {preset}: {', '.join(f'{k}={v}' for k, v in space.items())}")

        def on_trial(row: dict[str, Any], keys: tuple[str, ...] = keys) -> None:
            # hyperparameters as given (1e-05 stays 1e-05), scores to 4 decimals
            say("  " + ", ".join(f"{k} {row.get(k):.4f}" if k.endswith("rmse") and isinstance(row.get(k), float)
                                 else f"{k} {row.get(k):g}" if isinstance(row.get(k), float)
                                 else f"{k} {row.get(k)}" for k in keys))

        result = tune(split, "mf", space, base_params=base, seed=seed, refit=False, on_trial=on_trial)
        tables.append(result.trials)
    return tables
