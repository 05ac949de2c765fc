"""IdMap: raw ids <-> dense int32 indices, for integer and string ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfrec.data import IdMap
from cfrec.errors import CfrecError, DataError, UnknownIdError


def test_int_ids_are_deduplicated_and_sorted() -> None:
    m = IdMap([30, 10, 20, 10])
    assert len(m) == 3 and m.is_numeric
    assert m.ids.dtype == np.int64
    np.testing.assert_array_equal(m.ids, [10, 20, 30])
    idx = m.to_index([20, 30, 10])
    assert idx.dtype == np.int32
    np.testing.assert_array_equal(idx, [1, 2, 0])
    np.testing.assert_array_equal(m.to_raw(idx), [20, 30, 10])


def test_string_ids() -> None:
    m = IdMap(["tt02", "tt10", "tt01", "tt02"])
    assert not m.is_numeric and len(m) == 3
    assert m.ids.tolist() == ["tt01", "tt02", "tt10"]
    np.testing.assert_array_equal(m.to_index(np.array(["tt10", "tt01"])), [2, 0])
    assert m.to_raw(2) == "tt10"
    # numeric-looking strings are strings: sorted as text
    assert IdMap(["10", "9", "100"]).ids.tolist() == ["10", "100", "9"]


def test_scalar_lookup_returns_a_scalar() -> None:
    m = IdMap([5, 7])
    got = m.to_index(7)
    assert np.ndim(got) == 0 and got == 1 and got.dtype == np.int32


def test_missing_raise_names_the_kind_of_id() -> None:
    m = IdMap([1, 2, 3])
    with pytest.raises(UnknownIdError, match="unknown user id 42") as info:
        m.to_index([1, 42], what="user")
    assert isinstance(info.value, CfrecError) and isinstance(info.value, KeyError)
    assert str(info.value) == "unknown user id 42"  # no KeyError quoting
    with pytest.raises(UnknownIdError, match="^unknown id 9$"):
        m.to_index(9)
    with pytest.raises(UnknownIdError, match="unknown item id 'x'"):
        IdMap(["a"]).to_index(["x"], what="item")


def test_missing_minus_one_marks_unknown() -> None:
    m = IdMap(["a", "b"])
    np.testing.assert_array_equal(m.to_index(["b", "zz", "a"], missing="-1"), [1, -1, 0])
    assert m.to_index("zz", missing="-1") == -1


def test_lookup_coerces_between_representations() -> None:
    ints = IdMap([3, 7, 10])
    np.testing.assert_array_equal(ints.to_index(np.array(["7", "3"])), [1, 0])
    np.testing.assert_array_equal(ints.to_index(np.array([10.0])), [2])
    np.testing.assert_array_equal(ints.to_index(np.array([7], dtype=np.int32)), [1])
    np.testing.assert_array_equal(ints.to_index(np.array(["x", "7.5"]), missing="-1"), [-1, -1])
    strs = IdMap(["1", "2"])
    np.testing.assert_array_equal(strs.to_index(np.array([2, 1])), [1, 0])


def test_float_ids_must_be_whole_numbers() -> None:
    np.testing.assert_array_equal(IdMap(np.array([2.0, 1.0])).ids, [1, 2])
    assert IdMap(np.array([2.0, 1.0])).ids.dtype == np.int64
    with pytest.raises(DataError, match="whole numbers"):
        IdMap(np.array([1.5, 2.0]))
    with pytest.raises(DataError, match="missing"):
        IdMap(np.array([1.0, np.nan]))


def test_contains() -> None:
    m = IdMap([3, 7])
    assert 3 in m and np.int64(7) in m and 4 not in m and "a" not in m and [3] not in m
    assert "b" in IdMap(["a", "b"])


def test_ids_are_read_only() -> None:
    m = IdMap([1, 2])
    with pytest.raises(ValueError):
        m.ids[0] = 5
    np.testing.assert_array_equal(m.ids, [1, 2])


def test_equality_and_hash() -> None:
    assert IdMap([1, 2, 3]) == IdMap([3, 2, 1])
    assert hash(IdMap([1, 2, 3])) == hash(IdMap([3, 2, 1]))
    assert IdMap([1, 2]) != IdMap([1, 3])
    assert IdMap([1, 2]) != [1, 2]
    assert IdMap(["1", "2"]) != IdMap([1, 2])


def test_empty_map() -> None:
    m = IdMap([])
    assert len(m) == 0
    np.testing.assert_array_equal(m.to_index([1, 2], missing="-1"), [-1, -1])
    with pytest.raises(UnknownIdError):
        m.to_index([1])


@pytest.mark.parametrize("ids", [[5, 1, 3], ["b", "a", "c"], [10**12, 3]])
def test_list_round_trip_through_json(ids: list) -> None:
    m = IdMap(ids)
    back = IdMap.from_list(json.loads(json.dumps(m.to_list())))
    assert back == m and back.is_numeric == m.is_numeric
    np.testing.assert_array_equal(back.to_index(ids), m.to_index(ids))


def test_from_list_sorts_unsorted_input() -> None:
    assert IdMap.from_list([3, 1, 2]).ids.tolist() == [1, 2, 3]


def test_repr() -> None:
    assert repr(IdMap([1, 2, 3, 4])) == "IdMap(n=4, ids=[1, 2, 3, ...])"


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.lists(st.integers(-(2**40), 2**40), max_size=50),
                 st.lists(st.text(min_size=1, max_size=6), max_size=50)))
def test_round_trip_property(ids: list) -> None:
    m = IdMap(ids)
    assert len(m) == len(set(map(str, ids)) if ids and isinstance(ids[0], str) else set(ids))
    if ids:
        idx = m.to_index(ids)  # the list itself: np.asarray(ids) would already drop trailing NULs
        assert idx.dtype == np.int32 and idx.min() >= 0 and idx.max() < len(m)
        assert m.to_raw(idx).tolist() == list(ids)
    np.testing.assert_array_equal(m.to_index(m.ids), np.arange(len(m)))
    # indices follow the sorted order of the raw ids
    assert list(m.ids) == sorted(m.ids)


@pytest.mark.parametrize("ids", [["\x00"], ["a\x00", "a"], ["\x00\x00", "", "\x00"]])
def test_trailing_nul_characters_survive(ids: list) -> None:
    m = IdMap(ids)
    assert len(m) == len(set(ids)) and all(type(v) is str for v in m.ids)
    idx = m.to_index(ids)
    assert m.to_raw(idx).tolist() == ids
    assert m.to_index(np.array(ids, dtype=object)).tolist() == idx.tolist()
    assert all(v in m for v in ids)
    back = IdMap.from_list(json.loads(json.dumps(m.to_list())))
    assert back == m and back.to_raw(back.to_index(ids)).tolist() == ids
    vocab, codes = IdMap.encode(np.array(ids * 40, dtype=object))  # long enough for the Arrow path
    assert vocab == m and vocab.to_raw(codes).tolist() == ids * 40


def test_large_string_lookups_take_the_arrow_path_and_agree() -> None:
    rng = np.random.default_rng(0)
    vocab = np.array([f"u{k}" for k in range(500)] + ["\x00", "é\x00"], dtype=object)
    raw = vocab[rng.integers(0, len(vocab), 5000)]
    m = IdMap(raw)
    assert m.ids.tolist() == sorted(set(raw.tolist()))
    idx = m.to_index(raw)
    assert (m.to_raw(idx) == raw).all()
    small = [m.to_index(v) for v in raw[:50]]  # scalar lookups go through the hash index
    assert small == idx[:50].tolist()
    probe = np.array(["u1", "nope", "\x00"], dtype=object).repeat(30)
    assert set(m.to_index(probe, missing="-1").tolist()) == {int(m.to_index("u1")), -1,
                                                             int(m.to_index("\x00"))}
    enc_vocab, codes = IdMap.encode(raw)
    assert enc_vocab == m and codes.dtype == np.int32 and codes.tolist() == idx.tolist()


@pytest.mark.slow
def test_ml25m_sized_vocabulary_builds_and_looks_up_in_seconds() -> None:
    import time

    rng = np.random.default_rng(0)
    raw = rng.integers(1, 162_542, 25_000_000)  # ML-25M: 25M ratings by 162,541 users
    start = time.perf_counter()
    m = IdMap(raw)
    idx = m.to_index(raw)
    elapsed = time.perf_counter() - start
    assert len(m) == 162_541  # every user id occurs among 25M draws (seeded)
    assert idx.dtype == np.int32 and (m.to_raw(idx[:1000]) == raw[:1000]).all()
    assert elapsed < 10.0, f"IdMap on 25M ids took {elapsed:.2f} s"


@pytest.mark.parametrize("vocab", [[1, 2, 7, 50, 2**40], ["1", "a", "50", "Star", "\x00", "007"]])
def test_one_id_lookups_agree_with_array_lookups(vocab: list) -> None:
    """index_of (a dict, one id) and to_index (small arrays one by one, large ones hashed) give
    the same answer for every form of an id, and raw_id gives plain Python values back."""
    m = IdMap(vocab)
    queries = [1, 2, 50, 51, -1, 2**40, 2**70, "1", "50", " 50 ", "+7", "007", "7.0", "1e1", "a",
               "Star", "star", "\x00", "", "9" * 30, np.int64(7), np.int32(50), True, 1.0, 2.5]
    big = np.empty(len(queries) * 4, dtype=object)  # over SMALL_LOOKUP: the vectorised path
    big[:] = queries * 4
    with np.errstate(invalid="ignore"):
        hashed = m.to_index(big, missing="-1")[: len(queries)]
    for q, want in zip(queries, hashed.tolist(), strict=True):
        values = np.empty(1, dtype=object)
        values[0] = q
        with np.errstate(invalid="ignore"):
            assert m.index_of(q) == int(m.to_index(values, missing="-1")[0]) == want, q
    assert (hashed >= 0).sum() >= 5  # the test looks up known ids too
    assert [m.index_of(v) for v in m.to_list()] == list(range(len(m)))
    assert [m.raw_id(i) for i in range(len(m))] == m.to_list()
    assert {type(m.raw_id(i)) for i in range(len(m))} == {type(vocab[0])}  # plain int or str


def test_one_id_lookup_raises_like_the_array_lookup() -> None:
    m = IdMap([1, 2, 3])
    assert m.index_of(42) == -1
    with pytest.raises(UnknownIdError, match="^unknown user id 42$"):
        m.index_of("42", missing="raise", what="user")
    with pytest.raises(UnknownIdError, match="^unknown user id 42$"):
        m.to_index(["1", "42"], what="user")
    with pytest.raises(UnknownIdError, match="^unknown item id 'x'$"):
        IdMap(["a"]).index_of("x", missing="raise", what="item")


@pytest.mark.parametrize("text", ["1e0", "5e1", "001", "050", "+1", "1\n", " 1", "1 ", "\u00a01",
                                  "1.0", "-0", "0x1", "١", "1_0", ""])
def test_an_integer_vocabulary_accepts_only_canonical_integer_text(text: str) -> None:
    """"50" is item 50, but "5e1", "050", "+50", " 50" or a full-width digit are other ids: an
    unknown id is answered as unknown, never guessed, by the one-id and the array lookups."""
    m = IdMap([-3, 0, 1, 10, 50])
    assert m.index_of(text) == -1
    assert m.to_index(np.array([text], dtype=object), missing="-1").tolist() == [-1]
    big = np.array([text] * 100, dtype=object)  # over SMALL_LOOKUP: the vectorised path
    assert (m.to_index(big, missing="-1") == -1).all()
    with pytest.raises(UnknownIdError, match="^unknown user id "):
        m.index_of(text, missing="raise", what="user")


def test_canonical_integer_text_finds_integer_ids() -> None:
    m = IdMap([-3, 0, 1, 10, 50, 2**62])
    for text, want in [("50", 4), ("-3", 0), ("0", 1), (str(2**62), 5), ("51", -1), ("9" * 40, -1)]:
        assert m.index_of(text) == want
        assert m.to_index(np.array([text] * 20, dtype=object), missing="-1").tolist() == [want] * 20
    # a zero-padded string vocabulary keeps its ids as they are written
    padded = IdMap(["001", "002", "010"])
    assert padded.index_of("001") == 0 and padded.index_of("1") == -1 and padded.index_of(1) == -1
