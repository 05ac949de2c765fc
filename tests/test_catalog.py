"""cfrec.catalog: item records, title search ranked by popularity, id-or-title resolution and
single-id lookups that agree with the vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cfrec.catalog import Catalog, normalize_title
from cfrec.data import Interactions
from cfrec.data.idmap import IdMap
from cfrec.errors import CfrecError, UnknownIdError
from cfrec.models import make_model
from tests.clustered import clustered_frame

TITLES = {
    1: "Star Wars (1977)",
    2: "Empire Strikes Back, The (1980)",
    3: "Return of the Jedi (1983)",
    4: "Star Trek: First Contact (1996)",
    5: "Amélie (2001)",
    6: "Wars of the Stars, The (1990)",
    7: "Star Wars",
    8: None,
}
COUNTS = np.array([50, 30, 40, 20, 5, 60, 1, 7])


@pytest.fixture
def catalog() -> Catalog:
    ids = list(TITLES)
    info = pd.DataFrame({
        "title": [TITLES[i] for i in ids],
        "year": [1977, 1980, 1983, 1996, 2001, np.nan, None, 1999],
        "genres": [["Sci-Fi", "Action"], "Sci-Fi|Adventure", [], None, "(no genres listed)",
                   ["Drama"], [], ["Comedy"]],
    }, index=pd.Index(ids, name="item_id"))
    return Catalog(IdMap(ids), info, COUNTS)


def ids_of(catalog: Catalog, idx: np.ndarray) -> list[int]:
    return catalog.ids[idx].tolist()


def test_records_are_plain_json_values(catalog: Catalog) -> None:
    assert catalog.record(0) == {"id": 1, "title": "Star Wars (1977)", "year": 1977,
                                 "genres": ["Sci-Fi", "Action"], "n_ratings": 50}
    rec = catalog.records(np.array([1, 5, 7]))
    assert rec[0]["genres"] == ["Sci-Fi", "Adventure"]  # a '|'-separated string
    assert rec[1]["year"] is None and rec[1]["genres"] == ["Drama"]
    assert rec[2]["title"] is None and rec[2]["n_ratings"] == 7
    assert catalog.record(4)["genres"] == []
    assert type(catalog.record(0)["id"]) is int and type(catalog.record(0)["n_ratings"]) is int


def test_items_without_metadata() -> None:
    bare = Catalog(IdMap(["a", "b"]))
    assert bare.record(1) == {"id": "b", "title": None, "year": None, "genres": [], "n_ratings": 0}
    assert not bare.has_titles
    assert bare.search("a").tolist() == []
    with pytest.raises(UnknownIdError, match="no titles"):
        bare.resolve("c")


def test_normalize_title() -> None:
    assert normalize_title("Amélie (2001)") == "amelie 2001"
    assert normalize_title("  Star  WARS:  Episode_IV ") == "star wars episode iv"
    assert normalize_title("?!") == ""


def test_search_ranks_exact_then_phrase_then_popularity(catalog: Catalog) -> None:
    # exact title (with or without the year) first, then titles holding the phrase, then titles
    # holding every word elsewhere; each group by training ratings
    assert ids_of(catalog, catalog.search("star wars")) == [1, 7, 6]
    assert ids_of(catalog, catalog.search("STAR")) == [1, 4, 7, 6]  # "Stars" only holds it in a word
    assert ids_of(catalog, catalog.search("the empire")) == [2]
    assert ids_of(catalog, catalog.search("amelie")) == [5]
    assert ids_of(catalog, catalog.search("AMÉLIE")) == [5]
    assert ids_of(catalog, catalog.search("star", limit=2)) == [1, 4]
    assert len(catalog.search("star", limit=None)) == 4


def test_search_without_matches_or_words(catalog: Catalog) -> None:
    assert catalog.search("jaws").tolist() == []
    assert catalog.search("  ?? ").tolist() == []
    with pytest.raises(CfrecError, match="limit"):
        catalog.search("star", limit=0)


def test_popular(catalog: Catalog) -> None:
    assert ids_of(catalog, catalog.popular(3)) == [6, 1, 3]
    assert ids_of(catalog, catalog.by_popularity) == [6, 1, 3, 2, 4, 8, 5, 7]


def test_resolve_id_then_title(catalog: Catalog) -> None:
    idx, matches = catalog.resolve("3")
    assert catalog.raw_id(idx) == 3 and len(matches) == 1
    idx, matches = catalog.resolve("star wars")
    assert catalog.raw_id(idx) == 1
    assert [m.record["id"] for m in matches] == [1, 7, 6]
    with pytest.raises(UnknownIdError, match="jaws"):
        catalog.resolve("jaws")
    with pytest.raises(UnknownIdError):
        catalog.resolve("   ")


def test_counts_are_checked() -> None:
    with pytest.raises(CfrecError, match="2 non-negative"):
        Catalog(IdMap([1, 2]), counts=np.array([1, 2, 3]))
    with pytest.raises(CfrecError, match="non-negative"):
        Catalog(IdMap([1, 2]), counts=np.array([1, -2]))


def test_from_model_counts_training_ratings() -> None:
    frame, info = clustered_frame()
    data = Interactions.from_frame(frame, rating_scale=(1.0, 5.0), item_info=info)
    model = make_model("pop").fit(data)
    catalog = Catalog.from_model(model)
    expected = frame.groupby("item_id").size()
    assert dict(zip(catalog.ids.tolist(), catalog.counts.tolist(), strict=True)) == expected.to_dict()
    assert catalog.record(int(catalog.index_of(11)[0]))["title"] == "Star Wars (1977)"
    assert catalog.has_titles


@pytest.mark.parametrize("vocab", [[1, 2, 7, 50, 2**40], ["1", "a", "50", "Star", "\x00", "007"]])
def test_lookups_agree_with_the_vocabulary(vocab: list) -> None:
    """The catalogue finds ids through the model's vocabulary: one id or many, every form of an
    id gives the vocabulary's own answer, and records_of lists the records of raw ids."""
    id_map = IdMap(vocab)
    catalog = Catalog(id_map)
    queries = [1, 2, 50, 51, -1, 2**40, "1", "50", " 50 ", "+7", "007", "a", "Star", "star",
               "\x00", "", np.int64(7), np.int32(50)]
    many = catalog.index_of(np.array(queries, dtype=object))
    for q, got in zip(queries, many.tolist(), strict=True):
        values = np.empty(1, dtype=object)
        values[0] = q
        expected = int(id_map.to_index(values, missing="-1")[0])
        assert int(catalog.index_of(q)[0]) == expected == got, q
    ids = id_map.to_list()
    reordered = ids[::-1]
    assert catalog.index_of(reordered).tolist() == list(range(len(ids)))[::-1]
    assert [r["id"] for r in catalog.records_of(reordered)] == reordered
    with pytest.raises(UnknownIdError):
        catalog.records_of(["no such id"])
