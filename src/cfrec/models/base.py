"""The model interface every cfrec recommender implements.

Conventions (scikit-learn / implicit): hyperparameters are keyword arguments of ``__init__``,
stored verbatim; learned state lives in attributes ending in ``_``; ``fit`` returns ``self``.
Raw ids go in and out of every public method; the id vocabulary is kept with the model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Self, overload

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cfrec._io import to_jsonable
from cfrec._version import __version__
from cfrec.data.idmap import IdMap
from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, ModelFileError, NotFittedError

logger = logging.getLogger(__name__)

FORMAT_NAME = "cfrec-model"
FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
ITEMS_FILE = "items.json"

#: Fallback codes returned by :meth:`Recommender.predict_detailed`.
KNOWN, UNKNOWN_USER, UNKNOWN_ITEM, UNKNOWN_BOTH = 0, 1, 2, 3

EpochCallback = Callable[[dict[str, Any]], None]
#: A raw user or item id as it appears in the data (MovieLens ids are ints; any string works).
RawId = int | str | np.integer


class Recs(NamedTuple):
    """Recommendations or neighbours for one query: raw ids with descending scores."""

    ids: np.ndarray
    scores: np.ndarray


class Prediction(NamedTuple):
    """Predicted ratings plus, per pair, which fallback produced them (0 = personalised)."""

    ratings: np.ndarray
    fallback: np.ndarray

    def counts(self) -> dict[str, int]:
        f = self.fallback
        return {
            "personalised": int((f == KNOWN).sum()),
            "unknown_user": int((f == UNKNOWN_USER).sum()),
            "unknown_item": int((f == UNKNOWN_ITEM).sum()),
            "unknown_both": int((f == UNKNOWN_BOTH).sum()),
        }


@dataclass(frozen=True)
class FoldedUser:
    """A user not seen in training, represented against the fixed item side of a fitted model.

    Made by :meth:`Recommender.fold_in`; accepted by ``predict`` and ``recommend`` in place of a
    raw user id.
    """

    bias: float
    factors: np.ndarray  # (n_factors,) float32; empty for bias-only models
    seen: np.ndarray  # model item indices the user rated (excluded from recommendations)
    n_ratings: int
    state: Any = None  # model-specific extras (e.g. a network embedding)


class Recommender(ABC):
    """Base class of every cfrec model: ``fit``, ``predict``, ``recommend``, ``similar_items``,
    ``fold_in``, ``save`` and ``load``.

    Subclasses implement :meth:`_fit`, :meth:`_predict_known` and, where it differs from the
    generic version, :meth:`_score_users`. The base class handles id vocabularies, cold-start
    fallbacks (``mu + b_i`` for an unknown user, ``mu + b_u`` for an unknown item, ``mu`` for
    both), clipping to the rating scale, top-k selection and persistence.

    Attributes
    ----------
    user_map_, item_map_
        Vocabularies of the raw ids seen in training.
    global_mean_
        Mean training rating, or the learned global bias of models that learn one (the lab's
        BiasedMF recipe); the cold-start fallbacks build on it.
    user_bias_, item_bias_
        Regularised biases (float32), used for cold-start fallbacks.
    rating_scale_
        ``(low, high)`` of the training data; predictions are clipped to it.
    seen_
        Binary users x items CSR matrix of training ratings (excluded by ``recommend``).
    item_info_
        Item metadata (title, year, genres) indexed by raw id, when the training data had it.
    fit_info_
        Dataset name, fingerprint, sizes and fit seconds.
    history_
        Per-epoch records (``epoch``, ``train_loss``, ``valid_rmse``, ``seconds``) for iterative models.
    """

    #: Short name used by the registry and the CLI (``mf``, ``als`` ...).
    name: ClassVar[str] = ""

    # learned state (set by fit or load)
    user_map_: IdMap
    item_map_: IdMap
    global_mean_: float
    rating_scale_: tuple[float, float]
    user_bias_: np.ndarray
    item_bias_: np.ndarray
    seen_: sp.csr_array
    item_info_: pd.DataFrame | None
    fit_info_: dict[str, Any]
    history_: list[dict[str, Any]]

    # ------------------------------------------------------------------ configuration
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__`` (JSON-friendly)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise ValueError(f"{type(self).__name__} has no hyperparameter {key!r}; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        train: Interactions,
        valid: Interactions | None = None,
        *,
        on_epoch: EpochCallback | None = None,
    ) -> Self:
        """Learn from ``train``; ``valid`` (optional) drives early stopping in iterative models.

        Validation ratings whose user or item is not in ``train`` are ignored.
        """
        if len(train) == 0:
            raise CfrecError("cannot fit on an empty training set")
        start = time.perf_counter()
        data = train.compact()
        self.user_map_ = data.user_map
        self.item_map_ = data.item_map
        lo, hi = train.rating_scale
        self.rating_scale_ = (float(lo), float(hi))
        self.global_mean_ = float(np.mean(data.ratings, dtype=np.float64))
        self.seen_ = data.to_csr(binary=True, dtype=np.float32)
        self.item_info_ = _item_info_for(data)
        self.history_: list[dict[str, Any]] = []
        valid_data = None
        if valid is not None and len(valid):
            valid_data = valid.with_vocab(self.user_map_, self.item_map_, drop_unknown=True)
        self._fit(data, valid_data, on_epoch)
        self.fit_info_ = {
            "dataset": train.name,
            "fingerprint": train.fingerprint(),
            "n_ratings": len(data),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "fit_seconds": time.perf_counter() - start,
        }
        logger.info("%s fitted on %d ratings in %.2fs", type(self).__name__, len(data),
                    self.fit_info_["fit_seconds"])
        return self

    @abstractmethod
    def _fit(self, train: Interactions, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        """Model-specific training on compacted data (indices = model indices).

        Must set ``user_bias_`` and ``item_bias_`` (float32) besides the model's own state.
        """

    @property
    def predicts_ratings(self) -> bool:
        """Whether ``predict`` estimates ratings (False for ranking-only models such as
        popularity or implicit-feedback NeuMF, whose RMSE is then not meaningful)."""
        return True

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "user_map_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit() or load()")

    # ------------------------------------------------------------------ scoring hooks
    @abstractmethod
    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Unclipped scores for known model indices (equal-length int arrays)."""

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Unclipped scores of every item for each user index: shape (len(users), n_items)."""
        n_items = len(self.item_map_)
        uu = np.repeat(users, n_items)
        ii = np.tile(np.arange(n_items, dtype=np.int64), len(users))
        return self._predict_known(uu, ii).reshape(len(users), n_items)

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Unclipped scores of item indices for a folded-in user."""
        factors = self.item_embeddings()
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + factors[items] @ user.factors
        return score.astype(np.float32)

    def _clip(self, scores: np.ndarray) -> np.ndarray:
        lo, hi = self.rating_scale_
        return np.clip(scores, lo, hi).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ prediction
    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings for raw (user, item) pairs, clipped to the rating scale.

        ``users`` may be one raw id or :class:`FoldedUser` (broadcast over ``items``) or an array
        as long as ``items``. Unknown ids never fail: see :meth:`predict_detailed`.
        """
        return self.predict_detailed(users, items).ratings

    def predict_detailed(self, users: Any, items: Any) -> Prediction:
        """Like :meth:`predict`, also reporting which pairs fell back to biases.

        Unknown user -> ``mu + b_i``; unknown item -> ``mu + b_u``; both -> ``mu``.
        """
        self._check_fitted()
        items_arr = np.atleast_1d(np.asarray(items))
        i_idx = self.item_map_.to_index(items_arr, missing="-1").astype(np.int64)
        if isinstance(users, FoldedUser):
            return self._predict_folded(users, i_idx)
        users_arr = np.asarray(users)
        if users_arr.ndim == 0:
            users_arr = np.full(len(items_arr), users_arr.item(), dtype=users_arr.dtype)
        if len(users_arr) != len(items_arr):
            raise ValueError(f"users ({len(users_arr)}) and items ({len(items_arr)}) differ in length")
        u_idx = self.user_map_.to_index(users_arr, missing="-1").astype(np.int64)
        return self._predict_indices(u_idx, i_idx)

    def _predict_indices(self, u_idx: np.ndarray, i_idx: np.ndarray) -> Prediction:
        """Predictions for model indices where -1 marks an unknown id (internal, vectorised)."""
        ku, ki = u_idx >= 0, i_idx >= 0
        out = np.full(len(u_idx), self.global_mean_, dtype=np.float32)
        both = ku & ki
        if both.any():
            out[both] = self._predict_known(u_idx[both], i_idx[both])
        only_i = ~ku & ki
        out[only_i] += self.item_bias_[i_idx[only_i]]
        only_u = ku & ~ki
        out[only_u] += self.user_bias_[u_idx[only_u]]
        fallback = np.where(both, KNOWN, np.where(only_i, UNKNOWN_USER,
                                                  np.where(only_u, UNKNOWN_ITEM, UNKNOWN_BOTH)))
        n_fb = int((~both).sum())
        if n_fb:
            logger.debug("%d of %d predictions used a cold-start fallback", n_fb, len(out))
        return Prediction(self._clip(out), fallback.astype(np.int8))

    def _predict_folded(self, user: FoldedUser, i_idx: np.ndarray) -> Prediction:
        known = i_idx >= 0
        out = np.full(len(i_idx), self.global_mean_ + user.bias, dtype=np.float32)
        if known.any():
            out[known] = self._score_folded(user, i_idx[known])
        fallback = np.where(known, KNOWN, UNKNOWN_ITEM).astype(np.int8)
        return Prediction(self._clip(out), fallback)

    # ------------------------------------------------------------------ ranking
    @overload
    def recommend(self, users: RawId | FoldedUser, k: int = ..., *, exclude_seen: bool = ...,
                  candidates: Any = ...) -> Recs: ...

    @overload
    def recommend(self, users: list[Any] | tuple[Any, ...] | np.ndarray, k: int = ..., *, exclude_seen: bool = ...,
                  candidates: Any = ...) -> list[Recs]: ...

    def recommend(
        self,
        users: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        candidates: Any = None,
    ) -> Recs | list[Recs]:
        """Top-``k`` items by predicted rating for one user (-> :class:`Recs`) or many (-> list).

        ``users`` are raw ids or a :class:`FoldedUser`. Items the user rated in training are
        excluded unless ``exclude_seen=False``. An unknown user gets the items with the highest
        ``mu + b_i`` (a bias-ranked popular list). ``candidates`` restricts the ranking to those
        raw item ids.
        """
        self._check_fitted()
        if k < 1:
            raise ValueError("k must be >= 1")
        cand_idx = None
        if candidates is not None:
            cand_idx = self.item_map_.to_index(np.atleast_1d(np.asarray(candidates)), missing="-1")
            cand_idx = np.unique(cand_idx[cand_idx >= 0]).astype(np.int64)
        if isinstance(users, FoldedUser):
            scores = self._score_folded(users, np.arange(len(self.item_map_)))[None, :]
            seen = [users.seen] if exclude_seen else None
            idx, top = self._top_k_from_scores(scores, k, seen, cand_idx)
            return self._to_recs(idx[0], top[0])
        users_arr = np.asarray(users)
        scalar = users_arr.ndim == 0
        u_idx = self.user_map_.to_index(np.atleast_1d(users_arr), missing="-1").astype(np.int64)
        idx, top = self.top_k(u_idx, k, exclude_seen=exclude_seen, candidates=cand_idx)
        recs = [self._to_recs(idx[r], top[r]) for r in range(len(u_idx))]
        return recs[0] if scalar else recs

    def top_k(
        self,
        u_idx: np.ndarray,
        k: int,
        *,
        exclude_seen: bool = True,
        candidates: np.ndarray | None = None,
        chunk: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k model item indices and scores for model user indices (-1 = unknown user).

        Returns arrays of shape (len(u_idx), k); slots without a candidate hold index -1 and
        score -inf. Used by ``recommend`` and by the evaluation protocols.
        """
        self._check_fitted()
        k = min(k, len(self.item_map_))
        out_idx = np.full((len(u_idx), k), -1, dtype=np.int64)
        out_score = np.full((len(u_idx), k), -np.inf, dtype=np.float32)
        seen_csr = self.seen_
        for start in range(0, len(u_idx), chunk):
            block = u_idx[start:start + chunk]
            scores = np.empty((len(block), len(self.item_map_)), dtype=np.float32)
            known = block >= 0
            if known.any():
                scores[known] = self._score_users(block[known])
            if (~known).any():
                scores[~known] = self._cold_user_scores()
            seen = None
            if exclude_seen:
                seen = [seen_csr.indices[seen_csr.indptr[u]:seen_csr.indptr[u + 1]] if u >= 0
                        else np.empty(0, dtype=np.int32) for u in block]
            idx, top = self._top_k_from_scores(scores, k, seen, candidates)
            out_idx[start:start + len(block)] = idx
            out_score[start:start + len(block)] = top
        return out_idx, out_score

    def _cold_user_scores(self) -> np.ndarray:
        """Item scores for a user unknown to the model: ``mu + b_i`` (a bias-ranked popular list)."""
        return (self.global_mean_ + self.item_bias_).astype(np.float32)

    def _top_k_from_scores(
        self,
        scores: np.ndarray,
        k: int,
        seen: list[np.ndarray] | None,
        candidates: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(scores, dtype=np.float32)
        if seen is not None:
            rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
            if len(rows):
                scores[rows, np.concatenate(seen)] = -np.inf
        if candidates is not None:
            mask = np.ones(scores.shape[1], dtype=bool)
            mask[candidates] = False
            scores[:, mask] = -np.inf
        k = min(k, scores.shape[1])
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1)
        top = np.take_along_axis(part_scores, order, axis=1)
        idx = np.where(np.isneginf(top), -1, idx)
        return idx, top

    def _to_recs(self, idx: np.ndarray, scores: np.ndarray) -> Recs:
        keep = idx >= 0
        return Recs(self.item_map_.to_raw(idx[keep]), self._clip(scores[keep]))

    # ------------------------------------------------------------------ embeddings
    def item_embeddings(self) -> np.ndarray:
        """Item vectors (n_items, n_factors) in model index order; used by ``similar_items`` and t-SNE."""
        self._check_fitted()
        raise NotImplementedError(f"{type(self).__name__} has no item embeddings")

    def user_embeddings(self) -> np.ndarray:
        self._check_fitted()
        raise NotImplementedError(f"{type(self).__name__} has no user embeddings")

    @overload
    def similar_items(self, items: RawId, k: int = ...) -> Recs: ...

    @overload
    def similar_items(self, items: list[Any] | tuple[Any, ...] | np.ndarray, k: int = ...) -> list[Recs]: ...

    def similar_items(self, items: Any, k: int = 10) -> Recs | list[Recs]:
        """The ``k`` items closest by cosine similarity of item embeddings (the query excluded).

        One raw id -> :class:`Recs`; an array of ids -> a list of them.
        """
        self._check_fitted()
        emb = self.item_embeddings().astype(np.float32)
        if emb.shape[1] == 0:
            raise CfrecError(f"{type(self).__name__} has no item embeddings to compare; use a factor model")
        norms = np.linalg.norm(emb, axis=1)
        unit = emb / np.maximum(norms, 1e-12)[:, None]
        arr = np.asarray(items)
        scalar = arr.ndim == 0
        idx = self.item_map_.to_index(np.atleast_1d(arr), what="item").astype(np.int64)
        sims = unit[idx] @ unit.T
        sims[np.arange(len(idx)), idx] = -np.inf
        sims[:, norms == 0] = -np.inf
        k = min(k, len(self.item_map_) - 1)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        out = []
        for r in range(len(idx)):
            top_i = part[r, order[r]]
            top_s = ps[r, order[r]]
            keep = np.isfinite(top_s)
            out.append(Recs(self.item_map_.to_raw(top_i[keep]), top_s[keep].astype(np.float32)))
        return out[0] if scalar else out

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any, *, reg: float | None = None) -> FoldedUser:
        """Represent a new user from a few ``(item, rating)`` pairs without retraining.

        Solves a small regularised least-squares problem for the user's bias and factor vector
        against the fixed item biases and factors. Unknown items are ignored.

        Parameters
        ----------
        items, ratings
            Raw item ids and the user's ratings of them (equal length).
        reg
            L2 strength; defaults to the model's ``fold_in_reg`` attribute or 0.1 x n_factors
            heuristics chosen per model.
        """
        self._check_fitted()
        idx, r = self._known_ratings(items, ratings)
        lam = self._fold_in_reg() if reg is None else float(reg)
        try:
            q = self.item_embeddings().astype(np.float64)[idx]
        except NotImplementedError:
            q = np.zeros((len(idx), 0))
        seen = np.unique(idx)
        offset = self._fold_in_offset(seen) if q.shape[1] else np.zeros(0)
        resid = r - self.global_mean_ - self.item_bias_[idx] - q @ offset
        # Unknowns: [b_u, p_u]. Bias regularised like the factors.
        x = np.hstack([np.ones((len(idx), 1)), q])
        a = x.T @ x + lam * np.eye(x.shape[1])
        sol = np.linalg.solve(a, x.T @ resid) if len(idx) else np.zeros(x.shape[1])
        return FoldedUser(float(sol[0]), (sol[1:] + offset).astype(np.float32), seen.astype(np.int32), len(idx))

    def _known_ratings(self, items: Any, ratings: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validate fold-in input; return model item indices and float64 ratings of known items."""
        items_arr = np.atleast_1d(np.asarray(items))
        r = np.atleast_1d(np.asarray(ratings, dtype=np.float64))
        if len(items_arr) != len(r):
            raise ValueError(f"items ({len(items_arr)}) and ratings ({len(r)}) differ in length")
        if not np.all(np.isfinite(r)):
            raise ValueError("fold-in ratings must be finite numbers")
        idx = self.item_map_.to_index(items_arr, missing="-1").astype(np.int64)
        keep = idx >= 0
        return idx[keep], r[keep]

    def _fold_in_offset(self, seen: np.ndarray) -> np.ndarray:
        """A fixed part of a new user's vector that depends only on which items they rated.

        Zero for plain factor models; SVD++ returns its implicit term ``|N|^-1/2 sum_j y_j``.
        """
        return np.zeros(self.item_embeddings().shape[1])

    def _fold_in_reg(self) -> float:
        return float(getattr(self, "fold_in_reg", None) or 1.0)

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        """Model-specific learned arrays to save (besides biases, vocabularies and seen items)."""
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`_state` saved (nothing for models without own arrays)."""
        return None

    def save(self, path: str | Path) -> Path:
        """Write the model to a folder: ``weights.safetensors`` + ``model.json`` (+ ``items.json``).

        The folder is written beside the target and renamed into place, so a crash never leaves
        a half-written model and an existing model is only replaced by a complete one.
        """
        from safetensors.numpy import save_file

        self._check_fitted()
        path = Path(path)
        arrays = {f"model.{k}": np.ascontiguousarray(v) for k, v in self._state().items()}
        arrays["base.user_bias"] = np.ascontiguousarray(self.user_bias_, dtype=np.float32)
        arrays["base.item_bias"] = np.ascontiguousarray(self.item_bias_, dtype=np.float32)
        arrays["base.seen_indptr"] = self.seen_.indptr.astype(np.int64)
        arrays["base.seen_indices"] = self.seen_.indices.astype(np.int32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            save_file(arrays, str(tmp / WEIGHTS_FILE))
            digest = _sha256(tmp / WEIGHTS_FILE)
            meta = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "cfrec_version": __version__,
                "model_class": type(self).__name__,
                "model_name": self.name,
                "params": to_jsonable(self.get_params()),
                "global_mean": self.global_mean_,
                "rating_scale": list(self.rating_scale_),
                "user_ids": self.user_map_.to_list(),
                "item_ids": self.item_map_.to_list(),
                "fit_info": to_jsonable(getattr(self, "fit_info_", {})),
                "history": to_jsonable(getattr(self, "history_", [])),
                "extra": to_jsonable(self._extra_meta()),
                "weights_sha256": digest,
            }
            _write_json(tmp / META_FILE, meta)
            if self.item_info_ is not None:
                _write_json(tmp / ITEMS_FILE, _items_to_json(self.item_info_))
            os.chmod(tmp, 0o755)
            if path.exists():
                if not (path / META_FILE).exists() and any(path.iterdir()):
                    raise ModelFileError(f"{path} exists and is not a cfrec model folder; refusing to replace it")
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    def _extra_meta(self) -> dict[str, Any]:
        """Model-specific JSON metadata to save."""
        return {}

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model folder written by :meth:`save` (no pickle: safetensors + JSON).

        Called on the base class it returns whatever model the folder holds; called on a
        subclass it also checks the folder holds that class.
        """
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from cfrec.models.registry import model_class

        path = Path(path)
        meta_path = path / META_FILE
        if not path.is_dir():
            raise ModelFileError(f"{path}: not a model folder (no such directory)")
        if not meta_path.is_file():
            raise ModelFileError(f"{path}: not a cfrec model folder (missing {META_FILE})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{meta_path}: corrupted metadata ({exc})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ModelFileError(f"{meta_path}: not written by cfrec (format field is not {FORMAT_NAME!r})")
        if int(meta.get("format_version", -1)) > FORMAT_VERSION:
            raise ModelFileError(f"{meta_path}: format version {meta.get('format_version')} is newer "
                                 f"than this cfrec ({__version__}) understands")
        try:
            klass = model_class(meta["model_class"])
        except (KeyError, CfrecError) as exc:
            raise ModelFileError(f"{meta_path}: unknown model class ({exc})") from None
        if cls is not Recommender and not issubclass(klass, cls):
            raise ModelFileError(f"{path} holds a {klass.__name__}, not a {cls.__name__}")
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelFileError(f"{path}: missing {WEIGHTS_FILE}")
        if meta.get("weights_sha256") and _sha256(weights) != meta["weights_sha256"]:
            raise ModelFileError(f"{weights}: checksum mismatch (file corrupted or truncated)")
        try:
            arrays = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"{weights}: unreadable weights ({exc})") from None
        try:
            model = klass(**meta["params"])
            model.user_map_ = IdMap.from_list(meta["user_ids"])
            model.item_map_ = IdMap.from_list(meta["item_ids"])
            model.global_mean_ = float(meta["global_mean"])
            lo, hi = meta["rating_scale"]
            model.rating_scale_ = (float(lo), float(hi))
            model.user_bias_ = arrays["base.user_bias"]
            model.item_bias_ = arrays["base.item_bias"]
            n_u, n_i = len(model.user_map_), len(model.item_map_)
            if len(model.user_bias_) != n_u or len(model.item_bias_) != n_i:
                raise ModelFileError(f"{path}: weights do not match the id vocabularies")
            indptr, indices = arrays["base.seen_indptr"], arrays["base.seen_indices"]
            model.seen_ = sp.csr_array((np.ones(len(indices), dtype=np.float32), indices, indptr),
                                       shape=(n_u, n_i))
            model.fit_info_ = meta.get("fit_info", {})
            model.history_ = meta.get("history", [])
            items_path = path / ITEMS_FILE
            model.item_info_ = (_items_from_json(json.loads(items_path.read_text(encoding="utf-8")))
                                if items_path.is_file() else None)
            own = {k.removeprefix("model."): v for k, v in arrays.items() if k.startswith("model.")}
            model._set_state(own, meta.get("extra", {}))
        except ModelFileError:
            raise
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path}: incomplete or inconsistent model files ({exc!r})") from None
        return model


class FactorRecommender(Recommender):
    """A model of the form ``r = mu + b_u + b_i + p_u . q_i`` with learned state in numpy arrays.

    Subclasses set ``user_factors_`` (n_users, k), ``item_factors_`` (n_items, k) and the biases
    in ``_fit``; scoring, ranking, fold-in and persistence come from here.
    """

    user_factors_: np.ndarray
    item_factors_: np.ndarray

    def _predict_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = self.global_mean_ + self.user_bias_[users] + self.item_bias_[items]
        if self.user_factors_.shape[1]:
            out = out + np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items])
        return out.astype(np.float32, copy=False)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        scores = self.user_factors_[users] @ self.item_factors_.T
        scores += self.item_bias_[None, :]
        scores += (self.global_mean_ + self.user_bias_[users])[:, None]
        return scores.astype(np.float32, copy=False)

    def item_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self.item_factors_

    def user_embeddings(self) -> np.ndarray:
        self._check_fitted()
        return self.user_factors_

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_.astype(np.float32),
                "item_factors": self.item_factors_.astype(np.float32)}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.user_factors_ = arrays["user_factors"]
        self.item_factors_ = arrays["item_factors"]
        if len(self.user_factors_) != len(self.user_map_) or len(self.item_factors_) != len(self.item_map_):
            raise ModelFileError("factor matrices do not match the id vocabularies")


# ---------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, allow_nan=False)
        fh.flush()
        os.fsync(fh.fileno())



def _item_info_for(data: Interactions) -> pd.DataFrame | None:
    info = data.item_info
    if info is None:
        return None
    cols = [c for c in ("title", "year", "genres") if c in info.columns]
    if not cols:
        return None
    return info.reindex(data.item_map.ids)[cols]


def _items_to_json(info: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"ids": to_jsonable(info.index.tolist())}
    for col in info.columns:
        values = []
        for v in info[col].tolist():
            if isinstance(v, np.ndarray):
                v = v.tolist()
            if v is pd.NA or v is pd.NaT or (isinstance(v, float) and not np.isfinite(v)):
                v = None
            values.append(to_jsonable(v))
        out[col] = values
    return out


def _items_from_json(obj: dict[str, Any]) -> pd.DataFrame:
    ids = obj.pop("ids")
    return pd.DataFrame(obj, index=pd.Index(ids, name="item_id"))
