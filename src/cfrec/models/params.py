"""Hyperparameters declared once: type, range and default on each field, and the one validator.

A model lists its hyperparameters as fields of a class decorated with :func:`hyperparameters`;
the annotation gives the type (``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``)
and :func:`param` the default and the range::

    @hyperparameters
    class ALS(FactorRecommender):
        n_factors: int = param(default=10, ge=1)
        reg: float = param(default=0.04, ge=0)
        solver: Literal["cg", "exact"] = "cg"

:func:`check_params` runs every declared check (and the model's ``_check_combination`` for rules
that tie fields together) when a model is constructed, on ``set_params`` and at ``fit``; the
command line runs :func:`check_value` on each ``-p NAME=VALUE`` before any data is read. Every
failure reads the same way: ``ALS reg must be a finite number >= 0, got -1.0``.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from cfrec.errors import CfrecError

logger = logging.getLogger(__name__)

_T = TypeVar("_T", bound=type)

_KEY = "cfrec"  # the key of a field's metadata that holds its Bounds

#: The most threads any model may ask for (a ``threads`` field declares no higher bound of its own).
MAX_THREADS = 1024
_DEVICE_RE = r"(auto|cpu|mps|cuda|xpu)(:\d{1,4})?"
_DEVICE_EXPECT = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


@dataclass(frozen=True)
class Bounds:
    """A field's declared range and, for types the annotation cannot say, a custom check.

    ``ge``/``gt``/``le``/``lt`` bound numbers; ``check`` (with ``expect``, the wording of what
    it accepts) covers anything else, e.g. NeuMF's layer sizes.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Callable[[Any], bool] | None = None
    expect: str | None = None
    choices: tuple[Any, ...] | None = None  # for a ``str`` field whose options a subclass extends

    def holds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def describe(self) -> str:
        parts = [f"{op} {bound:g}" for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le),
                                                     ("<", self.lt)) if bound is not None]
        return " and ".join(parts)


def param(*, default: Any, ge: float | None = None, gt: float | None = None, le: float | None = None,
          lt: float | None = None, check: Callable[[Any], bool] | None = None,
          expect: str | None = None, choices: tuple[Any, ...] | None = None) -> Any:
    """A hyperparameter field: its default and declared range (see :class:`Bounds`)."""
    bounds = Bounds(ge, gt, le, lt, check, expect, choices)
    return dataclasses.field(default=default, metadata={_KEY: bounds})


@dataclass(frozen=True)
class ParamSpec:
    """Everything declared about one hyperparameter."""

    name: str
    types: tuple[Any, ...]  # bool, int, float, str, or Any (checked by bounds.check only)
    allow_none: bool
    choices: tuple[Any, ...] | None
    default: Any
    bounds: Bounds

    def expected(self) -> str:
        """What the field accepts, in words (the tail of every error message)."""
        if self.bounds.expect:
            main = self.bounds.expect
        elif self.choices is not None:
            main = "one of " + ", ".join(repr(c) for c in self.choices if c is not None)
        else:
            names = {bool: "true or false", int: "a whole number", float: "a finite number",
                     str: "text", Any: "a value"}
            main = " or ".join(dict.fromkeys(names[t] for t in self.types)) or "a value"
            rng = self.bounds.describe()
            if rng and (int in self.types or float in self.types):
                main = f"{main} {rng}"
        return f"None or {main}" if self.allow_none else main

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if self.bounds.check is not None:
            return bool(self.bounds.check(value))
        if self.choices is not None:
            return value in [c for c in self.choices if c is not None]
        for t in self.types:
            if t is Any:
                return True
            if t is bool and isinstance(value, bool | np.bool_):
                return True
            if t is str and isinstance(value, str):
                return True
            if t in (int, float) and _is_number(value, whole=t is int):
                return self.bounds.holds(float(value))
        return False


