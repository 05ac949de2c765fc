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
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

_R = TypeVar("_R", bound="type[Recommender]")


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes
    ----------
    name
        Canonical short name (``"mf"``).
    target
        ``"module:Class"`` for a built-in model (imported on first use), or the class itself.
    summary
        One line for ``--help`` and listings.
    aliases
        Other accepted names. An alias may select a preset: ``{"mf-lab": "lab"}``.
    presets
        Preset name -> name of a class method returning a configured instance (``BiasedMF.lab``).
    ranking
        True for ranking-only models (no rating predictions).
    """

    name: str
    target: str | type
    summary: str = ""
    aliases: Mapping[str, str | None] = field(default_factory=dict)
    presets: Sequence[str] = ()
    ranking: bool = False

    def cls(self) -> type[Recommender]:
        if isinstance(self.target, type):
            return self.target
        module, _, qualname = self.target.partition(":")
        klass: type[Recommender] = getattr(import_module(module), qualname)
        return klass

    @property
    def class_name(self) -> str:
        return self.target.__name__ if isinstance(self.target, type) else self.target.partition(":")[2]

    @property
    def module(self) -> str:
        return self.target.__module__ if isinstance(self.target, type) else self.target.partition(":")[0]

    def make(self, preset: str | None = None, **params: Any) -> Recommender:
        """An unfitted instance: the preset's configuration (if any) overridden by ``params``."""
        klass = self.cls()
        if preset is None:
            return klass(**params)
        return klass(**{**preset_params(self, preset), **params})


_BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec("baseline", "cfrec.models.baseline:Baseline",
              "global mean + regularised user and item biases (closed form)"),
    ModelSpec("mf", "cfrec.models.mf:BiasedMF",
              "biased matrix factorisation trained by per-rating SGD (Funk, Netflix Prize) or Adam",
              aliases={"biasedmf": None, "mf-lab": "lab", "lab": "lab"}, presets=("lab",)),
    ModelSpec("als", "cfrec.models.als:ALS", "biased MF fitted by alternating least squares"),
    ModelSpec("svdpp", "cfrec.models.svdpp:SVDpp", "SVD++: biased MF plus implicit feedback",
              aliases={"svd++": None}),
    ModelSpec("neumf", "cfrec.models.neumf:NeuMF", "neural matrix factorisation (GMF + MLP towers)"),
    ModelSpec("bmf", "cfrec.models.bayesian_mf:BayesianMF",
              "Bayesian MF with SVD++-style implicit features, by Gibbs sampling",
              aliases={"bayesian-mf": None, "bpmf": None}),
    ModelSpec("ials", "cfrec.models.ials:IALS", "implicit-feedback ALS for top-K ranking",
              ranking=True),
    ModelSpec("ease", "cfrec.models.ease:EASE",
              "EASE: closed-form item-item autoencoder for top-K ranking (Steck 2019)", ranking=True),
    ModelSpec("itemknn", "cfrec.models.itemknn:ItemKNN", "item-based kNN with baseline correction (KNNBaseline)", aliases={"itemknn-rank": "ranking"}, presets=("ranking",)),
    ModelSpec("bpr", "cfrec.models.bpr:BPR",
              "Bayesian personalised ranking: pairwise loss on sampled negatives (Rendle 2009)", ranking=True),
    ModelSpec("multvae", "cfrec.models.multvae:MultVAE",
              "Mult-VAE: variational autoencoder with a multinomial likelihood (Liang 2018)", ranking=True),
    ModelSpec("two-stage", "cfrec.models.two_stage:TwoStage",
              "candidates from a ranking model (EASE) ordered by a rating model's predictions (BiasedMF)",
              aliases={"twostage": None}),
    ModelSpec("pop", "cfrec.models.popularity:PopularityRecommender",
              "most popular items (the non-personalised ranking yardstick)",
              aliases={"popularity": None, "most-popular": None}, ranking=True),
)

#: Models compared by ``cfrec benchmark`` when none are named, per protocol.
DEFAULT_BENCHMARK: dict[str, tuple[str, ...]] = {
    "offline": ("baseline", "mf", "als", "svdpp", "neumf", "ials", "ease", "bpr", "multvae"),
    # the online replay folds NeuMF in once per test rating (tens of minutes on ML-100K)
    "online": ("baseline", "mf", "als", "svdpp", "ials", "ease"),
}
#: The model the quickstart trains (the lab's model family) and its settings.
QUICKSTART_MODEL = "mf"
QUICKSTART_PARAMS: dict[str, Any] = {
    # early stopping on a 10% carve picks the epoch count, then a refit on all training ratings
    "seed": 0, "epochs": 20, "valid_fraction": 0.1, "patience": 2, "refit": True,
}

_specs: dict[str, ModelSpec] = {spec.name: spec for spec in _BUILTIN}


# ---------------------------------------------------------------------- lookup
def model_names() -> list[str]:
    """Canonical names of every registered model, built-in first."""
    return list(_specs)


def specs() -> list[ModelSpec]:
    return list(_specs.values())


