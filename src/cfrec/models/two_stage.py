"""Two-stage recommendations: retrieve candidates with a ranking model, order them with a rating
model (retrieve, then rank, as production recommenders do).

A rating model such as the lab's BiasedMF ranks badly on its own (its top predicted ratings are
obscure items few people rated: on ML-100K's folds it scores below most-popular on NDCG@10),
while a ranking model such as EASE or iALS finds what a user will rate but says nothing of how
much they will like it. :class:`TwoStage` combines them:

1. the **retriever** scores every item for the user; its ``candidates`` best unseen items are
   kept;
2. the **rater** predicts the user's rating of each candidate;
3. candidates are ordered by ``weight * z(retrieval score) + (1 - weight) * z(predicted
   rating)``, where ``z`` standardises each signal over the user's candidates (so the two are on
   one scale whatever the models): ``weight=0`` orders the candidates by predicted rating alone,
   ``weight=1`` keeps the retriever's order and only adds the predicted ratings.

``predict`` is the rater's, so a two-stage model predicts ratings and every recommendation
carries the rater's predicted rating. An unknown user gets the retriever's cold-start list
(popularity, for EASE and iALS).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, ModelFileError
from cfrec.models.base import EpochCallback, FoldedUser, Recommender
from cfrec.models.params import hyperparameters, param
from cfrec.ranking import top_k

_PARTS = ("retriever", "rater")


@hyperparameters
class TwoStage(Recommender):
    """Candidates from a ranking model, ordered with a rating model's predicted ratings.

    Parameters
    ----------
    retriever
        Registry spec of the ranking model that proposes candidates (``"ease"``, ``"ials"``,
        ``"ials:n_factors=32"`` ...).
    rater
        Registry spec of the rating model whose predicted ratings order them (``"mf"``,
        ``"mf-lab"`` for the course lab's recipe, ``"svdpp"`` ...).
    candidates
        How many of the retriever's best unseen items each user's list is drawn from.
    weight
        Share of the retrieval score in the final order, in ``[0, 1]`` (see the module
        docstring). The default was chosen by NDCG@10 on two random 20% validation carves of
        ML-100K's ``u1.base`` with EASE and BiasedMF (mean NDCG@10 with 100 candidates: 0.117 at
        weight 0, 0.268 at 0.5, 0.284 at 0.8, 0.286 at 0.9, 0.285 at 1; 50 or 200 candidates
        within 0.001 of 100).
    """

    name = "two-stage"

    retriever: str = "ease"
    rater: str = "mf"
    candidates: int = param(default=100, ge=1)
    weight: float = param(default=0.9, ge=0, le=1)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def from_parts(cls, retriever: Recommender, rater: Recommender, **params: Any) -> TwoStage:
        """A fitted two-stage model from two models already fitted on the same data (no refit).

        ``params`` set ``candidates`` and ``weight``; the stages' registry names are recorded.
        """
        for part in (retriever, rater):
            part._check_fitted()
        if retriever.user_map_ != rater.user_map_ or retriever.item_map_ != rater.item_map_:
            raise CfrecError("the two stages were fitted on different data (their vocabularies differ)")
        model = cls(retriever=retriever.name or type(retriever).__name__,
                    rater=rater.name or type(rater).__name__, **params)
        model._parts()  # checks the settings and that the rater predicts ratings
        for attr in ("user_map_", "item_map_", "seen_", "rating_scale_", "item_info_"):
            setattr(model, attr, getattr(rater, attr))
        model.fit_info_ = dict(getattr(rater, "fit_info_", {}))
        model.history_ = [dict(rec, phase="rater") for rec in getattr(rater, "history_", [])]
        model.retriever_, model.rater_ = retriever, rater
        model._adopt_rater()
        return model

    def _parts(self) -> tuple[Recommender, Recommender]:
        from cfrec.models.registry import make_model

        retriever, rater = make_model(str(self.retriever)), make_model(str(self.rater))
        if not rater.predicts_ratings:
            raise CfrecError(f"TwoStage rater {self.rater!r} does not predict ratings; choose a rating "
                             "model (mf, als, svdpp, neumf ...)")
        return retriever, rater

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        retriever, rater = self._parts()
        retriever.fit(train)
        rater.fit(train, valid, on_epoch=on_epoch)
        for part in (retriever, rater):  # both saw exactly the compacted training data
            assert part.user_map_ == self.user_map_ and part.item_map_ == self.item_map_
        self.retriever_, self.rater_ = retriever, rater
        self._adopt_rater()
        self.history_.extend(dict(rec, phase="rater") for rec in rater.history_)

    def _adopt_rater(self) -> None:
        """Predictions and their cold-start fallbacks are the rater's."""
        self.global_mean_ = self.rater_.global_mean_

    def _fallback_ratings(self, u_idx: np.ndarray, i_idx: np.ndarray) -> np.ndarray:
        return self.rater_._fallback_ratings(u_idx, i_idx)

    # ------------------------------------------------------------------ scoring
    def _blend(self, retrieval: np.ndarray, rated_users: np.ndarray | None,
               folded: FoldedUser | None) -> np.ndarray:
        """Final scores (n, n_items) from the retriever's scores of every item.

        Each row's ``candidates`` best unseen items get the blend of the module docstring; every
        other item (seen ones included) scores below all of them, in the retriever's order, so
        the ranking stays total (``exclude_seen=False`` and long lists work).
        """
        n, m = retrieval.shape
        unseen = retrieval.copy()
        if folded is not None and len(folded.seen):
            unseen[0, folded.seen] = -np.inf
        elif rated_users is not None:
            sub = self.seen_[rated_users]
            unseen[np.repeat(np.arange(n), np.diff(sub.indptr)), sub.indices] = -np.inf
        cand, cand_scores = top_k(unseen, int(self.candidates))
        ok = cand >= 0
        safe = np.maximum(cand, 0)
        if folded is not None:
            rater_user = (folded.state or {}).get("rater")
            ratings = (self.rater_._predict_folded_known(rater_user, safe.reshape(-1))
                       if rater_user is not None and rater_user.n_ratings
                       else self.rater_._cold_user_scores()[safe.reshape(-1)])
        else:
            assert rated_users is not None
            ratings = self.rater_._predict_known(np.repeat(rated_users, cand.shape[1]), safe.reshape(-1))
        ratings = ratings.reshape(cand.shape).astype(np.float64)
        w = float(self.weight)
        blended = w * _standardise(cand_scores.astype(np.float64), ok) + (1 - w) * _standardise(ratings, ok)
        floor = np.where(ok, blended, np.inf).min(axis=1, keepdims=True)
        floor = np.where(np.isfinite(floor), floor, 0.0)
        everything = np.isfinite(retrieval)
        out = (floor - 1.0 + np.tanh(_standardise(retrieval.astype(np.float64), everything))).astype(np.float32)
        out[~everything] = -np.inf
        rows = np.broadcast_to(np.arange(n)[:, None], cand.shape)
        out[rows[ok], cand[ok]] = blended[ok]
        return out

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Blended scores of each user's candidates, the retriever's order below them."""
        users = np.asarray(users, dtype=np.int64)
        return self._blend(self.retriever_.score_rows(users), users, None)

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        uniq, row = np.unique(np.asarray(users, dtype=np.int64), return_inverse=True)
        return self._score_users(uniq)[row, np.asarray(items, dtype=np.int64)]

    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.rater_._predict_known(users, items)

    def _cold_user_scores(self) -> np.ndarray:
        return self.retriever_._cold_user_scores()

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        state = user.state or {}
        retriever_user = state.get("retriever")
        n_items = len(self.item_map_)
        retrieval = (self.retriever_._score_folded(retriever_user, np.arange(n_items))
                     if retriever_user is not None and retriever_user.n_ratings
                     else self.retriever_._cold_user_scores())
        blended = self._blend(np.array(retrieval, dtype=np.float32)[None, :], None, user)[0]
        return blended[np.asarray(items, dtype=np.int64)]

    def _predict_folded_known(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        rater_user = (user.state or {}).get("rater")
        if not isinstance(rater_user, FoldedUser):
            raise CfrecError("this folded user was not made by this TwoStage model's fold_in")
        return self.rater_._predict_folded_known(rater_user, items)

    @property
    def personalised(self) -> bool:
        return True

    @property
    def score_label(self) -> str:
        """Blends, not ratings: the retriever's score and the rater's predicted rating, each
        standardised over the user's candidates, weighted ``weight`` : ``1 - weight``."""
        retriever = type(self.retriever_).__name__ if self.is_fitted else str(self.retriever)
        rater = type(self.rater_).__name__ if self.is_fitted else str(self.rater)
        return (f"blends of {retriever}'s retrieval score (weight {float(self.weight):g}) and {rater}'s "
                f"predicted rating (weight {1 - float(self.weight):g}), not ratings")

    @property
    def cold_start_label(self) -> str:
        """A new user's list is the retriever's (see :meth:`_cold_user_scores`)."""
        if not self.is_fitted:
            return f"the retriever's ({self.retriever}) new-user order"
        return f"{self.retriever_.cold_start_label} ({type(self.retriever_).__name__}'s new-user list)"

    @property
    def fallback_labels(self) -> dict[int, str]:
        """Predictions are the rater's, fallbacks included."""
        if not self.is_fitted:
            return super().fallback_labels
        return self.rater_.fallback_labels

    def item_embeddings(self) -> np.ndarray:
        """The rater's item vectors if it has any, else the retriever's."""
        return self._embeddings("item")

    def user_embeddings(self) -> np.ndarray:
        """The rater's user vectors if it has any, else the retriever's."""
        return self._embeddings("user")

    def _embeddings(self, side: str) -> np.ndarray:
        self._check_fitted()
        for part in (self.rater_, self.retriever_):
            try:
                emb = np.asarray(part.item_embeddings() if side == "item" else part.user_embeddings())
            except NotImplementedError:
                continue
            if emb.ndim == 2 and emb.shape[1]:
                return emb
        raise NotImplementedError(f"neither stage of this TwoStage model has {side} embeddings")

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """Fold the new user into both stages; the result ranks and predicts like a trained user."""
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        if not len(given.items):
            return self._empty_folded(given, 0)
        raw_items = self.item_map_.to_raw(given.items)
        parts = {"retriever": self.retriever_.fold_in(raw_items, given.ratings),
                 "rater": self.rater_.fold_in(raw_items, given.ratings, reg=reg)}
        return FoldedUser(0.0, np.zeros(0, dtype=np.float32), given.items.astype(np.int32), len(given.items),
                          state=parts, unknown_items=given.unknown, duplicate_items=given.duplicates)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for label, part in zip(_PARTS, (self.retriever_, self.rater_), strict=True):
            out.update({f"{label}.{k}": v for k, v in part._state().items()})
            out.update({f"{label}.__{k}": v for k, v in part._fallback_state().items()})
        return out

    def _extra_meta(self) -> dict[str, Any]:
        return {label: {"class": type(part).__name__, "module": type(part).__module__,
                        "params": part.get_params(), "global_mean": part.global_mean_,
                        "history": part.history_, "extra": part._extra_meta()}
                for label, part in zip(_PARTS, (self.retriever_, self.rater_), strict=True)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        from cfrec.models.registry import find_class

        parts = []
        for label in _PARTS:
            info = meta.get(label)
            if not isinstance(info, dict):
                raise ModelFileError(f"the {label} stage's metadata is missing")
            klass = find_class(str(info.get("class")), info.get("module"))
            if klass is None:
                raise ModelFileError(f"the {label} stage is a {info.get('class')}, not a registered model")
            part = klass(**info["params"])
            part.user_map_, part.item_map_ = self.user_map_, self.item_map_
            part.rating_scale_, part.seen_ = self.rating_scale_, self.seen_
            part.item_info_, part.fit_info_ = self.item_info_, {}
            part.global_mean_ = float(info["global_mean"])
            part.history_ = list(info.get("history", []))
            prefix = f"{label}."
            try:
                part._set_fallback_state({k[len(prefix) + 2:]: v for k, v in arrays.items()
                                          if k.startswith(prefix + "__")})
            except ModelFileError as exc:
                raise ModelFileError(f"the {label} stage: {exc}") from None
            own = {k[len(prefix):]: v for k, v in arrays.items()
                   if k.startswith(prefix) and not k.startswith(prefix + "__")}
            part._set_state(own, info.get("extra", {}))
            parts.append(part)
        self.retriever_, self.rater_ = parts
        self._adopt_rater()


def _standardise(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row, ``(v - mean) / std`` over the entries where ``ok`` (a constant row: zeros)."""
    count = np.maximum(ok.sum(axis=1, keepdims=True), 1)
    v = np.where(ok, values, 0.0)
    mean = v.sum(axis=1, keepdims=True) / count
    var = (np.where(ok, (values - mean) ** 2, 0.0)).sum(axis=1, keepdims=True) / count
    std = np.sqrt(var)
    return np.where(ok, (values - mean) / np.where(std > 0, std, 1.0), 0.0)
