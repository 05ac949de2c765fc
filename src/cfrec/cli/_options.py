"""The options every command that reads a dataset takes, defined once (from
:data:`cfrec.data.options.DATA_OPTIONS`), and the one loader those commands call.

``@with_data_options`` adds every option of the table (``--sep``, ``--columns``, ``--user-col``,
``--item-col``, ``--rating-col``, ``--time-col``, ``--weight-col``, ``--feedback``,
``--implicit-value``, ``--on-bad-rows``, ``--rating-scale``, ``--encoding``, ``--duplicates``,
``--item-features``, ``--user-features``, ``--no-release-features``) to
a command (in their own help panel) and passes them to it as one ``data_options`` argument.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict, TypeVar, Unpack

import typer

from cfrec.cli._app import err_console, fail
from cfrec.data.interactions import Interactions
from cfrec.data.options import DATA_OPTIONS, DataOptions
from cfrec.errors import CfrecError

if typing.TYPE_CHECKING:
    from cfrec.data.io import LoadReport
    from cfrec.models.base import Recommender

_F = TypeVar("_F", bound=Callable[..., Any])
PANEL = "Data file options (a ratings or interactions file; MovieLens releases need none)"


def with_data_options(func: _F) -> _F:
    """Add the data options to a typer command that has a ``data_options: DataOptions`` parameter."""
    sig = inspect.signature(func)
    if "data_options" not in sig.parameters:
        raise TypeError(f"{func.__name__} needs a data_options parameter")
    # resolve the command's (string) annotations where it was defined, keeping typer's metadata
    hints = typing.get_type_hints(func, include_extras=True)
    kept = [p.replace(annotation=hints.get(p.name, p.annotation))
            for p in sig.parameters.values() if p.name != "data_options"]
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[str | None, typer.Option(spec.flag, help=spec.help, metavar=spec.metavar,
                                                          rich_help_panel=PANEL, show_default=False)],
        )
        for name, spec in DATA_OPTIONS.items() if name != "release_features"
    ]
    flag = DATA_OPTIONS["release_features"]
    added.append(inspect.Parameter(
        "no_release_features", inspect.Parameter.KEYWORD_ONLY, default=False,
        annotation=Annotated[bool, typer.Option(flag.flag, help=flag.help, rich_help_panel=PANEL,
                                                show_default=False)]))

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name in DATA_OPTIONS if name != "release_features"}
        if kwargs.pop("no_release_features", False):
            values["release_features"] = "false"
        return func(*args, data_options=DataOptions.from_strings(**values), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=kept + added)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in kept + added}
    if "return" in hints:
        wrapper.__annotations__["return"] = hints["return"]
    return wrapper  # type: ignore[return-value]


class _LoadOptions(TypedDict, total=False):
    """Keyword options of :func:`load_data` and :func:`load_data_with_report`."""

    data_home: str | Path | None
    download: bool
    quiet: bool


def load_data(dataset: str, options: DataOptions, **kwargs: Unpack[_LoadOptions]) -> Interactions:
    """Load a dataset for a command, saying on stderr what was detected or resolved.

    Notes (unless ``quiet``): the columns read when the file had no header or used other names,
    interactions read (and how repeated events were aggregated), an inferred rating scale (with
    the flag that declares one), duplicates resolved, rows skipped or dropped.
    """
    return load_data_with_report(dataset, options, **kwargs)[0]


def load_data_with_report(
    dataset: str,
    options: DataOptions,
    *,
    data_home: str | Path | None = None,
    download: bool = True,
    quiet: bool = False,
) -> tuple[Interactions, LoadReport | None]:
    """:func:`load_data`, also returning the loader's report."""
    from cfrec.data.datasets import load_dataset

    # the notes below say what the loader's warnings would: keep them from saying it twice
    io_log = logging.getLogger("cfrec.data.io")
    level = io_log.level
    if not quiet:
        io_log.setLevel(logging.ERROR)
    try:
        data, report = load_dataset(dataset, data_home=data_home, download=download, options=options,
                                    return_report=True)
    finally:
        io_log.setLevel(level)
    if quiet or report is None or report.scale_source == "movielens":
        return data, report  # a MovieLens release: its format is known, nothing was guessed
    notes = []
    if not report.header:
        roles = ", ".join(f"{role}" for role in report.columns)
        notes.append(f"{report.path} has no header line: its fields were read as {roles}")
    if report.feedback == "implicit":
        notes.append(interactions_note(report))
    if report.scale_source == "inferred" and report.rating_scale is not None:
        lo, hi = report.rating_scale
        notes.append(f"rating scale {lo:g}..{hi:g} inferred from the ratings; pass --rating-scale LOW,HIGH "
                     "to declare it (out-of-scale ratings are then errors)")
    if report.duplicates_resolved and report.feedback == "explicit":
        notes.append(f"{report.duplicates_resolved:,} repeated (user, item) rating(s) resolved with "
                     f"--duplicates {report.policy}")
    if report.skipped_rows:
        lines = ", ".join(map(str, report.skipped_lines))
        more = ", ..." if report.skipped_rows > len(report.skipped_lines) else ""
        notes.append(f"skipped {report.skipped_rows:,} malformed row(s) (--on-bad-rows skip), at "
                     f"line(s) {lines}{more}")
    if report.empty_rows:
        notes.append(f"dropped {report.empty_rows:,} empty row(s)")
    if report.unrated_rows:
        notes.append(f"dropped {report.unrated_rows:,} row(s) rated {options.implicit_value:g} "
                     "(--implicit-value: interacted, not rated); --feedback implicit keeps them "
                     "as interactions")
    for note in notes:
        err_console.print(f"note: {note}", highlight=False, soft_wrap=True, markup=False)
    return data, report


def interactions_note(report: LoadReport) -> str:
    """One line saying that a file was read as interactions and how weights were made."""
    if report.aggregation == "count":
        how = "each pair's weight is its number of events"
    else:
        column = str(report.aggregation).removeprefix("sum of ")
        how = f"each pair's weight is the sum of its events' {column!r} values"
    merged = (f"; {report.duplicates_resolved:,} repeated event(s) aggregated"
              if report.duplicates_resolved else "")
    return (f"read interactions, not ratings (--feedback implicit): {report.ratings:,} (user, "
            f"item) pairs; {how}{merged}")


def refuse_rating_model(data: Interactions, model: str | Recommender) -> None:
    """Stop with one line when a rating-prediction ``model`` (a name or an instance) is given
    interactions with no ratings (:func:`cfrec.models.base.check_feedback`)."""
    if not data.is_implicit:
        return
    from cfrec.models.base import check_feedback

    if isinstance(model, str):
        from cfrec.models.registry import resolve_name

        spec, preset = resolve_name(model)
        instance: Recommender = spec.make(preset)
    else:
        instance = model
    try:
        check_feedback(instance, data)
    except CfrecError as exc:
        fail(str(exc))