@typing.dataclass_transform(kw_only_default=True, eq_default=False, field_specifiers=(param,))
def hyperparameters(cls: _T) -> _T:
    """Declare a model's hyperparameters as keyword-only dataclass fields.

    The generated ``__init__`` stores every argument verbatim and then checks them
    (:func:`check_params`), so ``get_params`` and the command line read them from the signature.
    Learned state must not be declared as a field (its names end in ``_``).
    """
    for name in cls.__dict__.get("__annotations__", {}):
        if name.endswith("_") and not name.startswith("__"):
            raise TypeError(f"{cls.__name__}.{name}: learned state is not a hyperparameter; "
                            "assign it in fit instead of declaring it in the class body")
    return dataclasses.dataclass(kw_only=True, eq=False, repr=False)(cls)  # type: ignore[return-value]


@hyperparameters
class Runtime:
    """Where and how a model computes, declared once for the models that take all three:
    ``device`` (``None``/``"auto"``: CUDA when available), ``threads`` (CPU threads; ``None``:
    ``CFREC_NUM_THREADS``, else the model's own rule; at most :data:`MAX_THREADS`) and ``seed``
    (``None``: fresh entropy). Each model's docstring says what they mean for it."""

    device: str | None = None
    threads: int | None = param(default=None, ge=1)
    seed: int | None = param(default=0, ge=0)


