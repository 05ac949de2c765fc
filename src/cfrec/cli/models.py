"""CLI commands ``train``, ``recommend`` and ``similar``.

``train`` fits one model on the train part of a split, reports test RMSE/MAE (and how many test
predictions had to fall back to biases because the user or item was not in training) and saves
the model folder. ``recommend`` and ``similar`` load such a folder.

Choices made here (also in each command's help):

* ``--split auto`` (the default) is ML-100K's official ``u1`` fold when the dataset is ML-100K,
  else a seeded random 80/20 split. ``--split none`` trains on every rating (no test score).
* Split specs that yield several folds (``folds``, ``cv5``) are rejected: ``train`` saves one
  model; cross-validation belongs to ``cfrec evaluate``/``cfrec benchmark``.
* Hyperparameters are layered: ``--preset`` < ``--params-json`` < ``--param`` < the flags
  (``--epochs``, ``--lr`` ...). Values are typed from the model's ``__init__`` signature.
* ``similar --item``: a query that is an item id in the model wins; otherwise an exact title
  (case-insensitive), otherwise a title substring. Several matches -> the most-rated one (in
  training) is used and the others are listed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from cfrec._io import to_jsonable
from cfrec.cli._app import app, console, err_console, fail, say
from cfrec.cli._options import load_data, with_data_options
from cfrec.cli._stages import StageLog
from cfrec.data.options import DataOptions
from cfrec.errors import CfrecError
from cfrec.explain import because_rated
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


def load_model(path: Path) -> Any:
    from cfrec.models.base import Recommender

    return Recommender.load(path)


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(to_jsonable(obj), indent=2, allow_nan=False))



def _item_meta(model: Any, raw_ids: Any) -> list[dict[str, Any]]:
    """``{"item_id", "title", "year"}`` for raw item ids, from the model's saved metadata."""
    raw = list(np.atleast_1d(np.asarray(raw_ids, dtype=object)))
    info = getattr(model, "item_info_", None)
    out = []
    for r in raw:
        title, year = None, None
        if info is not None and r in info.index:
            row = info.loc[r]
            if "title" in info.columns and isinstance(row["title"], str) and row["title"]:
                title = row["title"]
            if "year" in info.columns and row["year"] is not None and not _isnan(row["year"]):
                year = int(row["year"])
        out.append({"item_id": to_jsonable(r), "title": title, "year": year})
    return out


def _isnan(v: Any) -> bool:
    try:
        return bool(np.isnan(v))
    except (TypeError, ValueError):
        return False


def _item_counts(model: Any) -> np.ndarray:
    """Training ratings per model item index (from the saved seen-items matrix)."""
    seen = model.seen_
    return np.bincount(seen.indices, minlength=seen.shape[1]).astype(np.int64)


def _fmt_fallback(counts: dict[str, int]) -> str:
    parts = [f"{counts[k]:,} {k.replace('_', ' ')}" for k in ("unknown_user", "unknown_item", "unknown_both")
             if counts.get(k)]
    return ", ".join(parts) if parts else "none"


