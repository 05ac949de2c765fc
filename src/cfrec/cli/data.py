"""CLI commands ``datasets``, ``download`` and ``stats``.

* ``cfrec datasets``: the known MovieLens releases, their sizes and whether each is in the data home.
* ``cfrec download NAME``: fetch, verify and unpack one release (progress bar on stderr).
* ``cfrec stats DATASET [--json]``: statistics of a MovieLens name or any ratings path; ``--json``
  prints full-precision JSON on stdout (nothing else goes to stdout).
* ``cfrec shard DATASET --parts P --out DIR``: split a ratings or log file into P user-block and
  P item-block Parquet parts and the id vocabularies, streaming (memory does not grow with the
  file); see ``docs/data-files.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cfrec.cli._app import app, console
from cfrec.cli._options import interactions_note, load_data_with_report, with_data_options
from cfrec.data.options import DataOptions

_DataHome = Annotated[
    Path | None,
    typer.Option("--data-home", help="Dataset folder (default: $CFREC_DATA_HOME or the user cache).",
                 show_default=False),
]


@app.command("datasets")
def datasets_cmd(data_home: _DataHome = None) -> None:
    """List the known MovieLens datasets and whether each is downloaded."""
    from cfrec.data.movielens import MOVIELENS, is_cached
    from cfrec.data.movielens import data_home as resolve_home

    home = resolve_home(data_home)
    table = Table(title="MovieLens datasets", title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("ratings", justify="right")
    table.add_column("users", justify="right")
    table.add_column("items", justify="right")
    table.add_column("scale", justify="center")
    table.add_column("zip", justify="right")
    table.add_column("cached", justify="center")
    for spec in MOVIELENS.values():
        cached = is_cached(spec.name, home)
        table.add_row(
            spec.name, f"{spec.n_ratings:,}", f"{spec.n_users:,}", f"{spec.n_items:,}",
            f"{spec.rating_scale[0]:g}-{spec.rating_scale[1]:g}", f"{spec.zip_mb:g} MB",
            "[green]yes[/]" if cached else "[dim]no[/]",
        )
    console.print(table)
    console.print(f"data home: {home}", highlight=False, soft_wrap=True)


@app.command("download")
def download_cmd(
    name: Annotated[str, typer.Argument(help="A MovieLens name, e.g. ml-1m (see `cfrec datasets`).")],
    data_home: _DataHome = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download, verify and unpack a MovieLens dataset into the data home."""
    from cfrec.data.movielens import _spec, download_movielens, is_cached
    from cfrec.data.movielens import data_home as resolve_home

    _spec(name)  # unknown names fail before anything is printed
    home = resolve_home(data_home)
    if is_cached(name, home):
        folder = download_movielens(name, data_home=home, progress=False)
        console.print(f"{name} is already in {folder}", highlight=False, soft_wrap=True)
        return
    folder = download_movielens(name, data_home=home, progress=not quiet)
    console.print(f"{name} downloaded to {folder}", highlight=False, soft_wrap=True)


