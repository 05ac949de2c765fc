"""The model registry: every model's short name, aliases, presets and the typed parsing of its
hyperparameters, for the CLI, the benchmark, tuning, the report and the service.

Built-in models are listed here and imported lazily (``import cfrec`` stays light). A model of
your own joins them with :func:`register_model`::

    from cfrec.models import Baseline, register_model

    @register_model("my-baseline")
    class MyBaseline(Baseline):
        ...

after which ``make_model("my-baseline")``, ``cfrec benchmark --models my-baseline`` (from code
that imported it) and ``Recommender.load`` of its saved folders work like for any built-in model.

Model specs on the command line and in :func:`cfrec.evaluation.run_benchmark` read
``NAME[:key=value,key=value]``: ``mf``, ``mf-lab`` (the course lab's recipe, ``BiasedMF.lab()``),
``als:n_factors=64,iterations=20``. Values are typed from the model's ``__init__`` annotations
(:func:`coerce_param`), so ``n_factors=64`` is an int, ``patience=none`` is ``None`` and a typo
in a name is an error listing the valid ones.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cfrec.errors import CfrecError
from cfrec.models.base import Recommender
from cfrec.models.names import (
    DEFAULT_BENCHMARK,
    QUICKSTART_MODEL,
    QUICKSTART_PARAMS,
    ModelSpec,
    find_class,
    get_spec,
    model_names,
    register_model,
    resolve_name,
    specs,
    unregister_model,
)
from cfrec.models.params import check_value, invalid, param_specs

__all__ = [
    "DEFAULT_BENCHMARK", "QUICKSTART_MODEL", "QUICKSTART_PARAMS", "ModelSpec", "check_params",
    "coerce_param", "default_models", "find_class", "get_spec", "make_model", "model_class",
    "model_names", "param_names", "param_spec", "parse_model_spec", "parse_param_assignments",
    "preset_params", "register_model", "resolve_name", "specs", "split_assignment",
    "split_model_list", "unregister_model",
]


# ---------------------------------------------------------------------- making models
def model_class(name: str) -> type[Recommender]:
    """Class for a short name (``"mf"``), an alias or a class name (``"BiasedMF"``)."""
    klass = get_spec(name).cls()
    if not (isinstance(klass, type) and issubclass(klass, Recommender)):
        raise CfrecError(f"{name!r} names {klass!r}, which is not a Recommender")
    return klass


def make_model(name: str, **params: Any) -> Recommender:
    """An unfitted registered model; a preset alias (``"mf-lab"``) applies its preset first.

    ``name`` may carry hyperparameters as ``"als:n_factors=64"`` (typed from the signature);
    keyword arguments override them.
    """
    spec, preset, parsed = parse_model_spec(name)
    model: Recommender = spec.make(preset, **{**parsed, **params})
    return model


# ---------------------------------------------------------------------- presets
def preset_params(spec: ModelSpec | str, preset: str) -> dict[str, Any]:
    """Hyperparameters of a model preset (``BiasedMF.lab()`` for ``mf``'s ``lab``)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    return spec.preset_params(preset)


def default_models(protocol: str = "offline") -> list[str]:
    """The models ``cfrec benchmark`` compares when none are named."""
    key = protocol.strip().lower().split(":")[0]
    return list(DEFAULT_BENCHMARK[key if key in ("online", "cold-items") else "offline"])


# ---------------------------------------------------------------------- model specs as text
def parse_model_spec(text: str) -> tuple[ModelSpec, str | None, dict[str, Any]]:
    """``"als:n_factors=64,iterations=20"`` -> ``(spec, preset, typed params)``."""
    name, _, arg_text = text.partition(":")
    spec, preset = resolve_name(name)
    assignments = [p for p in (part.strip() for part in arg_text.split(",")) if p]
    try:
        params = parse_param_assignments(spec.cls(), assignments)
    except CfrecError as exc:
        raise CfrecError(f"model {text.strip()!r}: {exc}") from None
    return spec, preset, params


def split_model_list(text: str) -> list[str]:
    """Split ``"baseline,mf:n_factors=64,epochs=20,als"`` into model specs.

    A comma followed by ``key=value`` continues the previous model's hyperparameters.
    """
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if out and ":" in out[-1] and "=" in part and ":" not in part:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


# ---------------------------------------------------------------------- typed parameters
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}


def param_names(model_cls: type[Recommender]) -> list[str]:
    """Hyperparameter names of a model class (its ``__init__`` keywords)."""
    return list(model_cls._param_names())


def _label(model_cls: type[Recommender]) -> str:
    short = getattr(model_cls, "name", "")
    return f"{short} ({model_cls.__name__})" if short else model_cls.__name__


def _check_name(model_cls: type[Recommender], name: str) -> None:
    valid = param_names(model_cls)
    if name not in valid:
        raise CfrecError(f"{_label(model_cls)} has no hyperparameter {name!r}; valid: {', '.join(valid)}")


