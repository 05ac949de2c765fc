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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from cfrec._io import to_jsonable
from cfrec.cli._app import app, console, err_console, fail
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
def train(
    dataset: Annotated[str, typer.Argument(help="MovieLens name (ml-100k, ml-1m ...) or a ratings file/folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to save the model into (replaced atomically).")],
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
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary (progress goes to stderr).")] = False,
) -> None:
    """Train a model on the train part of a split, score the test part and save the model."""
    from cfrec.data import load_dataset
    from cfrec.data.split import folds_home, single_split
    from cfrec.evaluation.protocols import summarize_test
    from cfrec.evaluation.tuning import load_best_params
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
    out_console = err_console if json_out else console
    data = load_dataset(dataset)
    chosen = single_split(data, split, seed=seed, data_home=folds_home(dataset))
    train_part = data if chosen is None else chosen.train
    split_name = "none" if chosen is None else chosen.name
    cold = chosen.cold_start() if chosen is not None else None
    out_console.print(
        f"training {cls.name} ({cls.__name__}) on {data.name}, split {split_name}: "
        f"{len(train_part):,} train / {0 if chosen is None else len(chosen.test):,} test ratings",
        highlight=False, soft_wrap=True, markup=False,
    )

    def on_epoch(rec: dict[str, Any]) -> None:
        total = rec.get("epochs", "?")
        line = f"  epoch {rec['epoch']:>3}/{total}  train_loss {rec['train_loss']:.4f}"
        if rec.get("valid_rmse") is not None:
            line += f"  valid_rmse {rec['valid_rmse']:.4f}"
        line += f"  ({rec.get('seconds', 0.0):.1f} s)"
        out_console.print(line, highlight=False, soft_wrap=True, markup=False)

    start = time.perf_counter()
    try:
        estimator.fit(train_part, on_epoch=on_epoch)
    except ValueError as exc:
        if isinstance(exc, CfrecError):
            raise
        fail(f"{cls.name} training failed: {exc}")
    seconds = time.perf_counter() - start

    test = None
    if chosen is not None and len(chosen.test):
        test = summarize_test(estimator, chosen.test)
    estimator.fit_info_.update({
        "source": _source_ref(dataset),
        "split": split_name,
        "split_seed": 0 if seed is None else seed,
        "test": test,
    })
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
        "cold_start": cold.to_dict() if cold is not None else None,
        "out": str(saved.resolve()),
    }
    if json_out:
        _echo_json(summary)
        return
    console.print(f"fitted in {seconds:.1f} s", highlight=False, soft_wrap=True, markup=False)
    if test is not None and test["rmse"] is None:
        console.print(
            f"test NDCG@10 {test['ndcg@10']:.4f}  Recall@10 {test['recall@10']:.4f} (full ranking; "
            f"{type(estimator).__name__} scores preferences, not ratings, so no RMSE)",
            highlight=False, soft_wrap=True, markup=False,
        )
    elif test is not None:
        console.print(
            f"test RMSE {test['rmse']:.4f}  MAE {test['mae']:.4f}  on {test['n']:,} ratings; "
            f"cold-start fallbacks: {_fmt_fallback(test['fallback'])} "
            f"({test['fallback_share']:.1%} of test predictions)",
            highlight=False, soft_wrap=True, markup=False,
        )
    else:
        console.print("no test part (--split none): trained on every rating", highlight=False, soft_wrap=True, markup=False)
    console.print(f"saved to {saved.resolve()}", highlight=False, soft_wrap=True, markup=False)


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


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Raw user id.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many recommendations.")] = 10,
    include_seen: Annotated[bool, typer.Option(help="Also rank items the user rated in training.")] = False,
    history: Annotated[int, typer.Option(min=0, help="How many of the user's top-rated training items "
                                                     "to show (0: skip loading the dataset).")] = 5,
    dataset: Annotated[str | None, typer.Option(help="Dataset to read the user's ratings from "
                                                     "(default: the one the model was trained on).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-k items for a user, ranked by the model's score (with predicted ratings for rating
    models); a new user gets the model's cold-start (popular) list."""
    model = load_model(model_dir)
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
    rows = [{**meta, "score": float(s), "predicted_rating": None if r is None else float(r),
             "seen": meta["item_id"] in seen_set}
            for meta, s, r in zip(_item_meta(model, recs.ids), recs.scores, ratings, strict=True)]
    n_train = len(seen_set)
    if json_out:
        _echo_json({
            "user": to_jsonable(user_raw),
            "known": known,
            "fallback": None if known else "popular",
            "n_train_ratings": n_train,
            "rated": None if rated is None else rated[:history],
            "recommendations": rows,
        })
        return
    if known:
        console.print(f"user {user_raw}: {n_train} ratings in training", highlight=False, soft_wrap=True, markup=False)
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
    for rank, row in enumerate(rows, 1):
        cells = [str(rank), escape(str(row["item_id"]))]
        cells += [escape(_title(row))] if titled else []
        cells.append(f"{row['score']:.3f}")
        if model.predicts_ratings:
            cells.append(f"{row['predicted_rating']:.2f}")
        cells += (["yes" if row["seen"] else ""] if include_seen else [])
        table.add_row(*cells)
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