# ---------------------------------------------------------------------- train
@app.command()
@with_data_options
def train(
    dataset: Annotated[str, typer.Argument(help="MovieLens name (ml-100k, ml-1m ...) or a ratings file/folder.")],
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
) -> None:
    """Train a model on the train part of a split, score the test part and save the model.

    Each stage (load, split, fit, evaluate, save) is timed with its peak memory.
    """
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
    to_err = json_out
    stages = StageLog()
    with stages.stage("load"):
        data = load_data(dataset, data_options)
    with stages.stage("split"):
        chosen = single_split(data, split, seed=seed, data_home=folds_home(dataset))
    train_part = data if chosen is None else chosen.train
    split_name = "none" if chosen is None else chosen.name
    cold = chosen.cold_start() if chosen is not None else None
    say(f"training {cls.name} ({cls.__name__}) on {data.name}, split {split_name}: "
        f"{len(train_part):,} train / {0 if chosen is None else len(chosen.test):,} test ratings", stderr=to_err)

    def on_epoch(rec: dict[str, Any]) -> None:
        total = rec.get("epochs", "?")
        line = f"  epoch {rec['epoch']:>3}/{total}  train_loss {rec['train_loss']:.4f}"
        if rec.get("valid_rmse") is not None:
            line += f"  valid_rmse {rec['valid_rmse']:.4f}"
        say(line + f"  ({rec.get('seconds', 0.0):.1f} s)", stderr=to_err)

    with stages.stage("fit"):
        try:
            estimator.fit(train_part, on_epoch=on_epoch)
        except ValueError as exc:
            if isinstance(exc, CfrecError):
                raise
            fail(f"{cls.name} training failed: {exc}")
    seconds = stages.stages[-1].seconds

    test = baseline_rmse = None
    if chosen is not None and len(chosen.test):
        with stages.stage("evaluate"):
            test = summarize_test(estimator, chosen.test)
            if estimator.predicts_ratings and cls is not Baseline:
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
        _echo_json(summary)
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


# ---------------------------------------------------------------------- recommend
def _user_history(model: Any, user_raw: Any, u_idx: int, dataset: str | None) -> tuple[list[dict[str, Any]] | None, str]:
    """The user's training ratings (best first) from the reloaded dataset, or None with a reason."""
    from cfrec.data import load_dataset

    info = getattr(model, "fit_info_", {}) or {}
    candidates = [dataset] if dataset else [c for c in (info.get("source"), info.get("dataset")) if c]
    if not candidates:
        return None, "the model does not record its dataset; pass --dataset to show the user's ratings"
    reasons = []
    for ref in candidates:
        try:
            data = load_dataset(ref, download=False)
        except (CfrecError, OSError) as exc:
            reasons.append(f"{ref}: {exc}")
            continue
        du = data.user_map.to_index(np.asarray([user_raw]), missing="-1")[0]
        if du < 0:
            return [], ""
        mask = data.users == du
        items_raw = data.item_map.to_raw(data.items[mask])
        ratings = data.ratings[mask]
        times = data.timestamps[mask]
        seen = model.seen_
        train_items = model.item_map_.to_raw(seen.indices[seen.indptr[u_idx]:seen.indptr[u_idx + 1]])
        keep = np.isin(items_raw, train_items)  # only what the model was trained on
        items_raw, ratings, times = items_raw[keep], ratings[keep], times[keep]
        order = np.lexsort((-times, -ratings))
        out = []
        for meta, r in zip(_item_meta(model, items_raw[order]), ratings[order], strict=True):
            out.append({**meta, "rating": float(r)})
        return out, ""
    return None, "dataset unavailable (" + "; ".join(reasons) + "); pass --dataset to show the user's ratings"


def _read_user_ids(path: Path) -> list[str]:
    """Raw user ids from a file, one a line (a first line ``user``/``user_id``/``userId`` is a header)."""
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8-sig").splitlines()]
    except FileNotFoundError:
        raise CfrecError(f"{path}: no such file (--users expects a file of user ids, one a line)") from None
    except UnicodeDecodeError:
        raise CfrecError(f"{path}: not a UTF-8 text file of user ids, one a line (--users)") from None
    ids = [ln.split(",")[0].strip() for ln in lines if ln]
    if ids and ids[0].lower().replace("_", "") in ("user", "userid", "uid"):
        ids = ids[1:]
    if not ids:
        raise CfrecError(f"{path}: holds no user id (--users expects one a line)")
    return ids


