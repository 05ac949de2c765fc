"""Side features of users and items: a sparse (entity x feature) matrix with its two vocabularies.

A :class:`Features` holds what users or items *are* (genres, tags, age, occupation, release
year), apart from what they rated. Rows are entities (raw user or item ids, as the rating
vocabulary stores them), columns are named features (``"genre=Comedy"``, ``"age=25-34"``,
``"year"``). Values are float32: 1 for a categorical or multi-valued feature that is present, the
(scaled) number for a numeric one, a weight for a tag.

Models never look features up by raw id one at a time: :meth:`Features.align` gives the matrix
whose rows follow a model's own vocabulary (an entity without features gets an empty row), and
:meth:`Features.rows` gives the rows of entities that arrive after training (a new item).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from cfrec.data.idmap import IdMap

FeatureOwner = Literal["item", "user"]


@dataclass(frozen=True, eq=False)
class Features:
    """A sparse float32 matrix of features, one row per entity and one column per feature.

    Attributes
    ----------
    ids
        The entities (raw user or item ids) in row order.
    names
        The feature vocabulary (feature names as strings) in column order.
    matrix
        ``(len(ids), len(names))`` CSR, float32 values, int32 indices.
    owner
        ``"item"`` or ``"user"``: whose features these are (used in messages).
    source
        Where they came from (a file path or a release name), for messages and reports.
    """

    ids: IdMap
    names: IdMap
    matrix: sp.csr_array
    owner: FeatureOwner = "item"
    source: str = ""

    def __post_init__(self) -> None:
        matrix: Any = sp.csr_array(self.matrix).astype(np.float32)
        matrix.indices = matrix.indices.astype(np.int32, copy=False)
        if matrix.shape != (len(self.ids), len(self.names)):
            raise ValueError(f"{self.owner} features: a matrix of shape {matrix.shape} does not "
                             f"match {len(self.ids)} {self.owner}s x {len(self.names)} features")
        if matrix.nnz and not np.isfinite(matrix.data).all():
            raise ValueError(f"{self.owner} features from {self.source or 'memory'}: "
                             "values must be finite")
        matrix.sum_duplicates()
        object.__setattr__(self, "matrix", matrix)

    @property
    def n_features(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Features({self.owner}s={len(self.ids)}, features={len(self.names)}, "
                f"nnz={self.matrix.nnz}, source={self.source!r})")

    @classmethod
    def from_pairs(cls, entity_ids: Any, feature_names: Any, values: Any = None, *,
                   owner: FeatureOwner = "item", source: str = "") -> Features:
        """Features from long-form triples ``(entity, feature, value)``; ``values`` defaults to 1.
        Repeated pairs are summed (a tag applied twice weighs 2)."""
        ids, rows = IdMap.encode(np.asarray(entity_ids), what=owner)
        names, cols = IdMap.encode(np.asarray(feature_names, dtype=object).astype(str),
                                   what="feature")
        data = (np.ones(len(rows), dtype=np.float32) if values is None
                else np.asarray(values, dtype=np.float32))
        matrix = sp.csr_array((data, (rows, cols)), shape=(len(ids), len(names)))
        return cls(ids=ids, names=names, matrix=matrix, owner=owner, source=source)

    @classmethod
    def of_one(cls, entity: Any, features: Any, *, owner: FeatureOwner = "item") -> Features:
        """The features of one entity from what a caller gives: a mapping ``{name: value}``, an
        iterable of feature names (value 1), or a :class:`Features` holding its row."""
        if isinstance(features, Features):
            return cls(ids=IdMap([entity]), names=features.names, matrix=features.rows([entity]),
                       owner=owner, source=features.source)
        pairs = (list(features.items()) if isinstance(features, Mapping)
                 else [(f, 1.0) for f in ([features] if isinstance(features, str) else features or [])])
        try:
            values = np.asarray([float(v) for _, v in pairs], dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{owner} features must be feature names or a mapping of feature name to "
                             f"number, got {features!r}") from None
        if not np.isfinite(values).all():
            raise ValueError(f"{owner} feature values must be finite, got {features!r}")
        if pairs:
            return cls.from_pairs([entity] * len(pairs), [str(f) for f, _ in pairs], values, owner=owner)
        empty: Any = sp.csr_array((1, 0), dtype=np.float32)
        return cls(ids=IdMap([entity]), names=IdMap(np.array([], dtype=object)), matrix=empty, owner=owner)

    def in_columns(self, names: IdMap) -> tuple[sp.csr_array, list[str]]:
        """This matrix with its columns moved onto another feature vocabulary (a model's), and
        the feature names that vocabulary lacks (their columns are dropped)."""
        target = names.to_index(self.names.ids, missing="-1") if len(self.names) else np.zeros(0, np.int32)
        unknown = [str(n) for n in self.names.ids[target < 0]] if len(target) else []
        coo = self.matrix.tocoo()
        cols = target[coo.col] if len(target) else coo.col
        keep = cols >= 0
        out = sp.csr_array((coo.data[keep], (coo.row[keep], cols[keep])),
                           shape=(len(self.ids), len(names)))
        return out.astype(np.float32), unknown

    def align(self, vocab: IdMap) -> sp.csr_array:
        """The rows of the entities of ``vocab``, in its order; an entity without features gets
        an empty row. Columns stay this object's feature vocabulary."""
        return self.rows(vocab.ids)

    def rows(self, raw_ids: Any) -> sp.csr_array:
        """The feature rows of raw ids (one row each, empty for an id without features)."""
        idx = self.ids.to_index(np.atleast_1d(np.asarray(raw_ids)), missing="-1", what=self.owner)
        known = idx >= 0
        take = np.where(known, idx, 0)
        out = self.matrix[take] if len(self.ids) else sp.csr_array((len(idx), self.n_features),
                                                                   dtype=np.float32)
        if not known.all():
            out = sp.csr_array(sp.diags_array(known.astype(np.float32)) @ out)
            out.eliminate_zeros()
        result: sp.csr_array = sp.csr_array(out).astype(np.float32)
        return result

    def to_state(self, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The features as arrays (CSR parts) and JSON metadata (vocabularies) for a model folder."""
        arrays: dict[str, np.ndarray] = {f"{prefix}_indptr": np.asarray(self.matrix.indptr, dtype=np.int64),
                  f"{prefix}_indices": np.asarray(self.matrix.indices, dtype=np.int32),
                  f"{prefix}_data": np.asarray(self.matrix.data, dtype=np.float32)}
        meta: dict[str, Any] = {"ids": self.ids.to_list(), "names": self.names.to_list(), "owner": self.owner,
                "source": self.source}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any],
                   prefix: str) -> Features:
        """Inverse of :meth:`to_state`."""
        ids = IdMap.from_list(meta["ids"])
        names = IdMap.from_list(meta["names"])
        matrix = sp.csr_array((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"],
                               arrays[f"{prefix}_indptr"]), shape=(len(ids), len(names)))
        return cls(ids=ids, names=names, matrix=matrix, owner=meta.get("owner", "item"),
                   source=meta.get("source", ""))
