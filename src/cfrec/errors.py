"""Exceptions raised by cfrec.

Every error a user can cause derives from :class:`CfrecError`, so the CLI can print one line and
exit non-zero without a traceback, and library users can catch them as a family.

An error can carry :class:`OptionHint` objects: an option that resolves it, spelled both as the
Python keyword (``rating_scale=(1, 5)``) and as the command-line flag (``--rating-scale 1,5``).
``str(error)`` uses the Python spelling, because the library is called from Python;
``error.render("cli")`` uses the flag spelling, which is what the command-line interface prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Audience = Literal["python", "cli"]


@dataclass(frozen=True)
class OptionHint:
    """An option that resolves an error, spelled for each audience.

    Attributes
    ----------
    option
        The option's Python keyword (``"rating_scale"``); the flag is derived from it by the
        caller that builds the hint (see :mod:`cfrec.data.options`).
    python
        How a Python caller passes it, e.g. ``rating_scale=(1, 5)``.
    cli
        How a command-line user passes it, e.g. ``--rating-scale 1,5``.
    purpose
        What it does, completing "pass X to ...", e.g. ``"declare the scale"``; may be empty.
    verb
        ``"pass"``, or ``"drop"`` for options that do not apply.
    """

    option: str
    python: str
    cli: str
    purpose: str = ""
    verb: str = "pass"

    def render(self, audience: Audience = "python") -> str:
        """``"pass --rating-scale 1,5 to declare the scale"`` (or the Python spelling)."""
        spelled = self.cli if audience == "cli" else self.python
        return f"{self.verb} {spelled}" + (f" to {self.purpose}" if self.purpose else "")


class CfrecError(Exception):
    """Base class for every error cfrec raises on bad input or state.

    ``hints`` are options that would resolve the error; :meth:`render` spells them for the
    audience (``str()`` is the Python spelling).
    """

    hints: tuple[OptionHint, ...] = ()

    def render(self, audience: Audience = "python") -> str:
        """The one-line message, with option hints spelled for ``audience``."""
        return str(self)


def _join_hints(hints: tuple[OptionHint, ...], audience: Audience) -> str:
    if not hints:
        return ""
    parts = [h.render(audience) for h in hints]
    return "; " + (parts[0] if len(parts) == 1 else ", or ".join(parts))


class DataError(CfrecError, ValueError):
    """Bad input data; names the file, line and field when they are known.

    Parameters
    ----------
    message
        What is wrong, e.g. ``"'nan' is not a rating; expected a number"``.
    path, line, field
        Where: the file, the 1-based physical line and the column (a name or a role such as
        ``"rating"``).
    value
        The offending value as found in the file (text), when there is one.
    expected
        What was expected instead, e.g. ``"a number in [1, 5]"``.
    hints
        Options that resolve the error (see :class:`OptionHint`); the message ends with them.

    Attributes
    ----------
    reason
        ``message`` alone, without location or hints.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
        value: Any = None,
        expected: str | None = None,
        hints: tuple[OptionHint, ...] | list[OptionHint] = (),
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.value = value
        self.expected = expected
        self.reason = message
        self.hints = tuple(hints)
        super().__init__(self.render("python"))

    def location(self) -> str:
        """``"ratings.csv, line 3, field 'rating'"`` (the parts that are known)."""
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return ", ".join(where)

    def render(self, audience: Audience = "python") -> str:
        """The one-line message: location, reason and hints spelled for ``audience``."""
        where = self.location()
        text = self.reason + _join_hints(self.hints, audience)
        return f"{where}: {text}" if where else text

    def __reduce__(self) -> tuple[Any, ...]:  # keep keyword arguments through copy/pickle
        return (_rebuild_data_error, (self.reason, self.path, self.line, self.field, self.value,
                                      self.expected, self.hints))


def _rebuild_data_error(reason: str, path: str | None, line: int | None, field: str | None,
                        value: Any, expected: str | None,
                        hints: tuple[OptionHint, ...]) -> DataError:
    return DataError(reason, path=path, line=line, field=field, value=value, expected=expected,
                     hints=hints)


class DatasetUnavailable(CfrecError):
    """A named dataset is neither cached nor downloadable (for example, offline)."""


class ModelFileError(CfrecError):
    """A model folder is missing, corrupted, truncated or was not written by cfrec."""


class StorageError(CfrecError, OSError):
    """Reading or writing a file failed on the system's side (disk full, quota, permission,
    read-only file system, a file that vanished): one line naming the file, what failed and what
    was kept. An ``OSError`` too (``errno`` and ``filename`` set), so code that catches
    ``OSError`` still does."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.filename = filename
        self.strerror = message

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotFittedError(CfrecError, AttributeError):
    """A model method that needs learned state was called before ``fit``."""


class TrainingDiverged(CfrecError, FloatingPointError):
    """The training loss became NaN or infinite; usually the learning rate is too high."""

    def __init__(self, model: str, epoch: int, lr: float | None, loss: float) -> None:
        self.model, self.epoch, self.lr, self.loss = model, epoch, lr, loss
        hint = f" with learning rate {lr:g}; try a smaller one (e.g. {lr / 10:g})" if lr else ""
        super().__init__(f"{model} training diverged at epoch {epoch} (loss={loss}){hint}")


class UnknownIdError(CfrecError, KeyError):
    """A raw user or item id is not in the vocabulary where one was required."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""
