"""Model registry: short names (for the CLI and the REST service) -> model classes."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cfrec.errors import CfrecError

if TYPE_CHECKING:
    from cfrec.models.base import Recommender

# name -> (module, class). Imported lazily so `import cfrec` stays light.
_MODELS: dict[str, tuple[str, str]] = {
    "baseline": ("cfrec.models.baseline", "Baseline"),
    "mf": ("cfrec.models.mf", "BiasedMF"),
    "als": ("cfrec.models.als", "ALS"),
    "svdpp": ("cfrec.models.svdpp", "SVDpp"),
    "neumf": ("cfrec.models.neumf", "NeuMF"),
    "ials": ("cfrec.models.ials", "IALS"),
    "pop": ("cfrec.models.popularity", "PopularityRecommender"),
}


def model_names() -> list[str]:
    """Registered short names, in a stable order."""
    return list(_MODELS)


def model_class(name: str) -> type[Recommender]:
    """Class for a short name (``"mf"``) or a class name (``"BiasedMF"``)."""
    key = name.lower()
    for short, (module, cls) in _MODELS.items():
        if key in (short, cls.lower()):
            klass: type[Recommender] = getattr(import_module(module), cls)
            return klass
    raise CfrecError(f"unknown model {name!r}; choose one of {', '.join(_MODELS)}")


def make_model(name: str, **params: Any) -> Recommender:
    """Instantiate a registered model with hyperparameters."""
    return model_class(name)(**params)