def param_specs(cls: type) -> dict[str, ParamSpec]:
    """The hyperparameters of a model class by name: its ``__init__`` keywords, typed by their
    annotations, with the ranges their fields declare."""
    cached = cls.__dict__.get("_cfrec_param_specs")
    if cached is not None:
        return dict(cached)
    params = [p for p in inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
              if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if issubclass(cls, Runtime):  # the inherited group first in the signature, last in listings
        params.sort(key=lambda p: p.name in Runtime.__dataclass_fields__)
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    hints: dict[str, Any] = {}
    init: Any = cls.__init__  # type: ignore[misc]
    for source in (cls, init):  # the fields' annotations, then a hand-written __init__'s
        try:
            hints.update(typing.get_type_hints(source))
        except Exception:  # an annotation that does not resolve: the default's type decides
            pass
    specs: dict[str, ParamSpec] = {}
    for p in params:
        default = None if p.default is inspect.Parameter.empty else p.default
        bounds = fields[p.name].metadata.get(_KEY, Bounds()) if p.name in fields else Bounds()
        specs[p.name] = _spec(p.name, hints.get(p.name), default, bounds)
    type.__setattr__(cls, "_cfrec_param_specs", specs)
    return dict(specs)


def _spec(name: str, hint: Any, default: Any, bounds: Bounds) -> ParamSpec:
    accepted: list[Any] = []
    choices: tuple[Any, ...] | None = None
    allow_none = False

    def visit(h: Any) -> None:
        nonlocal allow_none, choices
        origin = typing.get_origin(h)
        if h is type(None) or h is None:
            allow_none = True
        elif origin is typing.Union or isinstance(h, types.UnionType):
            for arg in typing.get_args(h):
                visit(arg)
        elif origin is Literal:
            choices = tuple(typing.get_args(h))
            allow_none = allow_none or None in choices
        elif h in (bool, int, float, str):
            accepted.append(h)
        else:
            accepted.append(Any)

    if hint is not None:
        visit(hint)
    elif default is not None and type(default) in (bool, int, float, str):
        accepted.append(type(default))
    if bounds.choices is not None:
        choices = bounds.choices
    bounds = _common_bounds(name, bounds)
    if not accepted and choices is None:
        accepted.append(Any)
    return ParamSpec(name, tuple(accepted), allow_none, choices, default, bounds)


def invalid(model: Any, name: str, expected: str, value: Any = dataclasses.MISSING) -> CfrecError:
    """The one wording of a bad hyperparameter: ``ALS reg must be a finite number >= 0, got -1``."""
    cls = model if isinstance(model, type) else type(model)
    if value is dataclasses.MISSING:
        value = getattr(model, name)
    return CfrecError(f"{cls.__name__} {name} must be {expected}, got {value!r}")


def check_value(cls: type, name: str, value: Any) -> None:
    """Check one value against ``cls``'s declaration of ``name`` (raises :class:`CfrecError`)."""
    spec = param_specs(cls).get(name)
    if spec is not None and not spec.accepts(value):
        raise invalid(cls, name, spec.expected(), value)


def check_params(model: Any) -> None:
    """Check every declared hyperparameter of ``model``, then the rules between them."""
    for name, spec in param_specs(type(model)).items():
        if not hasattr(model, name):  # a hand-written __init__ still setting its attributes
            continue
        value = getattr(model, name)
        if not spec.accepts(value):
            raise invalid(model, name, spec.expected(), value)
    combination = getattr(model, "_check_combination", None)
    if combination is not None:
        combination()


def _common_bounds(name: str, bounds: Bounds) -> Bounds:
    """Rules every model shares for fields of a well-known name, unless the field says otherwise:
    ``threads`` at most :data:`MAX_THREADS`."""
    if name == "threads" and bounds.le is None and bounds.lt is None:
        return dataclasses.replace(bounds, le=MAX_THREADS)
    return bounds


def _device_spelled(value: Any) -> bool:
    import re

    return isinstance(value, str) and re.fullmatch(_DEVICE_RE, value) is not None


def device_missing(value: Any) -> str | None:
    """Why the device ``value`` (a checked ``device`` hyperparameter) is not on this machine, or
    None when it is (``None``, ``"auto"`` and ``"cpu"`` always are)."""
    if value is None or value in ("auto", "cpu"):
        return None
    import torch

    dev = torch.device(value)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine"
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            return f"this machine has {count} CUDA device(s)"
        return None
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available on this machine"
    if dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return "XPU is not available on this machine"
    return None


def check_saved_params(cls: type, params: Any) -> None:
    """Check hyperparameters read from a model file before the model is built from them: an
    object of known names, each valid by its declaration, and a ``device`` this machine can use.
    A device whose kind this machine has none of (a model trained on a GPU, served on a CPU box)
    is replaced by ``"cpu"`` in ``params`` (logged); a device index beyond what it has
    (``"cuda:7"`` on a one-GPU machine) is an error. Raises :class:`CfrecError` naming the field
    (``params.device``)."""
    if not isinstance(params, dict):
        raise CfrecError(f"params must be an object of hyperparameters, got {type(params).__name__}")
    specs = param_specs(cls)
    for name, value in params.items():
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise CfrecError(f"params.{name}: {cls.__name__} has no such hyperparameter")
        if not spec.accepts(value):
            raise CfrecError(f"params.{name} must be {spec.expected()}, got {_short(value)}")
    device = params.get("device") if "device" in specs else None
    if device is not None and not _device_spelled(device):
        raise CfrecError(f"params.device {_short(device)} is not a device ({_DEVICE_EXPECT})")
    missing = device_missing(device)
    if missing and _device_kind_present(device):
        raise CfrecError(f"params.device {params['device']!r} names a device this machine lacks ({missing}); "
                         "load the model where it exists, or retrain it with device 'cpu' or 'auto'")
    if missing:  # trained on an accelerator this machine has none of: it scores on the CPU
        logger.warning("the model was saved with device %r and %s: it runs on the CPU here",
                       params["device"], missing)
        params["device"] = "cpu"


def _device_kind_present(value: Any) -> bool:
    """Whether this machine has any device of ``value``'s kind (CUDA, MPS, XPU)."""
    import torch

    kind = torch.device(value).type
    if kind == "cuda":
        return bool(torch.cuda.is_available())
    if kind == "mps":
        return bool(torch.backends.mps.is_available())
    if kind == "xpu":
        return bool(hasattr(torch, "xpu") and torch.xpu.is_available())
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any, *, whole: bool) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    if whole:
        return isinstance(value, int | np.integer)
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(float(value))
