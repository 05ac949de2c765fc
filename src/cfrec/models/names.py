"""The table of models: every model's short name, aliases, presets and class, and the class a
saved model folder names.

This is the registry's lower half: it holds classes as plain ``type`` objects and imports a
built-in model's module only by the name written here, on first use, so :mod:`cfrec.models.base`
resolves a saved folder's class through it without an import circle.
:mod:`cfrec.models.registry` (which re-exports all of this) adds making models and typed
hyperparameters on top.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, TypeVar, cast

from cfrec.errors import CfrecError, ModelFileError

_R = TypeVar("_R", bound=type)


@dataclass(frozen=True)
class ModelSpec:
    """One registered model.

    Attributes
    ----------
    name
        Canonical short name (``"mf"``).
    target
        ``"module:Class"`` for a built-in model (imported on first use), or the class itself.
    aliases
        Other accepted names. An alias may select a preset: ``{"mf-lab": "lab"}``.
    presets
        Preset name -> name of a class method returning a configured instance (``BiasedMF.lab``).
    """

    name: str
    target: str | type
    aliases: Mapping[str, str | None] = field(default_factory=dict)
    presets: Sequence[str] = ()

    def cls(self) -> type[Any]:
        """The model class (a built-in one is imported now, by the name this table gives)."""
        if isinstance(self.target, type):
            return self.target
        module, _, qualname = self.target.partition(":")
        klass: type[Any] = getattr(import_module(module), qualname)
        return klass

    @property
    def class_name(self) -> str:
        return self.target.__name__ if isinstance(self.target, type) else self.target.partition(":")[2]

    @property
    def module(self) -> str:
        return self.target.__module__ if isinstance(self.target, type) else self.target.partition(":")[0]

    @property
    def ranking(self) -> bool:
        """True for a ranking-only model (its default configuration predicts no ratings): read
        from the class itself, which says so through ``predicts_ratings``."""
        return not self.make().predicts_ratings

    def make(self, preset: str | None = None, **params: Any) -> Any:
        """An unfitted instance: the preset's configuration (if any) overridden by ``params``."""
        klass = self.cls()
        if preset is None:
            return klass(**params)
        return klass(**{**self.preset_params(preset), **params})

    def preset_params(self, preset: str) -> dict[str, Any]:
        """Hyperparameters of a preset (``BiasedMF.lab()`` for ``mf``'s ``lab``)."""
        if preset not in self.presets:
            raise CfrecError(f"{self.name} ({self.class_name}) has no preset {preset!r}; "
                             f"available: {', '.join(self.presets) or 'none'}")
        maker = getattr(self.cls(), preset)
        return dict(maker().get_params())


_BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec("baseline", "cfrec.models.baseline:Baseline"),
    ModelSpec("mf", "cfrec.models.mf:BiasedMF",
              aliases={"biasedmf": None, "mf-lab": "lab", "lab": "lab"}, presets=("lab",)),
    ModelSpec("als", "cfrec.models.als:ALS"),
    ModelSpec("svdpp", "cfrec.models.svdpp:SVDpp",
              aliases={"svd++": None}),
    ModelSpec("neumf", "cfrec.models.neumf:NeuMF"),
    ModelSpec("bmf", "cfrec.models.bayesian_mf:BayesianMF",
              aliases={"bayesian-mf": None, "bpmf": None}),
    ModelSpec("bfm", "cfrec.models.bayesian_fm:BayesianFM",
              aliases={"bayesian-fm": None, "fm": None}),
    ModelSpec("ials", "cfrec.models.ials:IALS"),
    ModelSpec("ease", "cfrec.models.ease:EASE"),
    ModelSpec("itemknn", "cfrec.models.itemknn:ItemKNN", aliases={"itemknn-rank": "ranking"}, presets=("ranking",)),
    ModelSpec("bpr", "cfrec.models.bpr:BPR"),
    ModelSpec("hybrid", "cfrec.models.hybrid:HybridRanker"),
    ModelSpec("multvae", "cfrec.models.multvae:MultVAE"),
    ModelSpec("two-stage", "cfrec.models.two_stage:TwoStage",
              aliases={"twostage": None}),
    ModelSpec("pop", "cfrec.models.popularity:PopularityRecommender",
              aliases={"popularity": None, "most-popular": None}),
)

#: Models compared by ``cfrec benchmark`` when none are named, per protocol.
DEFAULT_BENCHMARK: dict[str, tuple[str, ...]] = {
    "offline": ("baseline", "mf", "als", "svdpp", "neumf", "ials", "ease", "bpr", "multvae"),
    # the online replay folds NeuMF in once per test rating (tens of minutes on ML-100K)
    "online": ("baseline", "mf", "als", "svdpp", "ials", "ease"),
    # models that take new items (the protocol adds its own references)
    "cold-items": ("hybrid",),
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


def ranking_names() -> list[str]:
    """Names that make a ranking model: each ranking-only model's name, and each alias whose preset
    makes a ranking model or fits interactions (``itemknn-rank``)."""
    out: list[str] = []
    for spec in _specs.values():
        if spec.ranking:
            out.append(spec.name)
            continue
        for alias, preset in spec.aliases.items():
            model = spec.make(preset) if preset is not None else None
            if model is not None and (not model.predicts_ratings or model.fits_interactions):
                out.append(alias)
    return out


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


def find_class(class_name: str, module: str | None = None) -> type[Any] | None:
    """The registered class of a saved model (by class name, and module when recorded), or None."""
    for spec in _specs.values():
        if spec.class_name == class_name and (module is None or spec.module == module):
            return spec.cls()
    return None


def saved_class(meta: Mapping[str, Any], cls: _R, *, where: Any) -> _R:
    """The class to load a saved model as: ``cls`` itself when the folder holds exactly that class
    (so a user's own subclass round-trips through ``MyModel.load``), else the registered class of
    that name, which must be a subclass of ``cls``. Nothing is imported because a file says so.
    Raises :class:`~cfrec.errors.ModelFileError` naming ``where`` otherwise."""
    stored, module = meta.get("model_class"), meta.get("model_module")
    if not isinstance(stored, str):
        raise ModelFileError(f"{where}: no model class recorded")
    if cls.__name__ == stored and not inspect.isabstract(cls):
        return cls
    found = find_class(stored, module if isinstance(module, str) else None)
    if found is None:
        at = f" (module {module})" if module else ""
        raise ModelFileError(f"{where}: holds a {stored}{at}, which is not a registered model class; load it "
                             f"with {stored}.load(path) from the code that defines it, or decorate that class "
                             "with @cfrec.models.register_model")
    if not issubclass(found, cls):
        raise ModelFileError(f"{where} holds a {found.__name__}, not a {cls.__name__}")
    return cast(_R, found)


def register_model(
    name: str | None = None,
    *,
    aliases: Mapping[str, str | None] | Sequence[str] = (),
    presets: Sequence[str] = (),
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
        _specs[short] = ModelSpec(short, cls, alias_map, tuple(presets))
        return cls

    return decorate


def unregister_model(name: str) -> None:
    """Remove a model registered with :func:`register_model` (built-in models stay)."""
    if name in {s.name for s in _BUILTIN}:
        raise CfrecError(f"{name!r} is a built-in model and cannot be unregistered")
    _specs.pop(name, None)
