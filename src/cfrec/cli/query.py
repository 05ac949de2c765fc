"""CLI commands that read a saved model: ``recommend``, ``predict`` and ``similar``.

Items are shown through the model's :class:`~cfrec.catalog.Catalog` (titles, years, training
counts). ``similar --item``: an item id in the model wins; otherwise the best title match (an
exact title, else the most-rated title holding every word of the query); the other matches are
listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from cfrec._io import to_jsonable
from cfrec.catalog import Catalog
from cfrec.cli._app import app, console, echo_json, fail, load_model, say
from cfrec.errors import CfrecError
from cfrec.explain import because_rated
from cfrec.limits import MAX_K

if TYPE_CHECKING:
    from cfrec.models.base import Recommender


def _item_meta(model: Any, raw_ids: Any) -> list[dict[str, Any]]:
    """``{"item_id", "title", "year", "n_ratings"}`` for raw item ids (None where unknown)."""
    catalog = Catalog.from_model(model)
    out = []
    for raw, idx in zip(list(np.atleast_1d(np.asarray(raw_ids, dtype=object))),
                        catalog.index_of(list(np.atleast_1d(np.asarray(raw_ids, dtype=object)))).tolist(),
                        strict=True):
        if idx < 0:
            out.append({"item_id": to_jsonable(raw), "title": None, "year": None, "n_ratings": 0})
            continue
        rec = catalog.record(idx)
        out.append({"item_id": rec["id"], "title": rec["title"], "year": rec["year"], "n_ratings": rec["n_ratings"]})
    return out


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


def _recommend_liked(model: Recommender, liked: list[str], k: int, json_out: bool) -> None:
    """``recommend --liked``: fold a new user in from the items alone and print their list."""
    if model.predicts_ratings:
        from cfrec.models.names import ranking_names

        fail(f"{model.name} folds a new user in from ratings, not from items alone; --liked works with "
             f"the ranking models ({', '.join(ranking_names())})")
    given = _raw_items(model, liked)
    folded = model.fold_in(given)
    recs = model.recommend(folded, k)
    rows = [{**meta, "score": float(s)} for meta, s in zip(_item_meta(model, recs.ids), recs.scores, strict=True)]
    if json_out:
        echo_json({"model": model.name, "liked": to_jsonable(given), "known_items": int(folded.n_ratings),
                    "unknown_items": to_jsonable(list(folded.unknown_items)),
                    "fallback": None if folded.n_ratings else "popular", "recommendations": rows})
        return
    if folded.unknown_items:
        say(f"not in the model, ignored: {', '.join(str(i) for i in folded.unknown_items)}")
    if not folded.n_ratings:
        say("none of the liked items is in the model: showing the most popular items")
    table, titled = _ranked_table(model, f"for a new user ({folded.n_ratings} liked)")
    table.add_column("score", justify="right")
    for rank, row in enumerate(rows, 1):
        table.add_row(str(rank), escape(str(row["item_id"])), *([escape(_title(row))] if titled else []),
                      f"{row['score']:.3f}")
    console.print(table)


def _raw_items(model: Recommender, text_ids: list[str]) -> list[Any]:
    """Item ids typed on the command line as the model's raw ids (integers where it uses them)."""
    out: list[Any] = []
    for text in text_ids:
        idx = int(model.item_map_.to_index(np.asarray([text]), missing="-1")[0])
        out.append(model.item_map_.to_raw(idx) if idx >= 0 else text)
    return out


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Raw user id.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K,
                                   help="How many recommendations (a list is never longer than "
                                        "the catalogue).")] = 10,
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
    liked: Annotated[list[str] | None, typer.Option(
        "--liked", "-l", help="A new user described by the items they interacted with (repeatable, or "
                              "comma-separated; ranking models): folded in, no retraining.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    nproc: Annotated[int | None, typer.Option(
        "--nproc", min=1, help="With --all: score on this many processes, each writing its users' lists to "
                               "its own Parquet part in the --out folder (also under torchrun).")] = None,
) -> None:
    """Top-k items for a user, ranked by the model's score (with predicted ratings for rating models); a new user gets the model's cold-start (popular) list."""
    from cfrec.cli.sharded import in_distributed_job

    if (nproc is not None and nproc > 1) or in_distributed_job():
        if not all_users or user is not None or users_file is not None or liked:
            fail("--nproc (or torchrun) scores every user: give --all --out DIR, without --user, --users or "
                 "--liked")
        from cfrec.cli.sharded import recommend_all_sharded

        recommend_all_sharded(model_dir, out, k=k, include_seen=include_seen, nproc=nproc)
        return
    model = load_model(model_dir)
    if liked:
        if user is not None or all_users or users_file is not None or out is not None:
            fail("--liked describes a new user: give it without --user, --all, --users or --out")
        _recommend_liked(model, [i.strip() for v in liked for i in v.split(",") if i.strip()], k,
                         json_out)
        return
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
    # The reason is a property of the recommendation: drawn from every item the model holds for the
    # user (what it was fitted on), never from the ratings --history happens to load and print.
    because = because_rated(model, recs.ids, sorted(seen_set)) if known else None
    reasons = because.items if because is not None else [None] * len(recs)
    rows = [{**meta, "score": float(s), "predicted_rating": None if r is None else float(r),
             "seen": meta["item_id"] in seen_set,
             "because": None if b is None else _item_meta(model, [b])[0]}
            for meta, s, r, b in zip(_item_meta(model, recs.ids), recs.scores, ratings, reasons, strict=True)]
    n_train = len(seen_set)
    if json_out:
        echo_json({
            "user": to_jsonable(user_raw),
            "model": model.name,
            "known": known,
            "fallback": None if known else "popular",
            "fallback_label": None if known else model.cold_start_label,
            "score_label": model.score_label,
            "n_train_ratings": n_train,
            "rated": None if rated is None else rated[:history],
            "recommendations": rows,
        })
        return
    ranked_by = f"ranked by {type(model).__name__} ({model.name}); scores are {model.score_label}"
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
        console.print(f"user {user!r} is not in the model (a new user): showing the new-user list, ordered "
                      f"by {model.cold_start_label}, not personalised recommendations", highlight=False,
                      soft_wrap=True, markup=False)
    table, titled = _ranked_table(model, ("recommended" if known else "popular (new-user fallback)")
                                  + f" for user {user_raw}")
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
    if known and explained:  # the ranking was said above the table; this explains the last column
        say(f"'because you rated' is the item, among the user's {n_train} training items, with the most "
            "similar item vector")


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    user: Annotated[str, typer.Option("--user", "-u", help="Raw user id.")],
    item: Annotated[list[str], typer.Option("--item", "-i", help="Item id, or part of a title as 'similar' "
                                                                "takes it (repeatable); an id the model does "
                                                                "not know gets the unknown-item fallback.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Predicted rating of items for a user; for a ranking model (ials, ease, bpr, multvae, pop), its
    preference score shown on the rating scale, not a rating estimate. The 'how' column names the
    model's fallback for an unknown user or item."""
    model = load_model(model_dir)
    u_idx = int(model.user_map_.to_index(np.asarray([user]), missing="-1")[0])
    user_raw: Any = model.user_map_.to_raw(u_idx) if u_idx >= 0 else user
    i_idx = model.item_map_.to_index(np.asarray(item), missing="-1")
    items_raw = [model.item_map_.to_raw(i) if i >= 0 else _item_or_title(model, v)
                 for i, v in zip(i_idx.tolist(), item, strict=True)]
    pred = model.predict_detailed(np.asarray([user_raw] * len(items_raw), dtype=object), np.asarray(items_raw, dtype=object))
    how = model.fallback_labels
    rows = [{**meta, "prediction": float(p), "how": how[int(f)]}
            for meta, p, f in zip(_item_meta(model, items_raw), pred.ratings, pred.fallback, strict=True)]
    if json_out:
        echo_json({"user": to_jsonable(user_raw), "model": model.name, "predicts_ratings": model.predicts_ratings,
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


def _item_or_title(model: Any, text: str) -> Any:
    """An --item the vocabulary does not hold: an id of the vocabulary's type stays an (unknown)
    id; other text is a title query as 'similar' takes it, and no match is an error."""
    typed = _typed(model.item_map_, text)
    if model.item_map_.is_numeric and isinstance(typed, int):
        return typed
    return resolve_item(model, text)[0]


def _title(row: dict[str, Any]) -> str:
    """Title with year for display ("" when the dataset had no titles)."""
    title = row.get("title") or ""
    if title and row.get("year") and f"({row['year']})" not in title:
        title = f"{title} ({row['year']})"
    return title


def _name(row: dict[str, Any]) -> str:
    """How an item is named in a sentence: its title, else ``item <id>``."""
    return _title(row) or f"item {row['item_id']}"


def _typed(vocab: Any, text: str) -> Any:
    """An id typed on the command line as the vocabulary's ids are (``"999"`` -> 999 for ints)."""
    if vocab.is_numeric:
        try:
            return int(text)
        except ValueError:
            return text
    return text


def _ranked_table(model: Any, title: str) -> tuple[Table, bool]:
    """A table with the rank, item id and (when the model has titles) title columns."""
    table = Table(title=escape(title), title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("item", justify="right")
    titled = _has_titles(model)
    if titled:
        table.add_column("title")
    return table, titled


def _has_titles(model: Any) -> bool:
    info = getattr(model, "item_info_", None)
    return info is not None and "title" in info.columns


# ---------------------------------------------------------------------- similar
def resolve_item(model: Any, query: str) -> tuple[Any, list[dict[str, Any]]]:
    """Raw item id for an id or title query, plus every match (best first): see
    :meth:`cfrec.catalog.Catalog.resolve`."""
    catalog = Catalog.from_model(model)
    if not query.strip():
        raise CfrecError("empty --item query")
    idx, matches = catalog.resolve(query)
    rows = [{"item_id": m.record["id"], "title": m.record["title"], "year": m.record["year"],
             "n_ratings": m.record["n_ratings"]} for m in matches]
    return catalog.raw_id(idx), rows


@app.command()
def similar(
    model_dir: Annotated[Path, typer.Argument(help="Model folder written by 'cfrec train'.")],
    item: Annotated[str, typer.Option("--item", "-i", help="Item id, or part of a title (case-insensitive); "
                                                           "several matches -> the most-rated is used.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=MAX_K, help="How many neighbours.")] = 5,
    min_ratings: Annotated[int, typer.Option(min=0, help="Only neighbours with at least this many training "
                                                         "ratings (rare items have noisy vectors).")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Items closest to one item by cosine similarity of the model's item vectors."""
    model = load_model(model_dir)
    raw, matches = resolve_item(model, item)
    counts = Catalog.from_model(model).counts
    want = k if min_ratings == 0 else len(model.item_map_) - 1
    recs = model.similar_items(raw, want)
    ids, sims = recs.ids, recs.scores
    if min_ratings:
        keep = counts[model.item_map_.to_index(ids)] >= min_ratings
        ids, sims = ids[keep][:k], sims[keep][:k]
    rows = [{**m, "similarity": float(s)} for m, s in zip(_item_meta(model, ids), sims, strict=True)]
    query_row = matches[0]
    if json_out:
        echo_json({"query": item, "item": query_row, "matches": matches, "neighbours": rows})
        return
    if len(matches) > 1:
        others = "; ".join(f"{_name(m)} [id {m['item_id']}, {m['n_ratings']} ratings]" for m in matches[1:6])
        more = f" and {len(matches) - 6} more" if len(matches) > 6 else ""
        console.print(f"{len(matches)} titles match {item!r}; using the most-rated. Others: {others}{more}. "
                      f"Pass an id or a longer title to pick another.", highlight=False, soft_wrap=True, markup=False)
    table, titled = _ranked_table(model, f"most similar to {_name(query_row)} [id {query_row['item_id']}, "
                                         f"{query_row['n_ratings']} ratings]")
    table.add_column("ratings", justify="right")
    table.add_column("cosine", justify="right")
    for rank, row in enumerate(rows, 1):
        cells = [str(rank), escape(str(row["item_id"]))]
        cells += [escape(_title(row))] if titled else []
        table.add_row(*cells, str(row["n_ratings"]), f"{row['similarity']:.3f}")
    console.print(table)
