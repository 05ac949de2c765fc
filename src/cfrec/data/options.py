"""The options for reading a ratings file, defined once for the library and the command line.

:class:`DataOptions` holds them (``None`` everywhere means "detect"), :data:`DATA_OPTIONS`
describes each one (its command-line flag, metavar and help text), and the ``parse_*`` helpers
turn command-line text into values. Errors name the option through
:class:`~cfrec.errors.OptionHint`, so a Python caller reads ``rating_scale=(1, 5)`` and a
command-line user reads ``--rating-scale 1,5``.

This module imports no command-line library: a CLI builds its options from :data:`DATA_OPTIONS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from cfrec.errors import DataError, OptionHint

DuplicatePolicy = Literal["first", "last", "mean", "error"]
DUPLICATE_POLICIES: tuple[str, ...] = get_args(DuplicatePolicy)
Feedback = Literal["auto", "explicit", "implicit"]
FEEDBACK_KINDS: tuple[str, ...] = get_args(Feedback)
BadRowPolicy = Literal["error", "skip"]
BAD_ROW_POLICIES: tuple[str, ...] = get_args(BadRowPolicy)


@dataclass(frozen=True)
class OptionSpec:
    """One data option: its keyword, command-line flag, metavar and help text."""

    name: str
    flag: str
    metavar: str
    help: str

    def hint(self, python_value: str | None = None, cli_value: str | None = None,
             purpose: str = "") -> OptionHint:
        """An :class:`OptionHint` for this option with example values for each audience.

        Without values the metavar stands in (``--user-col NAME`` / ``user_col="NAME"``).
        """
        py = python_value if python_value is not None else f'"{self.metavar}"'
        cli = cli_value if cli_value is not None else self.metavar
        return OptionHint(self.name, f"{self.name}={py}", f"{self.flag} {cli}", purpose)


def _option(name: str, metavar: str, help: str) -> OptionSpec:
    """A data option whose flag is its keyword with dashes (``user_col``: ``--user-col``)."""
    return OptionSpec(name, "--" + name.replace("_", "-"), metavar, help)


def _column(role: str, holding: str, default: str) -> OptionSpec:
    """The option naming the column of one role (``user``: ``user_col``, ``--user-col NAME``)."""
    return _option(f"{role}_col", "NAME", f"Column holding {holding} (default: {default}).")


DATA_OPTIONS: dict[str, OptionSpec] = {
    spec.name: spec
    for spec in (
        _option("sep", "SEP", "Field separator of a ratings file, e.g. ',' ';' '|' '::' or 'tab' "
                "(default: detected from the first lines)."),
        _option("columns", "NAMES",
                "Comma-separated names of every field of a file without a header line, e.g. "
                "user,item,rating,timestamp (default: a header line, or user, item, "
                "rating[, timestamp] when the first line is all numbers)."),
        _column("user", "the user id",
                "detected from the header's words: user, User-ID, userId, customer_id, member, "
                "visitor ..."),
        _column("item", "the item id", "detected: item, movieId, ISBN, artistID, product, sku, "
                "asin, track, song, book, article, video ..."),
        _column("rating", "the rating", "detected: rating, Book-Rating, score, stars ..."),
        _column("time", "Unix seconds or ISO dates",
                "detected: timestamp, time, ts, date, datetime; none means no time"),
        _column("weight", "an interaction's weight: a count, plays, quantity, dwell time",
                "detected: count, plays, playcount, weight, quantity, qty, clicks, views, n ..."),
        _option("feedback", "|".join(FEEDBACK_KINDS),
                "What the file holds: explicit ratings, or implicit interactions (clicks, plays, "
                "purchases; repeated (user, item) events are aggregated into a count or a sum of "
                "weights). Default auto: ratings when there is a rating column, else interactions."),
        _option("implicit_value", "VALUE",
                "A rating value meaning 'interacted, not rated' (e.g. 0): such rows are dropped "
                "from explicit ratings (and counted), and kept as interactions with --feedback "
                "implicit."),
        _option("on_bad_rows", "|".join(BAD_ROW_POLICIES),
                "What to do with a malformed row (missing id, bad value, wrong field count): stop "
                "with an error naming it, or skip it and report how many (default: error)."),
        _option("rating_scale", "LOW,HIGH",
                "The rating scale, e.g. 1,5; ratings outside it are an error (default: the "
                "known scale of a MovieLens file, else the observed range)."),
        _option("encoding", "ENCODING",
                "Text encoding of a ratings file, e.g. latin-1 (default: utf-8)."),
        _option("duplicates", "|".join(DUPLICATE_POLICIES),
                "What to do with repeated (user, item) pairs: keep the first or last by "
                "time, average them, or stop with an error (default: last)."),
        _option("item_features", "FILE",
                "Item features for the models that use them: a CSV, long (item_id,feature[,value]) "
                "or wide (item_id and one column per attribute; Action|Comedy cells are "
                "multi-valued, numbers standardised and bucketed). Added to a MovieLens "
                "release's own genres, decades and tags."),
        _option("user_features", "FILE",
                "User features, as --item-features (user_id,feature[,value] or wide columns such "
                "as age,gender,occupation). Added to a MovieLens release's own demographics."),
        OptionSpec("release_features", "--no-release-features", "",
                   "Do not attach a MovieLens release's own features (genres, decades, tags, "
                   "age, gender, occupation, zip region); only --item-features/--user-features."),
        _option("max_input_size", "SIZE",
                "The most a compressed file may decompress to, e.g. 8GB, or none (default: 100x "
                "the compressed size, at least 1GB); guards against decompression bombs."),
    )
}
#: Options about side features rather than the ratings file: a MovieLens release accepts them.
FEATURE_OPTIONS: tuple[str, ...] = ("item_features", "user_features", "release_features")


def option(name: str) -> OptionSpec:
    """The :class:`OptionSpec` of data option ``name`` (``"rating_scale"`` ...)."""
    return DATA_OPTIONS[name]


@dataclass(frozen=True)
class DataOptions:
    """How to read a ratings file; every field ``None`` means "detect" (or the default).

    Attributes
    ----------
    sep
        Field separator (``","``, ``"\\t"``, ``"::"`` ...).
    columns
        Names of every field of a file without a header line.
    user_col, item_col, rating_col
        Column names for the user id, item id and rating.
    time_col
        Column name for time; ``False`` reads no time even when the file has a time column.
    rating_scale
        ``(low, high)``; ratings outside it are an error.
    encoding
        Text encoding.
    duplicates
        Policy for repeated ``(user, item)`` ratings: ``first``, ``last``, ``mean`` or ``error``
        (interactions are aggregated instead).
    weight_col
        Column holding each interaction's weight (count, plays, quantity ...).
    feedback
        ``"explicit"`` (ratings), ``"implicit"`` (interactions) or ``"auto"``.
    implicit_value
        A rating value meaning "interacted, not rated".
    on_bad_rows
        ``"error"`` or ``"skip"`` malformed rows.
    item_features, user_features
        Paths of CSV files of side features (see :func:`cfrec.data.features_files.read_features`).
    release_features
        ``False`` drops a MovieLens release's own features (default: attached).
    max_input_size
        The most bytes a compressed file may decompress to (``"8GB"``, ``0``/``"none"``: no
        limit).
    """

    sep: str | None = None
    columns: tuple[str, ...] | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | Literal[False] | None = None
    weight_col: str | None = None
    feedback: Feedback | None = None
    implicit_value: float | None = None
    on_bad_rows: BadRowPolicy | None = None
    rating_scale: tuple[float, float] | None = None
    encoding: str | None = None
    duplicates: DuplicatePolicy | None = None
    item_features: str | None = None
    user_features: str | None = None
    release_features: bool | None = None
    max_input_size: int | str | None = None

    def __post_init__(self) -> None:
        if self.columns is not None and not isinstance(self.columns, tuple):
            object.__setattr__(self, "columns", tuple(self.columns))
        if self.rating_scale is not None:
            object.__setattr__(self, "rating_scale", check_rating_scale(self.rating_scale))
        if self.duplicates is not None:
            check_duplicates(self.duplicates)
        if self.feedback is not None:
            check_choice("feedback", self.feedback, FEEDBACK_KINDS)
        if self.on_bad_rows is not None:
            check_choice("on_bad_rows", self.on_bad_rows, BAD_ROW_POLICIES)
        if self.implicit_value is not None:
            object.__setattr__(self, "implicit_value", parse_implicit_value(self.implicit_value))

    @classmethod
    def from_strings(cls, **values: str | None) -> DataOptions:
        """Options from command-line text (``rating_scale="1,5"``, ``columns="u,i,r"``, ...).

        ``None`` values are left to detection; unknown names raise ``TypeError``.
        """
        unknown = sorted(set(values) - set(DATA_OPTIONS))
        if unknown:
            raise TypeError(f"unknown data option(s) {unknown}; known: {list(DATA_OPTIONS)}")
        out: dict[str, Any] = {}
        for name, text in values.items():
            if text is None:
                continue
            if name == "sep":
                out[name] = parse_sep(text)
            elif name == "columns":
                out[name] = parse_columns(text)
            elif name == "rating_scale":
                out[name] = parse_rating_scale(text)
            elif name == "duplicates":
                out[name] = check_duplicates(text.strip().lower())
            elif name in ("feedback", "on_bad_rows"):
                out[name] = text.strip().lower()
            elif name == "implicit_value":
                out[name] = parse_implicit_value(text)
            elif name == "release_features":
                out[name] = text.strip().lower() not in ("false", "no", "0", "off")
            elif name == "time_col" and text.strip().lower() == "none":
                out[name] = False
            else:
                out[name] = text.strip()
        return cls(**out)

    def to_kwargs(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments of ``load_ratings``/``load_dataset``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = list(value) if f.name == "columns" else value
        return out

    def is_default(self) -> bool:
        """Whether no option is set (everything detected)."""
        return not self.to_kwargs()


def parse_sep(text: str) -> str:
    """A separator from command-line text: ``tab``/``\\t`` -> tab, ``space`` -> whitespace runs."""
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|",
             "space": r"\s+", "whitespace": r"\s+"}
    if text.lower() in named:
        return named[text.lower()]
    if text == "":
        raise DataError("empty separator", field="sep", value=text,
                        expected="a separator such as , ; | :: or tab",
                        hints=(option("sep").hint('"\\t"', "tab"),))
    return text


def parse_columns(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Field names from ``"user, item,rating"`` (or a list): stripped, non-empty, distinct."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(str(p).strip() for p in parts)
    spec = option("columns")
    example = spec.hint('["user", "item", "rating", "timestamp"]', "user,item,rating,timestamp")
    if len(names) < 3 or any(not n for n in names):
        raise DataError(f"columns {text!r} must name every field, at least user, item and "
                        "rating, separated by commas", field="columns", value=text,
                        expected="names such as user,item,rating,timestamp", hints=(example,))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"columns {text!r} repeat {', '.join(dupes)}; every field needs its own "
                        "name", field="columns", value=text, hints=(example,))
    return names


def parse_rating_scale(text: str | tuple[float, float] | list[float]) -> tuple[float, float]:
    """``"1,5"`` (or ``"1-5"``, ``"0.5..5"``, ``(1, 5)``) -> ``(1.0, 5.0)``, low < high."""
    if isinstance(text, str):
        raw = text.strip().strip("[]()")
        for sep in (",", "..", ":", " "):
            if sep in raw:
                parts = [p for p in raw.split(sep) if p.strip()]
                break
        else:
            parts = raw.rsplit("-", 1) if raw.count("-") == 1 and not raw.startswith("-") else [raw]
        if len(parts) != 2:
            raise DataError(f"rating scale {text!r} is not LOW,HIGH", field="rating_scale",
                            value=text, expected="two numbers such as 1,5",
                            hints=(option("rating_scale").hint("(1, 5)", "1,5"),))
        try:
            pair = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise DataError(f"rating scale {text!r} is not two numbers", field="rating_scale",
                            value=text, expected="two numbers such as 1,5",
                            hints=(option("rating_scale").hint("(1, 5)", "1,5"),)) from None
        return check_rating_scale(pair)
    return check_rating_scale(text)


def check_rating_scale(scale: Any) -> tuple[float, float]:
    """``scale`` as ``(low, high)`` floats, finite with low < high, else a :class:`DataError`."""
    hint = option("rating_scale").hint("(1, 5)", "1,5")
    try:
        low, high = (float(v) for v in scale)
    except (TypeError, ValueError):
        raise DataError(f"rating scale {scale!r} is not (low, high)", field="rating_scale",
                        value=scale, expected="two numbers, low < high", hints=(hint,)) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise DataError(f"rating scale {scale!r} needs finite low < high", field="rating_scale",
                        value=scale, expected="two numbers, low < high", hints=(hint,))
    return low, high


def check_duplicates(policy: str) -> DuplicatePolicy:
    """``policy`` if it is one of :data:`DUPLICATE_POLICIES`, else a :class:`DataError`."""
    if policy not in DUPLICATE_POLICIES:
        raise DataError(f"duplicates policy {policy!r} is not one of "
                        f"{', '.join(DUPLICATE_POLICIES)}", field="duplicates", value=policy,
                        expected="first, last, mean or error",
                        hints=(option("duplicates").hint('"last"', "last"),))
    return policy  # type: ignore[return-value]


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> Any:
    """``value`` if it is one of ``choices``, else a :class:`DataError` naming option ``name``."""
    if value not in choices:
        listed = ", ".join(choices[:-1]) + " or " + choices[-1]
        raise DataError(f"{name} {value!r} is not one of {', '.join(choices)}", field=name,
                        value=value, expected=listed,
                        hints=(option(name).hint(f'"{choices[0]}"', choices[0]),))
    return value


def parse_implicit_value(value: Any) -> float:
    """The "interacted, not rated" rating value as a finite float (``"0"`` -> ``0.0``)."""
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"implicit value {value!r} is not a number", field="implicit_value",
                        value=value, expected="a rating value such as 0",
                        hints=(option("implicit_value").hint("0", "0"),))
    return number
