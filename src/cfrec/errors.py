"""Exceptions raised by cfrec.

Every error a user can cause derives from :class:`CfrecError`, so the CLI can print one line and
exit non-zero without a traceback, and library users can catch them as a family.
"""

from __future__ import annotations

from pathlib import Path


class CfrecError(Exception):
    """Base class for every error cfrec raises on bad input or state."""


class DataError(CfrecError, ValueError):
    """Bad input data; names the file, line and field when they are known."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class DatasetUnavailable(CfrecError):
    """A named dataset is neither cached nor downloadable (for example, offline)."""


class ModelFileError(CfrecError):
    """A model folder is missing, corrupted, truncated or was not written by cfrec."""


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
