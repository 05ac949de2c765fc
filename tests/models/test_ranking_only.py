"""A ranking-only model's rating fallbacks stay below what it prefers: an id it does not know is
not predicted above its own top pick."""

from __future__ import annotations

import numpy as np
import pytest

from cfrec.models import make_model
from cfrec.testing import make_ratings


@pytest.mark.parametrize("name", ["ease", "ials", "bpr"])
def test_an_unknown_item_is_predicted_at_the_bottom_below_the_top_pick(name: str) -> None:
    data = make_ratings(n_users=60, n_items=40, per_user=14, seed=1)
    model = make_model(name).fit(data)
    user = data.raw_users()[0]
    top = model.recommend(user, k=1).ids[0]
    known, unknown = model.predict([user, user], [top, "no-such-item"])
    assert unknown == model.rating_scale_[0] and unknown <= known
    assert model.fallback_labels[2].startswith("unknown item: the bottom of the rating scale")
    assert np.isfinite(known)
