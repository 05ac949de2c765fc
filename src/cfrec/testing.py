"""The contract every cfrec model honours, as an importable test suite (pytest).

To put a model under contract (a built-in one, or your own registered with
:func:`cfrec.models.register_model`), subclass :class:`RecommenderContract` in a test module with
a ``make_model`` returning a small, fast, seeded instance (and ``has_factors = False`` for a
model without item embeddings)::

    from cfrec.testing import RecommenderContract

    class TestMyModelContract(RecommenderContract):
        def make_model(self):
            return MyModel(n_factors=8, seed=0)

Each class fits its model once (a class-scoped fixture) on a small planted low-rank data set
(:func:`make_ratings`) with string user ids and integer item ids; tests must not mutate the
shared fitted model. Needs pytest (a development dependency, not one of cfrec's).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfrec.data import Interactions
from cfrec.data.split import random_split
from cfrec.errors import CfrecError, ModelFileError, NotFittedError
from cfrec.evaluation.online import fold_in_ridge, online_predictions
from cfrec.models.base import FoldedUser, Recommender
from cfrec.models.factor import BiasedRecommender
from cfrec.models.mf import BiasedMF
from cfrec.models.persistence import current_version
from cfrec.models.svdpp import SVDpp
from cfrec.ranking import Recs, RecsBatch

__all__ = ["RATING_SCALE", "RecommenderContract", "make_ratings"]

RATING_SCALE = (1.0, 5.0)

def make_ratings(n_users: int = 60, n_items: int = 40, per_user: int = 14, n_factors: int = 3,
                 noise: float = 0.3, seed: int = 0) -> Interactions:
    """Planted ``mu + b_u + b_i + p_u.q_i + noise`` ratings rounded to 1..5.

    Users are ``"u000"``-style strings, items integers from 100; every user rates
    ``per_user`` items (the popular ones more often) and every item gets rated.
    """
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.8, (n_users, n_factors))
    q = rng.normal(0, 0.8, (n_items, n_factors))
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.5, n_items)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.5
    rows: list[tuple[str, int, float, int]] = []
    for u in range(n_users):
        items = rng.choice(n_items, per_user, replace=False, p=pop / pop.sum())
        for i in items:
            r = 3.5 + bu[u] + bi[i] + p[u] @ q[i] + rng.normal(0, noise)
            rows.append((f"u{u:03d}", 100 + int(i), float(np.clip(np.rint(r), 1, 5)), 1_000 * len(rows)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    missing = sorted(set(range(100, 100 + n_items)) - set(df["item_id"]))
    if missing:
        extra = pd.DataFrame([("u000", i, 3.0, 0) for i in missing], columns=df.columns)
        df = pd.concat([df, extra], ignore_index=True)
    df["item_id"] = df["item_id"].astype(np.int64)
    return Interactions.from_frame(df, rating_scale=RATING_SCALE, name="planted")


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, dtype=np.float64) - b) ** 2)))


class RecommenderContract:
    """Behaviour shared by every model; subclasses provide :meth:`make_model`."""

    #: False for models without item embeddings (similar_items then raises CfrecError).
    has_factors: bool = True

    def make_model(self) -> Recommender:
        """A small, fast, seeded, unfitted instance of the model under contract."""
        raise NotImplementedError

    def make_log_model(self) -> Recommender:
        """The model as configured for interaction logs (a model that fits logs only in some
        configurations, as item-kNN with cosine similarities, returns that one)."""
        return self.make_model()

    def fallback_source(self, fitted: Recommender) -> Recommender:
        """The model whose biases give ``fitted``'s cold-start fallbacks (itself, unless it
        delegates them, as TwoStage does to its rater)."""
        return fitted

    @pytest.fixture(scope="class")
    @classmethod
    def planted(cls) -> Interactions:
        return make_ratings()

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, planted: Interactions) -> Recommender:
        model = cls().make_model()
        assert model.fit(planted) is model
        return model

    # ------------------------------------------------------------------ fitting
    def test_fit_sets_learned_attributes(self, fitted: Recommender, planted: Interactions) -> None:
        assert fitted.is_fitted
        n_u, n_i = len(fitted.user_map_), len(fitted.item_map_)
        assert (n_u, n_i) == (60, 40)
        assert fitted.global_mean_ == pytest.approx(float(planted.ratings.mean()), abs=0.5)
        if isinstance(fitted, BiasedRecommender):
            assert fitted.user_bias_.dtype == np.float32 and fitted.user_bias_.shape == (n_u,)
            assert fitted.item_bias_.dtype == np.float32 and fitted.item_bias_.shape == (n_i,)
        assert fitted.seen_.shape == (n_u, n_i) and fitted.seen_.nnz == len(planted)
        assert fitted.rating_scale_ == RATING_SCALE
        assert fitted.fit_info_["n_ratings"] == len(planted)
        assert isinstance(fitted.history_, list)

    def test_unfitted_model_raises_not_fitted(self) -> None:
        model = self.make_model()
        with pytest.raises(NotFittedError):
            model.predict(["u000"], [100])
        with pytest.raises(NotFittedError):
            model.recommend("u000")

    def test_fit_ignores_vocabulary_ids_without_ratings(self, planted: Interactions) -> None:
        part = planted.subset(planted.users != planted.user_map.to_index(np.array(["u005"]))[0])
        model = self.make_model().fit(part)
        assert "u005" not in set(model.user_map_.ids.tolist())
        pred = model.predict_detailed(["u005"], [100])
        assert pred.fallback[0] == 1  # unknown user

    # ------------------------------------------------------------------ prediction
    def test_predict_raw_ids_within_scale_and_better_than_mean(self, fitted: Recommender,
                                                                planted: Interactions) -> None:
        pred = fitted.predict(planted.raw_users(), planted.raw_items())
        assert pred.dtype == np.float32 and pred.shape == (len(planted),)
        assert pred.min() >= RATING_SCALE[0] and pred.max() <= RATING_SCALE[1]
        if fitted.predicts_ratings:
            assert _rmse(pred, planted.ratings) < _rmse(np.full(len(planted), planted.ratings.mean()),
                                                        planted.ratings)
        else:  # preferences mapped onto the scale, not ratings: rated pairs outscore random pairs
            rng = np.random.default_rng(0)
            other = fitted.predict(planted.raw_users(), rng.choice(fitted.item_map_.ids, len(planted)))
            assert pred.mean() > other.mean()

    def test_predict_matches_known_scores_clipped(self, fitted: Recommender, planted: Interactions) -> None:
        u = planted.user_map.to_raw(planted.users[:50])
        i = planted.item_map.to_raw(planted.items[:50])
        raw = fitted._predict_known(fitted.user_map_.to_index(u), fitted.item_map_.to_index(i))
        np.testing.assert_allclose(fitted.predict(u, i), np.clip(raw, *RATING_SCALE), rtol=1e-6)

    def test_predict_scalar_user_broadcasts(self, fitted: Recommender) -> None:
        items = [100, 101, 102]
        np.testing.assert_array_equal(fitted.predict("u001", items), fitted.predict(["u001"] * 3, items))
        with pytest.raises(ValueError, match="differ in length"):
            fitted.predict(["u001", "u002"], items)

    def test_unknown_ids_fall_back_to_biases(self, fitted: Recommender) -> None:
        """``mu + b_i`` for an unknown user, ``mu + b_u`` for an unknown item, ``mu`` for both; a
        model without a bias adds nothing for it. A ranking-only model shows an unknown user the
        item's popularity on the scale and an unknown item the bottom of the scale."""
        source = self.fallback_source(fitted)
        mu = source.global_mean_
        u_idx = fitted.user_map_.to_index(np.array(["u003"]))[0]
        i_idx = fitted.item_map_.to_index(np.array([105]))[0]
        b_u = getattr(source, "user_bias_", np.zeros(len(fitted.user_map_)))
        b_i = getattr(source, "item_bias_", np.zeros(len(fitted.item_map_)))
        pred = fitted.predict_detailed(["nobody", "u003", "nobody", "u003"], [105, 99999, 99999, 105])
        from cfrec.models.base import popularity_scores
        from cfrec.models.ranking_only import RankingRecommender, linear_to_scale

        if isinstance(source, RankingRecommender):  # preferences: popularity, and nothing below an unknown item
            pop = popularity_scores(source.seen_, len(source.item_map_))[i_idx]
            lo = source.rating_scale_[0]
            expected = np.array([float(linear_to_scale(np.array([pop]), source.rating_scale_)[0]), lo, lo])
            known = fitted.predict("u003", fitted.item_map_.ids)
            assert pred.ratings[1] <= known.min()  # an unknown item never outscores a known one
        else:
            expected = np.clip([mu + b_i[i_idx], mu + b_u[u_idx], mu], *RATING_SCALE)
        np.testing.assert_allclose(pred.ratings[:3], expected, rtol=1e-6)
        assert set(fitted.fallback_labels) == {0, 1, 2, 3}
        assert pred.fallback.tolist() == [1, 2, 3, 0]
        assert pred.counts() == {"personalised": 1, "unknown_user": 1, "unknown_item": 1, "unknown_both": 1}

    # ------------------------------------------------------------------ recommend
    def _scores(self, fitted: Recommender, user: str, items: np.ndarray) -> np.ndarray:
        u = fitted.user_map_.to_index(np.full(len(items), user, dtype=object))
        return fitted._score_pairs(u.astype(np.int64), fitted.item_map_.to_index(items).astype(np.int64))

    def test_recommend_one_user_excludes_seen_and_is_sorted(self, fitted: Recommender,
                                                            planted: Interactions) -> None:
        recs = fitted.recommend("u002", k=8)
        assert isinstance(recs, Recs)
        seen = set(planted.to_frame().query("user_id == 'u002'")["item_id"])
        assert len(recs.ids) == 8 and not seen & set(recs.ids.tolist())
        assert np.all(np.diff(recs.scores) <= 0)
        # scores are the model's own, unclipped; predicted ratings ride along for rating models
        np.testing.assert_allclose(recs.scores, self._scores(fitted, "u002", recs.ids), rtol=1e-5, atol=1e-6)
        if fitted.predicts_ratings:
            assert recs.ratings is not None
            np.testing.assert_allclose(recs.ratings, fitted.predict("u002", recs.ids), rtol=1e-6)
        else:
            assert recs.ratings is None
        # the best unseen item really is the best: no unseen item scores higher
        unseen = np.array(sorted(set(range(100, 140)) - seen))
        assert recs.scores[0] == pytest.approx(self._scores(fitted, "u002", unseen).max(), rel=1e-5)

    def test_recommend_many_users_excludes_seen(self, fitted: Recommender, planted: Interactions) -> None:
        frame = planted.to_frame()
        users = np.array(["u000", "u010", "u020", "nobody"], dtype=object)
        recs = fitted.recommend(users, k=5)
        assert isinstance(recs, RecsBatch) and len(recs) == 4 and recs.ids.shape == (4, 5)
        for row, (user, rec) in enumerate(zip(users, recs, strict=True)):
            seen = set(frame.loc[frame["user_id"] == user, "item_id"])
            assert len(rec.ids) == 5 and not seen & set(rec.ids.tolist())
            np.testing.assert_array_equal(rec.ids, recs.ids[row])
            np.testing.assert_array_equal(rec.ids, fitted.recommend(user, k=5).ids)
        # the unknown user gets the model's cold-user list
        top = np.argsort(-fitted._cold_user_scores(), kind="stable")[:5]
        assert set(recs[3].ids.tolist()) == set(fitted.item_map_.to_raw(top).tolist())
        long = recs.to_frame()
        assert len(long) == 20 and long["rank"].tolist()[:5] == [1, 2, 3, 4, 5]

    def test_recommend_exclude_seen_false_and_candidates(self, fitted: Recommender,
                                                         planted: Interactions) -> None:
        all_items = fitted.recommend("u002", k=40, exclude_seen=False)
        assert sorted(all_items.ids.tolist()) == list(range(100, 140))
        cands = fitted.recommend("u002", k=10, exclude_seen=False, candidates=[101, 103, 99999])
        assert sorted(cands.ids.tolist()) == [101, 103]
        with pytest.raises(CfrecError, match="positive integer"):
            fitted.recommend("u002", k=0)

    def test_recommend_folded_user(self, fitted: Recommender) -> None:
        folded = fitted.fold_in([100, 101, 102, 103], [5, 5, 1, 1])
        assert isinstance(folded, FoldedUser) and folded.n_ratings == 4
        recs = fitted.recommend(folded, k=10)
        assert len(recs.ids) == 10 and not {100, 101, 102, 103} & set(recs.ids.tolist())
        np.testing.assert_allclose(recs.scores, fitted._score_folded(folded, fitted.item_map_.to_index(recs.ids)),
                                   rtol=1e-5, atol=1e-6)
        if fitted.predicts_ratings:
            assert recs.ratings is not None
            np.testing.assert_allclose(recs.ratings, fitted.predict(folded, recs.ids), rtol=1e-6)

    # ------------------------------------------------------------------ fold-in input
    def test_fold_in_checks_ratings_and_reports_dropped_items(self, fitted: Recommender) -> None:
        for bad in ([9.0], [-3.0], [0.0], [5.5], [float("nan")]):
            with pytest.raises(CfrecError, match="rating scale|outside"):
                fitted.fold_in([100], bad)
        folded = fitted.fold_in([100, 424242, 101, 100], [5, 4, 2, 3])
        assert folded.unknown_items == (424242,) and folded.duplicate_items == (100,)
        assert folded.n_ratings == 2 and sorted(fitted.item_map_.to_raw(folded.seen).tolist()) == [100, 101]
        same = fitted.fold_in([101, 100], [2, 3])  # the duplicate kept its last rating
        np.testing.assert_allclose(fitted.predict(folded, [102, 103]), fitted.predict(same, [102, 103]),
                                   rtol=1e-5, atol=1e-6)

    def test_fold_in_without_known_items_gets_the_cold_start_list(self, fitted: Recommender) -> None:
        for items, ratings in (([], []), ([424242], [4.0])):
            empty = fitted.fold_in(items, ratings)
            assert empty.n_ratings == 0
            recs = fitted.recommend(empty, k=5)
            np.testing.assert_array_equal(recs.ids, fitted.recommend("nobody", k=5).ids)
            np.testing.assert_array_equal(fitted.predict(empty, [100, 101]), fitted.predict("nobody", [100, 101]))

    def test_online_fast_path_equals_replay(self, fitted: Recommender, planted: Interactions) -> None:
        """Where a model declares its fold-in as a ridge, the vectorised online replay must give
        exactly what replaying every rating through its fold_in gives."""
        ridge = fold_in_ridge(fitted)
        if ridge is None or ridge.item_set_offset:
            return
        split = random_split(planted, 0.3, seed=1)
        model = self.make_model().fit(split.train)
        # a user's consecutive ratings share a timestamp: same-second groups of up to five
        test = dataclasses.replace(split.test, timestamps=split.test.timestamps // 5_000 * 5_000)
        for reveal in ("group", "rating"):
            fast = online_predictions(model, test, train=split.train, method="fast", reveal=reveal).predictions
            slow = online_predictions(model, test, train=split.train, method="replay", reveal=reveal).predictions
            np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)

    # ------------------------------------------------------------------ similar items
    def test_similar_items_excludes_query(self, fitted: Recommender) -> None:
        if not self.has_factors:
            with pytest.raises(CfrecError):
                fitted.similar_items(100)
            return
        sims = fitted.similar_items(100, k=5)
        assert len(sims.ids) == 5 and 100 not in sims.ids.tolist()
        assert np.all(np.diff(sims.scores) <= 1e-7) and np.all(np.abs(sims.scores) <= 1 + 1e-5)
        emb = fitted.item_embeddings()
        unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        q = fitted.item_map_.to_index(np.array([100]))[0]
        cos = unit @ unit[q]
        cos[q] = -np.inf
        assert fitted.item_map_.to_raw(np.array([np.argmax(cos)]))[0] == sims.ids[0]
        many = fitted.similar_items([100, 101], k=3)
        assert [q not in r.ids.tolist() for q, r in zip((100, 101), many, strict=True)] == [True, True]

    def test_factors_are_finite(self, fitted: Recommender) -> None:
        if isinstance(fitted, BiasedRecommender):
            assert np.isfinite(fitted.user_bias_).all() and np.isfinite(fitted.item_bias_).all()
        if self.has_factors:
            assert np.isfinite(fitted.item_embeddings()).all()
            assert np.isfinite(fitted.user_embeddings()).all()
            assert fitted.item_embeddings().shape[0] == len(fitted.item_map_)

    # ------------------------------------------------------------------ persistence
    def test_save_load_round_trip(self, fitted: Recommender, planted: Interactions, tmp_path: Path) -> None:
        path = fitted.save(tmp_path / "model")
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted)
        assert loaded.get_params() == fitted.get_params()
        u, i = planted.raw_users(), planted.raw_items()
        np.testing.assert_array_equal(loaded.predict(u, i), fitted.predict(u, i))
        users = np.array(["u000", "u007", "nobody"], dtype=object)
        for a, b in zip(loaded.recommend(users, k=7), fitted.recommend(users, k=7), strict=True):
            np.testing.assert_array_equal(a.ids, b.ids)
            np.testing.assert_array_equal(a.scores, b.scores)
        folded_a = loaded.fold_in([100, 104], [5, 2])
        folded_b = fitted.fold_in([100, 104], [5, 2])
        np.testing.assert_array_equal(loaded.predict(folded_a, [101, 102]), fitted.predict(folded_b, [101, 102]))
        if self.has_factors:
            np.testing.assert_array_equal(loaded.similar_items(100, k=4).ids, fitted.similar_items(100, k=4).ids)
        # loading through the model's own class works as well
        assert type(type(fitted).load(path)) is type(fitted)

    def test_corrupted_or_foreign_files_raise_model_file_error(self, fitted: Recommender,
                                                               tmp_path: Path) -> None:
        good = current_version(fitted.save(tmp_path / "good"))
        assert good is not None

        def copy(name: str) -> Path:  # the version's files, flat: the layout of older releases
            dst = tmp_path / name
            dst.mkdir()
            for f in good.iterdir():
                (dst / f.name).write_bytes(f.read_bytes())
            return dst

        intact = copy("intact")
        np.testing.assert_array_equal(Recommender.load(intact).predict(["u000"], [100]),
                                      fitted.predict(["u000"], [100]))

        truncated = copy("truncated")
        w = truncated / "weights.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
        garbage = copy("garbage")
        (garbage / "model.json").write_text("{not json", encoding="utf-8")
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        (foreign / "model.json").write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
        no_weights = copy("no_weights")
        (no_weights / "weights.safetensors").unlink()
        not_safetensors = copy("not_safetensors")
        (not_safetensors / "weights.safetensors").write_bytes(b"\x00" * 64)
        meta = json.loads((not_safetensors / "model.json").read_text(encoding="utf-8"))
        meta["weights_sha256"] = None  # defeat the checksum: the reader itself must cope
        (not_safetensors / "model.json").write_text(json.dumps(meta), encoding="utf-8")
        for bad in (truncated, garbage, foreign, no_weights, not_safetensors, tmp_path / "absent"):
            with pytest.raises(ModelFileError):
                Recommender.load(bad)

    def test_load_as_wrong_class_is_refused(self, fitted: Recommender, tmp_path: Path) -> None:
        path = fitted.save(tmp_path / "model")
        other = SVDpp if not isinstance(fitted, SVDpp) else BiasedMF
        with pytest.raises(ModelFileError, match="not a"):
            other.load(path)

    # ------------------------------------------------------------------ interaction logs
    def test_log_without_ratings(self, planted: Interactions, tmp_path: Path) -> None:
        """A ranking model fits on interactions with no ratings, recommends, folds a new user in
        from items alone and survives save/load; a rating model refuses the log in one line."""
        log = planted.as_implicit()
        assert log.is_implicit and log.weights is not None
        model = self.make_log_model()
        if model.predicts_ratings and not model.fits_interactions:
            with pytest.raises(CfrecError, match="predicts ratings.*ranking model"):
                model.fit(log)
            assert not model.is_fitted
            return
        assert model.fit(log) is model
        assert not model.predicts_ratings, "a model fitted on interactions ranks only"
        seen = set(log.subset(log.raw_users() == "u003").raw_items().tolist())
        recs = model.recommend("u003", k=8)
        assert len(recs.ids) == 8 and not seen & set(recs.ids.tolist())
        assert np.all(np.diff(recs.scores) <= 1e-6)
        folded = model.fold_in(items=[100, 101, 102, 424242])
        assert folded.n_ratings == 3 and folded.unknown_items == (424242,)
        liked = model.recommend(folded, k=8)
        assert len(liked.ids) == 8 and not {100, 101, 102} & set(liked.ids.tolist())
        loaded = Recommender.load(model.save(tmp_path / "log-model"))
        np.testing.assert_array_equal(loaded.recommend("u003", k=8).ids, recs.ids)
        np.testing.assert_array_equal(loaded.recommend(loaded.fold_in(items=[100, 101, 102]), k=8).ids,
                                      liked.ids)

    # ------------------------------------------------------------------ configuration
    def test_reproducible_with_fixed_seed(self, planted: Interactions, fitted: Recommender) -> None:
        again = self.make_model().fit(planted)
        u, i = planted.raw_users(), planted.raw_items()
        np.testing.assert_array_equal(again.predict(u, i), fitted.predict(u, i))

    def test_get_params_round_trip(self, fitted: Recommender) -> None:
        params = fitted.get_params()
        json.dumps(params)  # JSON-friendly
        clone = type(fitted)(**params)
        assert clone.get_params() == params
        assert repr(clone).startswith(type(fitted).__name__ + "(")
        with pytest.raises(ValueError, match="no hyperparameter"):
            clone.set_params(not_a_param=1)
