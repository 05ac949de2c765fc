"""Checks of hyperparameter values, shared by the models: one wording for every model's errors.

Each check raises :class:`~cfrec.errors.CfrecError` naming the model, the field, what was
expected and the value given, e.g. ``BPR lr must be a finite number > 0, got 0.0``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from cfrec.errors import CfrecError


def is_finite_number(value: Any) -> bool:
    """True for a finite int or float (numpy scalars included), False for booleans and text."""
    return (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            and bool(np.isfinite(float(value))))


def check_whole(model: Any, names: Iterable[str], low: int = 1) -> None:
    """Each ``model.<name>`` is a whole number ``>= low``."""
    for name in names:
        value = getattr(model, name)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise CfrecError(f"{_label(model)} {name} must be a whole number >= {low}, got {value!r}")


def check_number(model: Any, names: Iterable[str], low: float = 0.0, *, strict: bool = False,
                 optional: bool = False) -> None:
    """Each ``model.<name>`` is a finite number ``>= low`` (``> low`` with ``strict``); with
    ``optional`` it may also be None."""
    for name in names:
        value = getattr(model, name)
        if optional and value is None:
            continue
        ok = is_finite_number(value) and (float(value) > low if strict else float(value) >= low)
        if not ok:
            bound = f"{'>' if strict else '>='} {low:g}"
            prefix = "None or " if optional else ""
            raise CfrecError(f"{_label(model)} {name} must be {prefix}a finite number {bound}, got {value!r}")


def check_optional_finite(model: Any, names: Iterable[str]) -> None:
    """Each ``model.<name>`` is None or a finite number (of any sign): thresholds."""
    for name in names:
        value = getattr(model, name)
        if value is not None and not is_finite_number(value):
            raise CfrecError(f"{_label(model)} {name} must be None or a finite number, got {value!r}")


def check_choice(model: Any, name: str, choices: Iterable[str]) -> None:
    """``model.<name>`` (compared in lower case) is one of ``choices``."""
    options = tuple(choices)
    value = getattr(model, name)
    if str(value).lower() not in options:
        raise CfrecError(f"{_label(model)} {name} must be one of {', '.join(map(repr, options))}, "
                         f"got {value!r}")


def _label(model: Any) -> str:
    return type(model).__name__