def resolve_name(name: str) -> tuple[ModelSpec, str | None]:
    """``(spec, preset)`` for a name, an alias (which may select a preset) or a class name."""
    key = name.strip().lower()
    for spec in _specs.values():
        if key == spec.name:
            return spec, None
        aliases = {a.lower(): p for a, p in spec.aliases.items()}
        if key in aliases:
            return spec, aliases[key]
        if key == spec.class_name.lower():
            return spec, None
    raise CfrecError(f"unknown model {name!r}; choose one of {', '.join(_specs)} "
                     f"(aliases: {', '.join(a for s in _specs.values() for a in s.aliases)})")


def get_spec(name: str) -> ModelSpec:
    return resolve_name(name)[0]


def model_class(name: str) -> type[Recommender]:
    """Class for a short name (``"mf"``), an alias or a class name (``"BiasedMF"``)."""
    return get_spec(name).cls()


def make_model(name: str, **params: Any) -> Recommender:
    """An unfitted registered model; a preset alias (``"mf-lab"``) applies its preset first.

    ``name`` may carry hyperparameters as ``"als:n_factors=64"`` (typed from the signature);
    keyword arguments override them.
    """
    spec, preset, parsed = parse_model_spec(name)
    return spec.make(preset, **{**parsed, **params})


def find_class(class_name: str, module: str | None = None) -> type[Recommender] | None:
    """The registered class of a saved model (by class name, and module when recorded), or None."""
    for spec in _specs.values():
        if spec.class_name == class_name and (module is None or spec.module == module):
            return spec.cls()
    return None


def register_model(
    name: str | None = None,
    *,
    aliases: Mapping[str, str | None] | Sequence[str] = (),
    summary: str = "",
    presets: Sequence[str] = (),
    ranking: bool = False,
) -> Callable[[_R], _R]:
    """Class decorator adding a model of your own to the registry under ``name``.

    ``name`` defaults to the class's ``name`` attribute, else its lower-cased class name. A name
    already taken by another class is an error.
    """

    def decorate(cls: _R) -> _R:
        short = (name or getattr(cls, "name", "") or cls.__name__).strip().lower()
        taken = _specs.get(short)
        if taken is not None and taken.target is not cls and taken.class_name != cls.__name__:
            raise CfrecError(f"model name {short!r} is already registered for {taken.class_name}")
        alias_map = dict(aliases) if isinstance(aliases, Mapping) else {a: None for a in aliases}
        _specs[short] = ModelSpec(short, cls, summary or (inspect.getdoc(cls) or "").split("\n")[0],
                                  alias_map, tuple(presets), ranking)
        return cls

    return decorate


def unregister_model(name: str) -> None:
    """Remove a model registered with :func:`register_model` (built-in models stay)."""
    if name in {s.name for s in _BUILTIN}:
        raise CfrecError(f"{name!r} is a built-in model and cannot be unregistered")
    _specs.pop(name, None)


# ---------------------------------------------------------------------- presets
def preset_params(spec: ModelSpec | str, preset: str) -> dict[str, Any]:
    """Hyperparameters of a model preset (``BiasedMF.lab()`` for ``mf``'s ``lab``)."""
    spec = get_spec(spec) if isinstance(spec, str) else spec
    if preset not in spec.presets:
        raise CfrecError(f"{spec.name} ({spec.class_name}) has no preset {preset!r}; "
                         f"available: {', '.join(spec.presets) or 'none'}")
    maker = getattr(spec.cls(), preset)
    return dict(maker().get_params())


def default_models(protocol: str = "offline") -> list[str]:
    """The models ``cfrec benchmark`` compares when none are named."""
    return list(DEFAULT_BENCHMARK["online" if protocol.strip().lower() == "online" else "offline"])


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
    """(accepted types, None allowed, Literal choices or None, default) of one ``__init__`` parameter."""
    sig = inspect.signature(model_cls.__init__)
    param = sig.parameters[name]
    default = param.default if param.default is not inspect.Parameter.empty else None
    try:
        hint = typing.get_type_hints(model_cls.__init__).get(name)
    except Exception:  # unresolvable annotation: fall back to the default's type
        hint = None
    accepted: list[Any] = []
    choices: tuple[Any, ...] | None = None
    allow_none = default is None and param.default is not inspect.Parameter.empty

    def visit(h: Any) -> None:
        nonlocal allow_none, choices
        origin = typing.get_origin(h)
        if h is type(None):
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
    if not accepted and choices is None:
        accepted.append(Any)
    return tuple(accepted), allow_none, choices, default


def coerce_param(model_cls: type[Recommender], name: str, value: Any) -> Any:
    """Convert ``value`` (often command-line text) to the type ``model_cls.__init__`` expects for ``name``.

    Types come from the annotation (``int``, ``float | None``, ``Literal["adam", "sgd"]``) or
    else from the default. Non-string values are checked and passed through (ints widen to
    floats). Raises :class:`~cfrec.errors.CfrecError` naming the parameter and what was expected.
    """
    _check_name(model_cls, name)
    accepted, allow_none, choices, _ = param_spec(model_cls, name)
    expected = _describe(accepted, allow_none, choices)

    def bad() -> CfrecError:
        return CfrecError(f"bad value {value!r} for hyperparameter {name!r} of {_label(model_cls)}: "
                          f"expected {expected}")

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