def param_spec(model_cls: type[Recommender], name: str) -> tuple[tuple[Any, ...], bool, tuple[Any, ...] | None, Any]:
    """(accepted types, None allowed, Literal choices or None, default) of one hyperparameter, as
    its field declares them (:mod:`cfrec.models.params`)."""
    spec = param_specs(model_cls).get(name)
    if spec is None:  # a model class not declared with @hyperparameters: anything goes
        default = inspect.signature(model_cls.__init__).parameters[name].default
        default = None if default is inspect.Parameter.empty else default
        kind = type(default) if type(default) in (bool, int, float, str) else Any
        return (kind,), default is None, None, default
    return spec.types, spec.allow_none, spec.choices, spec.default


def coerce_param(model_cls: type[Recommender], name: str, value: Any) -> Any:
    """Convert ``value`` (often command-line text) to the type ``model_cls.__init__`` expects for ``name``.

    Types come from the annotation (``int``, ``float | None``, ``Literal["adam", "sgd"]``) or
    else from the default. Non-string values are checked and passed through (ints widen to
    floats). Raises :class:`~cfrec.errors.CfrecError` naming the parameter and what was expected.
    """
    _check_name(model_cls, name)
    value = _coerce(model_cls, name, value)
    check_value(model_cls, name, value)  # the declared range, in the wording every model shares
    return value


def _coerce(model_cls: type[Recommender], name: str, value: Any) -> Any:
    accepted, allow_none, choices, _ = param_spec(model_cls, name)
    declared = param_specs(model_cls).get(name)
    expected = declared.expected() if declared is not None else _describe(accepted, allow_none, choices)

    def bad() -> CfrecError:
        return invalid(model_cls, name, expected, value)

    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
        if allow_none:
            return None
        raise bad()
    if choices is not None:
        for c in choices:
            if c is not None and (value == c or str(c) == str(value).strip()):
                return c
        if not accepted:
            raise bad()
    if not isinstance(value, str):
        return _coerce_value(value, accepted, bad)
    text = value.strip()
    for t in accepted:
        if t is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        elif t is int:
            with contextlib.suppress(ValueError):
                return int(text)
            with contextlib.suppress(ValueError, OverflowError):
                f = float(text)
                if f.is_integer():
                    return int(f)
        elif t is float:
            with contextlib.suppress(ValueError):
                f = float(text)
                if math.isfinite(f):
                    return f
        elif t is str:
            return text
        elif t is Any:
            return _guess(text)
    raise bad()


def _coerce_value(value: Any, accepted: tuple[Any, ...], bad: Callable[[], CfrecError]) -> Any:
    """Check a non-string value against the accepted types (ints widen to floats)."""
    if isinstance(value, bool):
        if bool in accepted or Any in accepted:
            return value
        raise bad()
    if isinstance(value, int | np.integer) and (int in accepted or Any in accepted):
        return int(value)
    if isinstance(value, int | float | np.integer | np.floating) and float in accepted:
        return float(value)
    if isinstance(value, float | np.floating) and int in accepted and float(value).is_integer():
        return int(value)
    if Any in accepted:
        return value
    raise bad()


def _guess(text: str) -> Any:
    """Best-effort typing of text for an unannotated parameter: int, float, bool, else the string."""
    with contextlib.suppress(ValueError):
        return int(text)
    with contextlib.suppress(ValueError):
        return float(text)
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    return text


def _describe(accepted: tuple[Any, ...], allow_none: bool, choices: tuple[Any, ...] | None) -> str:
    parts = []
    if choices is not None:
        parts.append("one of " + ", ".join(repr(c) for c in choices if c is not None))
    names = {bool: "true/false", int: "an integer", float: "a number", str: "text", Any: "a value"}
    parts += [names[t] for t in accepted]
    if allow_none:
        parts.append("none")
    return " or ".join(dict.fromkeys(parts))


def split_assignment(text: str) -> tuple[str, str]:
    """``"n_factors=64"`` -> ``("n_factors", "64")`` (an error for anything else)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise CfrecError(f"bad parameter {text!r}: expected NAME=VALUE (for example n_factors=64)")
    return name, raw.strip()


def parse_param_assignments(model_cls: type[Recommender], assignments: Sequence[str]) -> dict[str, Any]:
    """Parse ``["n_factors=64", "lr=0.01"]`` into typed hyperparameters of ``model_cls``."""
    out: dict[str, Any] = {}
    for text in assignments:
        name, raw = split_assignment(text)
        out[name] = coerce_param(model_cls, name, raw)
    return out


def check_params(model_cls: type[Recommender], params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate names and coerce values of a hyperparameter dict (for example from JSON)."""
    return {name: coerce_param(model_cls, name, value) for name, value in params.items()}
