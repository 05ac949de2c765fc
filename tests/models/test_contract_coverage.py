"""Every registered model runs the contract of :mod:`cfrec.testing` somewhere in tests/models."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import tests.models
from cfrec.models.registry import specs
from cfrec.testing import RecommenderContract


def _contract_classes() -> list[type[RecommenderContract]]:
    """The contract subclasses of every test module in this folder (imported here to find them)."""
    for info in pkgutil.iter_modules([str(Path(tests.models.__file__).parent)]):
        if info.name.startswith("test_"):
            importlib.import_module(f"tests.models.{info.name}")
    out, todo = [], list(RecommenderContract.__subclasses__())
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return [c for c in out if c.__module__.startswith("tests.models.") and c.__name__.startswith("Test")]


def test_every_registered_model_has_a_contract_run() -> None:
    covered = {type(cls().make_model()) for cls in _contract_classes()}
    missing = sorted(f"{spec.name} ({spec.class_name})" for spec in specs() if spec.cls() not in covered)
    assert not missing, (f"registered models without a RecommenderContract subclass in tests/models: "
                         f"{', '.join(missing)}")


def test_a_model_without_a_contract_run_is_reported() -> None:
    """The check above can fail: a model registered only here has no contract class."""
    from cfrec.models import register_model, unregister_model
    from cfrec.models.baseline import Baseline

    @register_model("uncontracted")
    class Uncontracted(Baseline):
        pass

    try:
        covered = {type(cls().make_model()) for cls in _contract_classes()}
        assert Uncontracted not in covered
        assert any(spec.cls() is Uncontracted for spec in specs())
    finally:
        unregister_model("uncontracted")
