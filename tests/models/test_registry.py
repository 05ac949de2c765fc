"""The model registry: names, aliases, presets, typed hyperparameters, and models of one's own."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest

from cfrec.errors import CfrecError
from cfrec.models import Recommender, make_model, register_model, unregister_model
from cfrec.models.baseline import Baseline
from cfrec.models.mf import BiasedMF
from cfrec.models.registry import (
    coerce_param,
    default_models,
    get_spec,
    model_names,
    parse_model_spec,
    parse_param_assignments,
    split_model_list,
)
from cfrec.testing import make_ratings


class Knobs(Baseline):
    """A Baseline with every kind of annotation the parser must handle."""

    name = "knobs"

    def __init__(
        self,
        *,
        reg_user: float = 5.0,
        reg_item: float = 5.0,
        iterations: int = 15,
        optimizer: Literal["adam", "sgd"] = "adam",
        patience: int | None = None,
        device: str | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__(reg_user=reg_user, reg_item=reg_item, iterations=iterations)
        self.optimizer = optimizer
        self.patience = patience
        self.device = device
        self.verbose = verbose


# ---------------------------------------------------------------------- typed parameters
def test_coerce_param_uses_annotations():
    assert coerce_param(Knobs, "reg_user", "3") == 3.0 and isinstance(coerce_param(Knobs, "reg_user", "3"), float)
    assert coerce_param(Knobs, "iterations", "20") == 20
    assert coerce_param(Knobs, "iterations", "1e2") == 100
    assert coerce_param(Knobs, "optimizer", "sgd") == "sgd"
    assert coerce_param(Knobs, "patience", "none") is None
    assert coerce_param(Knobs, "patience", "3") == 3
    assert coerce_param(Knobs, "device", "cuda") == "cuda"
    assert coerce_param(Knobs, "verbose", "yes") is True
    assert coerce_param(Knobs, "verbose", "0") is False
    assert coerce_param(Knobs, "reg_item", 2) == 2.0  # JSON ints widen to floats


@pytest.mark.parametrize(("name", "value", "fragment"), [
    ("iterations", "2.5", "Knobs iterations must be a whole number >= 1, got '2.5'"),
    ("reg_user", "abc", "Knobs reg_user must be a finite number >= 0, got 'abc'"),
    ("optimizer", "adagrad", "Knobs optimizer must be one of 'adam', 'sgd', got 'adagrad'"),
    ("reg_user", "none", "Knobs reg_user must be a finite number >= 0, got 'none'"),
    ("verbose", "maybe", "Knobs verbose must be true or false, got 'maybe'"),
])
def test_coerce_param_rejects_bad_values(name, value, fragment):
    with pytest.raises(CfrecError) as info:
        coerce_param(Knobs, name, value)
    assert str(info.value) == fragment


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(CfrecError) as info:
        parse_param_assignments(Baseline, ["n_factors=8"])
    assert "no hyperparameter 'n_factors'" in str(info.value)
    assert "reg_user, reg_item, iterations" in str(info.value)
    with pytest.raises(CfrecError, match="NAME=VALUE"):
        parse_param_assignments(Baseline, ["reg_user"])


# ---------------------------------------------------------------------- names and specs
def test_every_builtin_model_resolves_and_makes_an_instance() -> None:
    for name in model_names():
        spec = get_spec(name)
        model = make_model(name)
        assert isinstance(model, spec.cls()) and isinstance(model, Recommender)
        assert type(model).name == name  # the class's own short name is its registry name


def test_aliases_presets_and_class_names() -> None:
    assert get_spec("popularity").name == get_spec("most-popular").name == "pop"
    assert get_spec("BiasedMF").name == "mf"
    lab = make_model("mf-lab")
    assert lab.get_params() == BiasedMF.lab().get_params()
    tuned = make_model("mf-lab:epochs=3")
    assert tuned.epochs == 3 and tuned.n_factors == 64  # the preset, then the override
    spec, preset, params = parse_model_spec("als:n_factors=64,iterations=20")
    assert (spec.name, preset, params) == ("als", None, {"n_factors": 64, "iterations": 20})
    with pytest.raises(CfrecError, match="unknown model 'nope'"):
        make_model("nope")
    with pytest.raises(CfrecError, match="no hyperparameter 'bogus'"):
        make_model("als:bogus=1")


def test_model_lists() -> None:
    assert split_model_list("baseline,mf:n_factors=64,epochs=20,als") == [
        "baseline", "mf:n_factors=64,epochs=20", "als"]
    assert "neumf" in default_models("folds") and "neumf" not in default_models("online")
    assert all(name in model_names() for name in default_models())


# ---------------------------------------------------------------------- a model of one's own
class MyBaseline(Baseline):
    """A user's subclass defined outside cfrec: biases pulled halfway to zero."""

    def _fit(self, train, valid, on_epoch):
        super()._fit(train, valid, on_epoch)
        self.user_bias_ = self.user_bias_ * 0.5


def test_user_subclass_saves_and_loads_with_identical_predictions(tmp_path) -> None:
    data = make_ratings()
    model = MyBaseline(reg_user=2.0).fit(data)
    path = model.save(tmp_path / "mine")
    loaded = MyBaseline.load(path)
    assert type(loaded) is MyBaseline and loaded.get_params() == model.get_params()
    u, i = data.raw_users(), data.raw_items()
    np.testing.assert_array_equal(loaded.predict(u, i), model.predict(u, i))
    # the base class cannot know it until it is registered
    with pytest.raises(CfrecError, match="register_model"):
        Recommender.load(path)
    register_model("my-baseline")(MyBaseline)
    try:
        assert type(Recommender.load(path)) is MyBaseline
        assert isinstance(make_model("my-baseline"), MyBaseline)
    finally:
        unregister_model("my-baseline")
    with pytest.raises(CfrecError, match="built-in"):
        unregister_model("mf")


def test_ranking_flag_comes_from_the_class() -> None:
    from cfrec.models.registry import get_spec

    assert [get_spec(n).ranking for n in ("ials", "ease", "bpr", "multvae", "pop")] == [True] * 5
    assert [get_spec(n).ranking for n in ("baseline", "mf", "als", "svdpp", "neumf", "bmf", "two-stage")] == [False] * 7