@app.command("stats")
@with_data_options
def stats_cmd(
    dataset: Annotated[str, typer.Argument(help="A MovieLens name (ml-100k ...) or a path: ratings "
                                           "file, MovieLens folder or zip.")],
    data_options: DataOptions,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    data_home: _DataHome = None,
    no_download: Annotated[bool, typer.Option("--no-download",
                                              help="Fail instead of downloading.")] = False,
) -> None:
    """Statistics of a dataset: sizes, sparsity, rating histogram (or interaction weights),
    activity, time span."""
    from cfrec.data.stats import compute_statistics

    data, report = load_data_with_report(dataset, data_options, data_home=data_home,
                                         download=not no_download)
    stats = compute_statistics(data)
    if json_out:
        out = stats.to_dict()
        if report is not None:
            out["load"] = report.to_dict()
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    if data.is_implicit:
        _print_interaction_stats(stats, None if report is None else interactions_note(report))
        return

    table = Table(title=f"{stats.name}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    lo, hi = stats.rating_scale
    table.add_row("ratings", f"{stats.ratings:,}")
    table.add_row("users", f"{stats.users:,}")
    table.add_row("items", f"{stats.items:,}")
    table.add_row("sparsity", f"{stats.sparsity:.3f} ({stats.sparsity:.2%})")
    table.add_row("rating scale", f"{lo:g} - {hi:g}")
    table.add_row("rating mean / std", f"{stats.rating_mean:.3f} / {stats.rating_std:.3f}")
    _add_spread_rows(table, stats, "ratings")
    _add_feature_rows(table, stats)
    console.print(table)

    hist = Table(title="rating histogram", title_justify="left")
    hist.add_column("rating", justify="right")
    hist.add_column("count", justify="right")
    hist.add_column("share", justify="right")
    hist.add_column("", justify="left")
    peak = max(stats.rating_histogram.values(), default=1)
    for rating, count in stats.rating_histogram.items():
        share = count / stats.ratings if stats.ratings else 0.0
        hist.add_row(f"{rating:g}", f"{count:,}", f"{share:.1%}",
                     "[cyan]" + "█" * max(1, round(30 * count / peak)) + "[/]")
    console.print(hist)


@app.command("shard")
@with_data_options
def shard_cmd(
    dataset: Annotated[str, typer.Argument(help="A ratings or log file, or a MovieLens folder.")],
    data_options: DataOptions,
    parts: Annotated[int, typer.Option("--parts", "-p", min=1,
                                       help="Number of user blocks (and of item blocks).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (created whole, or "
                                      "not at all).")],
    overwrite: Annotated[bool, typer.Option("--overwrite",
                                            help="Replace an existing --out folder.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Split a ratings or log file into P user-block and P item-block Parquet parts with
    balanced row counts, plus the id vocabularies, in two streaming passes."""
    from cfrec.data.options import FEATURE_OPTIONS
    from cfrec.data.shard import shard_dataset

    kwargs = data_options.to_kwargs()
    duplicates = kwargs.pop("duplicates", "last")
    for name in FEATURE_OPTIONS:  # side features are not part of the rating rows
        kwargs.pop(name, None)
    shards = shard_dataset(dataset, out, parts, duplicates=duplicates, overwrite=overwrite,
                           **kwargs)
    summary = {"out": str(shards.path), "parts": shards.parts, "rows": shards.rows,
               "users": shards.n_users, "items": shards.n_items,
               "user_rows": list(shards.user_rows), "item_rows": list(shards.item_rows),
               "feedback": shards.feedback}
    if json_out:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    console.print(f"{shards.rows:,} rows ({shards.n_users:,} users, {shards.n_items:,} items) in "
                  f"{shards.parts} user parts ({min(shards.user_rows):,}-{max(shards.user_rows):,}"
                  f" rows) and {shards.parts} item parts ({min(shards.item_rows):,}-"
                  f"{max(shards.item_rows):,} rows) -> {shards.path}", highlight=False,
                  soft_wrap=True)


def _print_interaction_stats(stats: Any, how: str | None) -> None:
    """The ``stats`` table of interactions: pairs, weights and how they were aggregated."""
    table = Table(title=f"{stats.name} (interactions)", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("feedback", "implicit: interactions, no ratings")
    if how is not None:
        table.add_row("read as", how)
    table.add_row("(user, item) pairs", f"{stats.ratings:,}")
    table.add_row("users", f"{stats.users:,}")
    table.add_row("items", f"{stats.items:,}")
    table.add_row("sparsity", f"{stats.sparsity:.3f} ({stats.sparsity:.2%})")
    if stats.weight_per_pair is not None:
        w = stats.weight_per_pair
        table.add_row("weight total", f"{stats.weight_total:,.6g}")
        table.add_row("weight per pair", f"min {w.min:g} / median {w.median:g} / mean {w.mean:.3g} / "
                                          f"max {w.max:g}")
    _add_spread_rows(table, stats, "pairs")
    _add_feature_rows(table, stats)
    console.print(table)


def _add_feature_rows(table: Table, stats: Any) -> None:
    """Rows saying which side features came with the data (counts), when any did."""
    for label, f in (("item features", stats.item_features), ("user features", stats.user_features)):
        if f is not None:
            table.add_row(label, f.describe())


def _add_spread_rows(table: Table, stats: Any, noun: str) -> None:
    """Rows per user and per item (min / median / mean / max) and the time span."""
    for side, c in (("user", stats.ratings_per_user), ("item", stats.ratings_per_item)):
        table.add_row(f"{noun} per {side}",
                      f"min {c.min:,} / median {c.median:g} / mean {c.mean:.1f} / max {c.max:,}")
    if stats.first_date is not None:
        table.add_row("time span", f"{stats.first_date[:10]} .. {str(stats.last_date)[:10]} "
                                   f"({stats.span_days:.0f} days)")
    else:
        table.add_row("time span", "no timestamps")
