"""Interactions: construction, conversions, derivations, fingerprint and memory use."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from cfrec.data import IdMap, Interactions
from cfrec.errors import DataError, UnknownIdError


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [10, 20, 20, 30, 10],
        "item_id": ["b", "a", "c", "b", "c"],
        "rating": [4.0, 3.0, 5.0, 1.0, 2.0],
        "timestamp": [100, 200, 300, 400, 500],
    })


@pytest.fixture
def data() -> Interactions:
    return Interactions.from_frame(frame(), rating_scale=(1, 5), name="small")


# ---------------------------------------------------------------------------------- construction
def test_from_frame_indexes_and_types(data: Interactions) -> None:
    assert len(data) == 5 and (data.n_users, data.n_items) == (3, 3)
    assert data.users.dtype == np.int32 and data.items.dtype == np.int32
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64
    np.testing.assert_array_equal(data.users, [0, 1, 1, 2, 0])
    np.testing.assert_array_equal(data.items, [1, 0, 2, 1, 2])
    assert data.rating_scale == (1.0, 5.0) and data.name == "small"
    pd.testing.assert_frame_equal(data.to_frame(), frame(), check_dtype=False)


def test_from_frame_defaults_and_custom_columns() -> None:
    df = frame().rename(columns={"user_id": "u", "rating": "stars"}).drop(columns="timestamp")
    d = Interactions.from_frame(df, user_col="u", rating_col="stars")
    assert d.rating_scale == (1.0, 5.0)  # observed min and max
    np.testing.assert_array_equal(d.timestamps, np.zeros(5, dtype=np.int64))
    with pytest.raises(DataError, match="field 'rating'"):
        Interactions.from_frame(df, user_col="u")


def test_from_frame_with_given_vocabularies() -> None:
    umap, imap = IdMap([10, 20, 30, 40]), IdMap(["a", "b", "c", "d"])
    d = Interactions.from_frame(frame(), user_map=umap, item_map=imap)
    assert d.user_map is umap and d.n_users == 4 and d.n_items == 4
    with pytest.raises(UnknownIdError, match="unknown user id 30"):
        Interactions.from_frame(frame(), user_map=IdMap([10, 20]), item_map=imap)


def test_post_init_checks_lengths_and_dtypes(data: Interactions) -> None:
    with pytest.raises(ValueError, match="items has 4 entries"):
        Interactions(data.users, data.items[:4], data.ratings, data.timestamps,
                     data.user_map, data.item_map)
    with pytest.raises(TypeError, match="int32"):
        Interactions(data.users.astype(np.int64), data.items, data.ratings, data.timestamps,
                     data.user_map, data.item_map)
    with pytest.raises(TypeError, match="float32"):
        Interactions(data.users, data.items, data.ratings.astype(np.float64), data.timestamps,
                     data.user_map, data.item_map)


# ---------------------------------------------------------------------------------- conversion
def test_to_csr_is_users_by_items(data: Interactions) -> None:
    m = data.to_csr()
    assert m.shape == (3, 3) and m.dtype == np.float32
    dense = m.toarray()
    # rows are users 10, 20, 30; columns items a, b, c
    np.testing.assert_array_equal(dense, [[0, 4, 2], [3, 0, 5], [0, 1, 0]])
    np.testing.assert_array_equal(data.to_csr(binary=True).toarray(), dense > 0)


def test_to_csr_sums_duplicates_and_keeps_vocab_shape(data: Interactions) -> None:
    dup = data.concat(data.subset(np.array([0])))
    assert dup.to_csr()[0, 1] == 8.0 and dup.to_csr(binary=True)[0, 1] == 2.0
    sub = data.subset(np.array([1]))
    assert sub.to_csr().shape == (3, 3) and sub.to_csr().nnz == 1


def test_to_tensors_dtypes_and_values(data: Interactions) -> None:
    t = data.to_tensors("cpu")
    assert t["users"].dtype == torch.int64 and t["items"].dtype == torch.int64
    assert t["ratings"].dtype == torch.float32 and t["timestamps"].dtype == torch.int64
    assert t["users"].tolist() == [0, 1, 1, 2, 0]
    assert t["ratings"].tolist() == [4.0, 3.0, 5.0, 1.0, 2.0]


def test_to_tensors_from_read_only_arrays_warns_nothing(data: Interactions) -> None:
    ts = data.timestamps.copy()
    ts.flags.writeable = False
    ro = Interactions(data.users, data.items, data.ratings, ts, data.user_map, data.item_map)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = ro.to_tensors()
    t["timestamps"][0] = -1  # must not write through to the data
    assert ro.timestamps[0] == 100


# ---------------------------------------------------------------------------------- derivation
def test_subset_shares_vocab_and_metadata() -> None:
    info = pd.DataFrame({"title": ["A", "B", "C"]}, index=pd.Index(["a", "b", "c"]))
    d = Interactions.from_frame(frame(), item_info=info)
    sub = d.subset(d.ratings >= 3)
    assert len(sub) == 3
    assert sub.user_map is d.user_map and sub.item_map is d.item_map and sub.item_info is info
    assert sub.n_users == 3
    np.testing.assert_array_equal(sub.user_counts(), [1, 2, 0])
    idx = d.subset(np.array([4, 0]))
    np.testing.assert_array_equal(idx.ratings, [2.0, 4.0])
    assert d.item_titles(["b", "zz"]) == ["B", "zz"]
    assert Interactions.from_frame(frame()).item_titles(["a"]) == ["a"]


def test_with_vocab_reindexes_and_drops(data: Interactions) -> None:
    umap, imap = IdMap([5, 10, 20]), IdMap(["a", "b", "c", "z"])
    with pytest.raises(DataError, match="user id 30"):
        data.with_vocab(umap, imap)
    d = data.with_vocab(umap, imap, drop_unknown=True)
    assert len(d) == 4 and d.user_map is umap
    np.testing.assert_array_equal(d.raw_users(), [10, 20, 20, 10])
    np.testing.assert_array_equal(d.raw_items(), ["b", "a", "c", "c"])
    np.testing.assert_array_equal(d.ratings, [4.0, 3.0, 5.0, 2.0])


def test_compact_shrinks_to_present_ids(data: Interactions) -> None:
    sub = data.subset(np.array([1, 2]))  # only user 20, items a and c
    c = sub.compact()
    assert (c.n_users, c.n_items) == (1, 2)
    assert c.user_map.ids.tolist() == [20] and c.item_map.ids.tolist() == ["a", "c"]
    pd.testing.assert_frame_equal(c.to_frame(), sub.to_frame())
    assert data.compact() is data  # already compact


def test_concat_same_and_different_vocabularies(data: Interactions) -> None:
    a, b = data.subset(np.array([0, 1])), data.subset(np.array([2, 3, 4]))
    both = a.concat(b)
    pd.testing.assert_frame_equal(both.to_frame(), data.to_frame())
    # b over other vocabularies: re-indexed onto a's
    pd.testing.assert_frame_equal(a.concat(b.compact()).to_frame(), data.to_frame())


def test_concat_reindexes_when_only_the_item_vocabulary_differs(data: Interactions) -> None:
    other = Interactions.from_frame(pd.DataFrame({
        "user_id": [10], "item_id": ["c"], "rating": [5.0], "timestamp": [9]}),
        user_map=data.user_map, item_map=IdMap(["c"]))
    out = data.concat(other)
    assert out.raw_items()[-1] == "c"
    assert out.to_frame().iloc[-1].tolist() == [10, "c", 5.0, 9]


def test_counts_and_present(data: Interactions) -> None:
    np.testing.assert_array_equal(data.user_counts(), [2, 2, 1])
    np.testing.assert_array_equal(data.item_counts(), [1, 2, 2])
    np.testing.assert_array_equal(data.subset(np.array([0])).present_items(), [1])


# ---------------------------------------------------------------------------------- fingerprint
def test_fingerprint_ignores_row_order_and_vocabulary(data: Interactions) -> None:
    fp = data.fingerprint()
    assert len(fp) == 64
    assert data.subset(np.array([4, 2, 0, 3, 1])).fingerprint() == fp
    # a subset over the full vocabulary hashes like the same rows over their own vocabulary
    sub = data.subset(np.array([1, 2]))
    assert sub.fingerprint() == sub.compact().fingerprint()
    wider = data.with_vocab(IdMap([1, 10, 20, 30, 99]), IdMap(["a", "b", "c", "q"]))
    assert wider.fingerprint() == fp
    rebuilt = Interactions.from_frame(frame().iloc[::-1], rating_scale=(1, 5))
    assert rebuilt.fingerprint() == fp


def test_fingerprint_sees_every_field(data: Interactions) -> None:
    fp = data.fingerprint()
    for change in ("rating", "timestamp", "user_id", "item_id"):
        df = frame()
        df.loc[0, change] = {"rating": 5.0, "timestamp": 101, "user_id": 30,
                             "item_id": "a"}[change]
        assert Interactions.from_frame(df).fingerprint() != fp, change
    assert data.subset(np.array([0, 1, 2, 3])).fingerprint() != fp


def test_fingerprint_of_duplicate_rows_ignores_their_order() -> None:
    df = pd.DataFrame({"user_id": [1, 1], "item_id": [1, 1], "rating": [2.0, 5.0],
                       "timestamp": [7, 7]})
    assert (Interactions.from_frame(df).fingerprint()
            == Interactions.from_frame(df.iloc[::-1]).fingerprint())


# ---------------------------------------------------------------------------------- memory
def test_nbytes_is_twenty_bytes_per_rating(data: Interactions) -> None:
    n = 10_000
    rng = np.random.default_rng(0)
    d = Interactions(rng.integers(0, 100, n).astype(np.int32), rng.integers(0, 50, n).astype(np.int32),
                     np.ones(n, np.float32), np.zeros(n, np.int64),
                     IdMap(np.arange(100)), IdMap(np.arange(50)))
    vocab = (100 + 50) * 8
    assert d.nbytes == 20 * n + vocab  # int32 + int32 + float32 + int64 per rating
    # so ML-25M (25,000,095 ratings, 162,541 users, 59,047 items) takes about 502 MB: < 1 GB
    ml25m = 20 * 25_000_095 + 8 * (162_541 + 59_047)
    assert ml25m == 501_774_604 and ml25m < 1e9


# ---------------------------------------------------------------------------------- implicit data
def log() -> Interactions:
    df = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["007", "x", "007", "y"],
                       "plays": [3, 1, 10, 2], "timestamp": [5, 6, 7, 8]})
    return Interactions.from_frame(df, feedback="implicit", weight_col="plays", name="log")


def test_implicit_data_is_binary_preference_with_weights() -> None:
    d = log()
    assert d.feedback == "implicit" and d.is_implicit and d.rating_scale == (0.0, 1.0)
    assert d.ratings.dtype == np.float32 and np.all(d.ratings == 1.0)
    assert d.weights is not None and d.weights.dtype == np.float32
    assert d.weights.tolist() == [3.0, 1.0, 10.0, 2.0]
    assert "interactions=4" in repr(d) and "feedback='implicit'" in repr(d)
    assert d.to_frame()["weight"].tolist() == [3.0, 1.0, 10.0, 2.0]
    assert d.to_csr(weighted=True).toarray().sum() == 16.0
    assert d.to_csr().toarray().sum() == 4.0  # the ratings: binary preference
    assert d.to_tensors()["weights"].tolist() == [3.0, 1.0, 10.0, 2.0]
    assert d.nbytes == Interactions.from_frame(
        d.to_frame(), rating_col="rating").nbytes + d.weights.nbytes
    ones = Interactions.from_frame(d.to_frame()[["user_id", "item_id"]], feedback="implicit")
    assert ones.weights.tolist() == [1.0] * 4


def test_explicit_data_has_no_weights(data: Interactions) -> None:
    assert data.feedback == "explicit" and not data.is_implicit and data.weights is None
    assert "weight" not in data.to_frame().columns and "weights" not in data.to_tensors()
    with pytest.raises(DataError, match="explicit ratings have no weights"):
        data.to_csr(weighted=True)


def test_derivations_carry_the_weights() -> None:
    d = log()
    assert d.subset(np.array([2, 0])).weights.tolist() == [10.0, 3.0]
    assert d.subset(np.array([2, 0])).feedback == "implicit"
    part = d.subset(np.array([1, 3])).compact()
    assert part.weights.tolist() == [1.0, 2.0] and part.n_items == 2
    back = part.with_vocab(d.user_map, d.item_map)
    assert back.weights.tolist() == [1.0, 2.0]
    joined = d.subset(np.array([0, 1])).concat(d.subset(np.array([2, 3])))
    assert joined.weights.tolist() == d.weights.tolist()
    with pytest.raises(DataError, match="cannot concatenate implicit and explicit"):
        d.concat(Interactions.from_frame(frame()))


def test_fingerprint_sees_the_weights() -> None:
    d = log()
    heavier = Interactions.from_frame(d.to_frame(), feedback="implicit", weight_col="weight")
    assert heavier.fingerprint() == d.fingerprint()
    other = d.to_frame()
    other.loc[0, "weight"] = 4.0
    changed = Interactions.from_frame(other, feedback="implicit", weight_col="weight")
    assert changed.fingerprint() != d.fingerprint()


def test_invariants_of_the_two_kinds() -> None:
    d = log()
    from dataclasses import replace

    with pytest.raises(ValueError, match="implicit data needs weights"):
        replace(d, weights=None)
    with pytest.raises(ValueError, match="explicit data carries no weights"):
        replace(d, feedback="explicit")
    with pytest.raises(ValueError, match="weights has 3 entries"):
        replace(d, weights=d.weights[:3])
    with pytest.raises(TypeError, match="weights must be float32"):
        replace(d, weights=d.weights.astype(np.float64))
    with pytest.raises(ValueError, match="feedback must be"):
        replace(d, feedback="clicks")


def test_fingerprint_compiled_pass_equals_numpy(monkeypatch) -> None:
    """Large data is hashed in one compiled pass: the same fingerprint as numpy's passes, for
    ratings, weights and a subset indexed in the full data's vocabularies."""
    import cfrec.data.interactions as interactions
    from cfrec.data import make_synthetic, make_synthetic_log

    data = make_synthetic(300, 200, 6000, seed=5)
    cases = [data, data.subset(np.arange(0, len(data), 3)), data.as_implicit(),
             make_synthetic_log(200, 300, 5000, seed=2)]
    for case in cases:
        monkeypatch.setattr(interactions, "FINGERPRINT_COMPILED_MIN", 1 << 62)
        numpy_fp = case.fingerprint()
        monkeypatch.setattr(interactions, "FINGERPRINT_COMPILED_MIN", 1)
        assert case.fingerprint() == numpy_fp
    assert cases[0].fingerprint() != cases[1].fingerprint()
