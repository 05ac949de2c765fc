"""Hyperparameters declared once: one validator at construction, set_params, fit and the CLI,
with one wording for every model."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cfrec.errors import CfrecError
from cfrec.models import make_model
from cfrec.models.params import check_value, param_specs
from cfrec.models.registry import model_class, parse_param_assignments, specs

WORDING = re.compile(r"^\w+ \w+ must be .+, got .+$")


def _bad_value(spec: Any) -> Any:
    """A value the declaration refuses (None if every value of its type is accepted)."""
    b = spec.bounds
    if b.ge is not None:
        return b.ge - 1
    if b.gt is not None:
        return b.gt
    if b.lt is not None:
        return b.lt
    if b.le is not None:
        return b.le + 1
    if spec.choices is not None:
        return "no-such-choice"
    if spec.types == (bool,):
        return "yes"
    if int in spec.types or float in spec.types:
        return "a lot"
    return None


@pytest.mark.parametrize("name", [s.name for s in specs()])
def test_every_declared_range_is_enforced_at_construction_with_one_wording(name: str) -> None:
    cls = model_class(name)
    assert cls.__init__.__code__.co_filename == "<string>"  # generated from the declared fields
    model = cls()
    checked = 0
    for field, spec in param_specs(cls).items():
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default  # JSON-friendly
        assert default == getattr(model, field)
        bad = _bad_value(spec)
        if bad is None:
            continue
        with pytest.raises(CfrecError) as info:
            cls(**{field: bad})
        message = str(info.value)
        assert WORDING.match(message) and message.startswith(f"{cls.__name__} {field} must be "), message
        checked += 1
    assert checked >= 1


def test_set_params_is_checked_and_changes_nothing_on_an_error() -> None:
    model = make_model("als")
    with pytest.raises(CfrecError, match=r"^ALS reg must be a finite number >= 0, got -1$"):
        model.set_params(n_factors=4, reg=-1)
    assert model.n_factors == 10 and model.reg == 0.04
    assert model.set_params(n_factors=4).n_factors == 4


def test_fit_checks_attributes_assigned_directly(tmp_path) -> None:
    from cfrec.testing import make_ratings

    model = make_model("baseline")
    model.iterations = 0
    with pytest.raises(CfrecError, match="Baseline iterations must be a whole number >= 1, got 0"):
        model.fit(make_ratings(n_users=10, n_items=8, per_user=3))


def test_rules_between_fields_use_the_same_wording() -> None:
    with pytest.raises(CfrecError, match=r"^BayesianMF burn_in must be < n_sweeps \(10\), got 10$"):
        make_model("bmf", n_sweeps=10, burn_in=10)
    with pytest.raises(CfrecError, match=r"^ALS reg_const must be > 0 when reg is 0"):
        make_model("als", reg=0.0, reg_const=0.0)


def test_command_line_text_is_typed_then_checked() -> None:
    als = model_class("als")
    assert parse_param_assignments(als, ["reg=0.5", "solver=exact"]) == {"reg": 0.5, "solver": "exact"}
    for text, message in (("reg=-1", "ALS reg must be a finite number >= 0, got -1.0"),
                          ("reg=abc", "ALS reg must be a finite number >= 0, got 'abc'"),
                          ("solver=magic", "ALS solver must be one of 'cg', 'exact', got 'magic'"),
                          ("threads=0", "ALS threads must be None or a whole number >= 1 and <= 1024, got 0")):
        with pytest.raises(CfrecError) as info:
            parse_param_assignments(als, [text])
        assert str(info.value) == message
    check_value(als, "threads", None)


@pytest.mark.parametrize("name", ["als", "ials", "bpr", "mf", "svdpp"])
def test_the_runtime_group_is_declared_once_and_listed_last(name: str) -> None:
    from cfrec.models.params import Runtime

    cls = model_class(name)
    assert issubclass(cls, Runtime)
    assert list(param_specs(cls))[-3:] == ["device", "threads", "seed"]
    assert {n: param_specs(cls)[n].bounds for n in ("threads", "seed")} == {
        n: param_specs(Runtime)[n].bounds for n in ("threads", "seed")}
    with pytest.raises(CfrecError, match=rf"^{cls.__name__} threads must be None or a whole number >= 1"):
        cls(threads=0)
