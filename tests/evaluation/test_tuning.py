"""Hyperparameter search: typed parameters, search spaces, reproducibility, no test-part leakage."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions, Split, make_synthetic, random_split
from cfrec.errors import CfrecError, TrainingDiverged
from cfrec.evaluation.tuning import (
    PRESETS,
    Range,
    load_best_params,
    parse_space,
    preset_space,
    tune,
)
from cfrec.models import registry
from cfrec.models.baseline import Baseline
from tests.models.test_registry import Knobs

pytest.importorskip("optuna")


class Spy(Baseline):
    """Records what every fit saw; diverges when ``reg_user`` is above 100."""

    name = "spy"
    calls: list[dict] = []

    def _fit(self, train, valid, on_epoch):
        pairs = set(zip(train.raw_users().tolist(), train.raw_items().tolist(), strict=True))
        Spy.calls.append({"n": len(train), "pairs": pairs, "params": self.get_params()})
        if self.reg_user > 100:
            raise TrainingDiverged("spy", 1, 0.1, float("nan"))
        super()._fit(train, valid, on_epoch)


@pytest.fixture
def spy_registered():
    registry.register_model("spy")(Spy)
    Spy.calls = []
    yield Spy
    registry.unregister_model("spy")


@pytest.fixture(scope="module")
def split() -> Split:
    data = make_synthetic(120, 80, 4000, seed=3)
    return random_split(data, 0.2, seed=1)


# ---------------------------------------------------------------------- search spaces
def test_parse_space_lists_ranges_and_fixed_values():
    space, fixed = parse_space(Knobs, ["reg_user=1,2,5", "reg_item=0.1:10:log", "iterations=2:30",
                                       "optimizer=sgd"])
    assert space["reg_user"] == [1.0, 2.0, 5.0]
    assert space["reg_item"] == Range(0.1, 10.0, log=True, integer=False)
    assert space["iterations"] == Range(2, 30, log=False, integer=True)
    assert fixed == {"optimizer": "sgd"}


@pytest.mark.parametrize("spec", ["reg_user=5:1", "reg_user=0:1:log", "reg_user=1:2:lin", "reg_user=1,1"])
def test_parse_space_rejects_bad_specs(spec):
    with pytest.raises(CfrecError):
        parse_space(Knobs, [spec])


# ---------------------------------------------------------------------- search
def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["fit_seconds"])


def test_grid_covers_every_combination_and_is_reproducible(split):
    space = {"reg_user": [1.0, 10.0, 50.0], "reg_item": [2.0, 20.0]}
    first = tune(split, "baseline", space, seed=7)
    again = tune(split, "baseline", space, seed=7)
    assert first.sampler == "grid" and len(first.trials) == 6
    seen = set(zip(first.trials["reg_user"], first.trials["reg_item"], strict=True))
    assert seen == set(itertools.product(space["reg_user"], space["reg_item"]))
    pd.testing.assert_frame_equal(_comparable(first.trials), _comparable(again.trials))
    assert first.best_params == again.best_params


def test_best_trial_is_the_lowest_validation_rmse_and_is_refitted(split):
    result = tune(split, "baseline", {"reg_user": [0.5, 5.0, 100.0]}, seed=0)
    table = result.trials
    best = table.loc[table["valid_rmse"].idxmin()]
    assert result.best_trial == best["trial"]
    assert result.best_params["reg_user"] == best["reg_user"]
    assert result.best_params["reg_item"] == 5.0  # untouched default kept
    assert np.allclose(table["gap"], table["valid_rmse"] - table["train_rmse"])
    # refit on the whole train part, scored once on the test part
    model = Baseline(**result.best_params).fit(split.train)
    pred = model.predict(split.test.raw_users(), split.test.raw_items())
    expected = float(np.sqrt(np.mean((pred - split.test.ratings) ** 2)))
    assert result.test is not None and result.test["rmse"] == pytest.approx(expected, rel=1e-6)
    assert result.test["n"] == len(split.test)


def test_tpe_with_ranges_is_seeded_and_stays_in_range(split):
    space = {"reg_user": Range(0.1, 100.0, log=True), "iterations": Range(1, 10, integer=True)}
    a = tune(split, "baseline", space, n_trials=6, seed=3)
    b = tune(split, "baseline", space, n_trials=6, seed=3)
    c = tune(split, "baseline", space, n_trials=6, seed=4)
    assert a.sampler == "tpe" and len(a.trials) == 6
    pd.testing.assert_frame_equal(_comparable(a.trials), _comparable(b.trials))
    assert not np.allclose(a.trials["reg_user"], c.trials["reg_user"])
    assert a.trials["reg_user"].between(0.1, 100.0).all()
    assert a.trials["iterations"].between(1, 10).all()
    assert all(isinstance(v, int | np.integer) for v in a.trials["iterations"])


def test_grid_sampler_refuses_ranges(split):
    with pytest.raises(CfrecError, match="grid search needs value lists"):
        tune(split, "baseline", {"reg_user": Range(1, 10)}, sampler="grid")


def test_tuning_never_sees_the_test_part(split, spy_registered):
    n_train = len(split.train)
    result = tune(split, "spy", {"reg_user": [1.0, 5.0]}, seed=0, valid_fraction=0.25)
    test_pairs = set(zip(split.test.raw_users().tolist(), split.test.raw_items().tolist(), strict=True))
    *trial_calls, refit_call, defaults_call = spy_registered.calls
    assert len(trial_calls) == 2
    for call in trial_calls:
        assert call["n"] == n_train - round(0.25 * n_train)
        assert not call["pairs"] & test_pairs
    for call in (refit_call, defaults_call):  # the refit and the defaults use the whole train part ...
        assert call["n"] == n_train
        assert not call["pairs"] & test_pairs  # ... and still not the test part
    assert defaults_call["params"] == type(result.best_model)().get_params()
    assert result.test is not None
    assert result.test["tuned_loses_to_defaults"] == (result.test["tuned"] > result.test["defaults"])


def test_failed_trials_are_recorded_not_fatal(split, spy_registered):
    result = tune(split, "spy", {"reg_user": [500.0, 5.0]}, seed=0)
    failed = result.trials[result.trials["state"] == "fail"]
    assert list(failed["reg_user"]) == [500.0]
    assert "diverged" in failed["error"].iloc[0]
    assert np.isnan(failed["valid_rmse"].iloc[0])
    assert result.best_params["reg_user"] == 5.0
    with pytest.raises(CfrecError, match="all 1 trials failed"):
        tune(split, "spy", {"reg_user": [500.0]}, seed=0)


def test_interactions_without_test_part(split):
    result = tune(split.train, "baseline", {"reg_item": [1.0, 10.0]}, seed=0)
    assert result.test is None and len(result.trials) == 2


def test_fixed_and_searched_parameter_conflict(split):
    with pytest.raises(CfrecError, match="both fixed and searched"):
        tune(split, "baseline", {"reg_user": [1.0, 2.0]}, base_params={"reg_user": 3.0})
    with pytest.raises(CfrecError, match="no hyperparameter"):
        tune(split, "baseline", {"n_factors": [8, 16]})


# ---------------------------------------------------------------------- files
def test_results_files_round_trip(split, tmp_path):
    result = tune(split, "baseline", {"reg_user": [1.0, 5.0], "reg_item": [5.0, 25.0]}, seed=0)
    paths = result.save(tmp_path / "run")
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns[:3]) == ["trial", "reg_user", "reg_item"]
    assert len(csv) == 4 and np.allclose(csv["valid_rmse"], result.trials["valid_rmse"])
    obj = json.loads(paths["json"].read_text())
    assert obj["best_params"] == result.best_params and len(obj["trials"]) == 4
    assert obj["space"] == {"reg_user": [1.0, 5.0], "reg_item": [5.0, 25.0]}
    model, params = load_best_params(paths["best_params"])
    assert model == "baseline" and params == result.best_params
    assert not list((tmp_path / "run").glob(".*"))  # no temp files left behind


def test_best_params_json_omits_hardware(split, tmp_path):
    result = tune(split, "als", {"reg": [0.05, 0.1]}, seed=0,
                  base_params={"iterations": 2, "n_factors": 4, "device": "cpu"})
    saved = json.loads(result.save(tmp_path)["best_params"].read_text())
    assert "device" not in saved["params"] and saved["params"]["iterations"] == 2


def test_load_best_params_accepts_plain_objects_and_reports_bad_files(tmp_path):
    plain = tmp_path / "p.json"
    plain.write_text('{"reg_user": 2}')
    assert load_best_params(plain) == (None, {"reg_user": 2})
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CfrecError, match="not valid JSON"):
        load_best_params(bad)
    with pytest.raises(CfrecError, match="no such file"):
        load_best_params(tmp_path / "missing.json")


# ---------------------------------------------------------------------- lab presets
def test_lab_presets_match_the_course_exercises():
    assert PRESETS["lab-dim"].space == {"n_factors": [16, 32, 64, 128, 256]}
    assert PRESETS["lab-wd"].space == {"weight_decay": [0.0, 1e-5, 1e-4, 1e-3]}
    assert PRESETS["lab-dim"].split == PRESETS["lab-wd"].split == "temporal:0.2"
    mf = registry.model_class("mf")
    base, space = preset_space("lab-dim")
    assert "n_factors" not in base and space == {"n_factors": [16, 32, 64, 128, 256]}
    lab = mf.lab().get_params()
    assert all(lab[k] == v for k, v in base.items())


class NoneBest(Knobs):
    """``patience=None`` fits normally; any other value cripples the user biases."""

    name = "nonebest"

    def _fit(self, train, valid, on_epoch):
        super()._fit(train, valid, on_epoch)
        if self.patience is not None:
            self.user_bias_ = self.user_bias_ * 0 + 1.0


def test_none_values_survive_as_best_params(split):
    registry.register_model("nonebest")(NoneBest)
    try:
        result = tune(split, "nonebest", {"patience": [3, None], "reg_user": [1.0, 50.0]}, seed=0)
    finally:
        registry.unregister_model("nonebest")
    assert len(result.trials) == 4
    assert result.best_params["patience"] is None  # not NaN from the table's float column


def test_tuning_ranking_only_models_by_rmse_is_refused_and_by_ndcg_works() -> None:
    from cfrec.data import make_synthetic
    from cfrec.evaluation.tuning import tune

    data = make_synthetic(60, 40, 1200, seed=3)
    with pytest.raises(CfrecError, match="not ratings"):
        tune(data, "neumf", {"n_factors": [4]}, base_params={"mode": "implicit", "epochs": 1}, metric="rmse")
    result = tune(data, "ials", {"n_factors": [2, 4]}, base_params={"iterations": 2})  # NDCG@10 by default
    assert result.metric == "ndcg@10" and result.carve == "per-user"
    assert result.trials["valid_rmse"].isna().all() and result.trials["valid_ndcg@10"].between(0, 1).all()
    assert result.best_score == result.trials["valid_ndcg@10"].max()


def test_tuning_by_ndcg_is_reproducible_and_carves_per_user(split) -> None:
    space = {"reg_user": [1.0, 20.0], "reg_item": [1.0, 20.0]}
    first = tune(split, "baseline", space, metric="ndcg@5", seed=4, refit=False)
    again = tune(split, "baseline", space, metric="ndcg@5", seed=4, refit=False)
    pd.testing.assert_frame_equal(first.trials.drop(columns="fit_seconds"), again.trials.drop(columns="fit_seconds"))
    assert first.best_params == again.best_params and first.carve == "per-user"
    # a rating model tuned by a ranking metric still shows the lab's train/validation RMSE columns
    assert first.trials["valid_rmse"].notna().all() and "valid_ndcg@5" in first.trials
    best = first.trials.loc[first.trials["trial"] == first.best_trial, "valid_ndcg@5"].iloc[0]
    assert best == first.trials["valid_ndcg@5"].max() == first.best_score


def test_validation_carves_match_the_protocol(split) -> None:
    from cfrec.data.split import carve_validation

    train = split.train
    fit, valid = carve_validation(train, 0.2, 0, kind="per-user")
    assert valid is not None and len(fit) + len(valid) == len(train)
    per_user = np.bincount(valid.users, minlength=train.n_users)
    counts = train.user_counts()
    np.testing.assert_array_equal(per_user, np.minimum(np.floor(0.2 * counts + 0.5), np.maximum(counts - 1, 0)))
    fit, valid = carve_validation(train, 0.2, 0, kind="temporal")
    assert valid is not None and fit.timestamps.max() <= valid.timestamps.min()
    assert len(fit) + len(valid) == len(train)


def test_temporal_carve_keeps_same_second_groups_whole(split) -> None:
    """The temporal carve never puts some of a user's ratings of one second in the fit part and
    the others in the validation part (the online replay reveals such a group at once)."""
    from cfrec.data.split import carve_validation
    from cfrec.data.split.core import _n_test

    train = split.train
    # every user rates in hourly bursts, so the plain row cut would fall inside a group
    burst = Interactions(train.users, train.items, train.ratings, train.timestamps // 3600 * 3600,
                         train.user_map, train.item_map, train.rating_scale)
    sizes = pd.DataFrame({"u": burst.users, "t": burst.timestamps}).value_counts()
    moved = []
    for fraction in (0.1, 0.2, 0.3, 0.4):
        fit, valid = carve_validation(burst, fraction, 0, kind="temporal")
        assert valid is not None and fit.timestamps.max() <= valid.timestamps.min()
        fit_keys = set(zip(fit.users.tolist(), fit.timestamps.tolist(), strict=True))
        valid_keys = set(zip(valid.users.tolist(), valid.timestamps.tolist(), strict=True))
        assert not fit_keys & valid_keys
        # the cut moved back to the start of the group it fell in: by less than the largest group
        moved.append(len(valid) - _n_test(len(burst), fraction))
        assert 0 <= moved[-1] < sizes.max()
    assert max(moved) > 0  # the plain row cut would have split a group
    # all ratings in one second of one user: nothing to carve without splitting it
    one = Interactions(np.zeros(30, dtype=np.int32), np.arange(30, dtype=np.int32),
                       np.full(30, 3.0, dtype=np.float32), np.zeros(30, dtype=np.int64),
                       train.user_map, train.item_map, train.rating_scale)
    assert carve_validation(one, 0.2, 0, kind="temporal")[1] is None
    with pytest.raises(CfrecError, match="unknown validation carve"):
        carve_validation(train, 0.2, 0, kind="sideways")  # type: ignore[arg-type]