def _recommend_all(model: Any, users_file: Path | None, out: Path | None, k: int, include_seen: bool) -> None:
    from cfrec.models.export import write_recommendations

    if out is None:
        fail("--all writes every user's list to a file: give --out FILE.csv or FILE.parquet")
    users = _read_user_ids(users_file) if users_file is not None else None
    written = write_recommendations(model, out, users=users, k=k, exclude_seen=not include_seen)
    unknown = written.users - written.known_users
    say(f"wrote {written.rows:,} recommendations for {written.users:,} users to {written.path.resolve()}"
        + (f" ({unknown:,} unknown to the model got its cold-start list)" if unknown else ""))


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Raw user id.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many recommendations.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Also rank items the user rated in training.")] = False,
    history: Annotated[int, typer.Option(min=0, help="How many of the user's top-rated training items "
                                                     "to show (0: skip loading the dataset).")] = 5,
    dataset: Annotated[str | None, typer.Option(help="Dataset to read the user's ratings from "
                                                     "(default: the one the model was trained on).")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user's list (or those of --users), "
                                                          "streamed to --out.")] = False,
    users_file: Annotated[Path | None, typer.Option("--users", help="With --all: a file of user ids, one "
                                                                   "a line.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="With --all: the .csv or .parquet file "
                                                                 "to write (replaced atomically).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k items for a user, ranked by the model's score (with predicted ratings for rating models); a new user gets the model's cold-start (popular) list."""
    model = load_model(model_dir)
    if all_users or users_file is not None:
        if user is not None:
            fail("give either --user or --all (with --users FILE), not both")
        _recommend_all(model, users_file, out, k, include_seen)
        return
    if user is None:
        fail("give --user ID (or --all --out FILE for every user)")
    if out is not None:
        fail("--out goes with --all; one user's list is printed")
    u_idx = int(model.user_map_.to_index(np.asarray([user]), missing="-1")[0])
    known = u_idx >= 0
    user_raw: Any = model.user_map_.to_raw(u_idx) if known else user
    rated: list[dict[str, Any]] | None = None
    note = ""
    if known and history > 0:
        rated, note = _user_history(model, user_raw, u_idx, dataset)
    recs = model.recommend(user_raw, k, exclude_seen=not include_seen)
    seen_set: set[Any] = set()
    if known:
        seen = model.seen_
        seen_set = set(model.item_map_.to_raw(seen.indices[seen.indptr[u_idx]:seen.indptr[u_idx + 1]]).tolist())
    ratings = recs.ratings if recs.ratings is not None else [None] * len(recs)
    liked = [r["item_id"] for r in rated] if rated else sorted(seen_set)
    hi = model.rating_scale_[1]
    if rated:  # explain by what the user liked most when their ratings are at hand
        top = [r["item_id"] for r in rated if r["rating"] >= hi - 1]
        liked = top or liked
    because = because_rated(model, recs.ids, liked) if known else None
    reasons = because.items if because is not None else [None] * len(recs)
    rows = [{**meta, "score": float(s), "predicted_rating": None if r is None else float(r),
             "seen": meta["item_id"] in seen_set,
             "because": None if b is None else _item_meta(model, [b])[0]}
            for meta, s, r, b in zip(_item_meta(model, recs.ids), recs.scores, ratings, reasons, strict=True)]
    n_train = len(seen_set)
    if json_out:
        _echo_json({
            "user": to_jsonable(user_raw),
            "model": model.name,
            "known": known,
            "fallback": None if known else "popular",
            "n_train_ratings": n_train,
            "rated": None if rated is None else rated[:history],
            "recommendations": rows,
        })
        return
    ranked_by = (f"ranked by {type(model).__name__} ({model.name})" + ("; scores are predicted ratings "
                 "before clipping" if model.predicts_ratings else "; scores are preferences, not ratings"))
    if known:
        say(f"user {user_raw}: {n_train} ratings in training; {ranked_by}")
        if rated:
            table = Table(title=escape(f"top-rated by user {user_raw} (training)"), title_justify="left")
            table.add_column("rating", justify="right")
            table.add_column("item", justify="right")
            if _has_titles(model):
                table.add_column("title")
            for row in rated[:history]:
                table.add_row(f"{row['rating']:g}", escape(str(row["item_id"])), escape(_title(row)))
            console.print(table)
        elif note:
            console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    else:
        how = "item bias (mu + b_i)" if model.predicts_ratings else "popularity"
        console.print(f"user {user!r} is not in the model (a new user): showing the most popular items by "
                      f"{how}, not personalised recommendations", highlight=False, soft_wrap=True, markup=False)
    table = Table(title=escape(("recommended" if known else "popular (new-user fallback)") + f" for user {user_raw}"),
                  title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("item", justify="right")
    titled = _has_titles(model)
    if titled:
        table.add_column("title")
    table.add_column("score", justify="right")
    if model.predicts_ratings:
        table.add_column("predicted rating", justify="right")
    if include_seen:
        table.add_column("rated", justify="center")
    explained = any(row["because"] is not None for row in rows)
    if explained:
        table.add_column("because you rated")
    for rank, row in enumerate(rows, 1):
        cells = [str(rank), escape(str(row["item_id"]))]
        cells += [escape(_title(row))] if titled else []
        cells.append(f"{row['score']:.3f}")
        if model.predicts_ratings:
            cells.append(f"{row['predicted_rating']:.2f}")
        cells += (["yes" if row["seen"] else ""] if include_seen else [])
        if explained:
            cells.append(escape(_name(row["because"])) if row["because"] is not None else "")
        table.add_row(*cells)
    console.print(table)
    if not known:
        return
    say(ranked_by + ("; 'because you rated' is the rated item with the most similar item vector"
                     if explained else ""))


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Raw user id.")],
    item: Annotated[list[str], typer.Option("--item", "-i", help="Raw item id (repeatable).")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predicted rating of items for a user (and, for ranking models, their ranking score)."""
    model = load_model(model_dir)
    u_idx = int(model.user_map_.to_index(np.asarray([user]), missing="-1")[0])
    user_raw: Any = model.user_map_.to_raw(u_idx) if u_idx >= 0 else user
    i_idx = model.item_map_.to_index(np.asarray(item), missing="-1")
    items_raw = [model.item_map_.to_raw(i) if i >= 0 else v for i, v in zip(i_idx.tolist(), item, strict=True)]
    pred = model.predict_detailed(np.asarray([user_raw] * len(items_raw), dtype=object), np.asarray(items_raw, dtype=object))
    how = {0: "personalised", 1: "unknown user: mu + b_i", 2: "unknown item: mu + b_u", 3: "both unknown: mu"}
    rows = [{**meta, "prediction": float(p), "how": how[int(f)]}
            for meta, p, f in zip(_item_meta(model, items_raw), pred.ratings, pred.fallback, strict=True)]
    if json_out:
        _echo_json({"user": to_jsonable(user_raw), "model": model.name, "predicts_ratings": model.predicts_ratings,
                    "predictions": rows})
        return
    if not model.predicts_ratings:
        say(f"note: {type(model).__name__} ranks by preference; its predictions are preferences mapped onto "
            f"the rating scale {model.rating_scale_[0]:g}..{model.rating_scale_[1]:g}, not rating estimates")
    table = Table(title=escape(f"predicted for user {user_raw} by {type(model).__name__}"), title_justify="left")
    table.add_column("item", justify="right")
    if _has_titles(model):
        table.add_column("title")
    table.add_column("prediction", justify="right")
    table.add_column("how")
    for row in rows:
        cells = [escape(str(row["item_id"]))] + ([escape(_title(row))] if _has_titles(model) else [])
        table.add_row(*cells, f"{row['prediction']:.3f}", row["how"])
    console.print(table)


def _title(row: dict[str, Any]) -> str:
    """Title with year for display ("" when the dataset had no titles)."""
    title = row.get("title") or ""
    if title and row.get("year") and f"({row['year']})" not in title:
        title = f"{title} ({row['year']})"
    return title


def _name(row: dict[str, Any]) -> str:
    """How an item is named in a sentence: its title, else ``item <id>``."""
    return _title(row) or f"item {row['item_id']}"


def _has_titles(model: Any) -> bool:
    info = getattr(model, "item_info_", None)
    return info is not None and "title" in info.columns


# ---------------------------------------------------------------------- similar
def resolve_item(model: Any, query: str) -> tuple[Any, list[dict[str, Any]]]:
    """Raw item id for an id or title query, plus every title match (most-rated first).

    An id present in the model wins; then exact titles (case-insensitive); then substrings.
    Several matches -> the most-rated in training is chosen.
    """
    idx = int(model.item_map_.to_index(np.asarray([query]), missing="-1")[0])
    counts = _item_counts(model)
    if idx >= 0:
        raw = model.item_map_.to_raw(idx)
        return raw, [{**_item_meta(model, raw)[0], "n_ratings": int(counts[idx])}]
    info = getattr(model, "item_info_", None)
    if info is None or "title" not in info.columns:
        raise CfrecError(f"no item with id {query!r} in the model, and it has no titles to search")
    titles = info["title"].reindex(model.item_map_.ids).fillna("").astype(str).str.casefold()
    needle = query.strip().casefold()
    if not needle:
        raise CfrecError("empty --item query")
    hits = np.flatnonzero((titles == needle).to_numpy())
    if not len(hits):
        hits = np.flatnonzero(titles.str.contains(needle, regex=False).to_numpy())
    if not len(hits):
        raise CfrecError(f"no item id or title matches {query!r}")
    hits = hits[np.argsort(-counts[hits], kind="stable")]
    raws = model.item_map_.to_raw(hits)
    matches = [{**m, "n_ratings": int(c)} for m, c in zip(_item_meta(model, raws), counts[hits], strict=True)]
    return raws[0], matches


@app.command()
def similar(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    item: Annotated[str, typer.Option("--item", "-i", help="Item id, or part of a title (case-insensitive); "
                                                           "several matches -> the most-rated is used.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many neighbours.")] = 5,
    min_ratings: Annotated[int, typer.Option(min=0, help="Only neighbours with at least this many training "
                                                         "ratings (rare items have noisy vectors).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Items closest to one item by cosine similarity of the model's item vectors."""
    model = load_model(model_dir)
    raw, matches = resolve_item(model, item)
    counts = _item_counts(model)
    n_items = len(model.item_map_)
    want = k if min_ratings == 0 else n_items - 1
    recs = model.similar_items(raw, want)
    ids, sims = recs.ids, recs.scores
    if min_ratings:
        keep = counts[model.item_map_.to_index(ids)] >= min_ratings
        ids, sims = ids[keep][:k], sims[keep][:k]
    n_idx = model.item_map_.to_index(ids) if len(ids) else np.empty(0, dtype=np.int64)
    rows = [{**m, "similarity": float(s), "n_ratings": int(c)}
            for m, s, c in zip(_item_meta(model, ids), sims, counts[n_idx], strict=True)]
    query_row = matches[0]
    if json_out:
        _echo_json({"query": item, "item": query_row, "matches": matches, "neighbours": rows})
        return
    if len(matches) > 1:
        others = "; ".join(f"{_name(m)} [id {m['item_id']}, {m['n_ratings']} ratings]" for m in matches[1:6])
        more = f" and {len(matches) - 6} more" if len(matches) > 6 else ""
        console.print(f"{len(matches)} titles match {item!r}; using the most-rated. Others: {others}{more}. "
                      f"Pass an id or a longer title to pick another.", highlight=False, soft_wrap=True, markup=False)
    table = Table(title=escape(f"most similar to {_name(query_row)} [id {query_row['item_id']}, "
                               f"{query_row['n_ratings']} ratings]"), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("item", justify="right")
    titled = _has_titles(model)
    if titled:
        table.add_column("title")
    table.add_column("ratings", justify="right")
    table.add_column("cosine", justify="right")
    for rank, row in enumerate(rows, 1):
        cells = [str(rank), escape(str(row["item_id"]))]
        cells += [escape(_title(row))] if titled else []
        table.add_row(*cells, str(row["n_ratings"]), f"{row['similarity']:.3f}")
    console.print(table)
