"""The roles a column can play (user, item, rating, time) and the header names of each."""

from __future__ import annotations

from typing import Literal

Role = Literal["user", "item", "rating", "time"]
ROLES: tuple[Role, ...] = ("user", "item", "rating", "time")
#: Header names recognised for each role, compared after stripping, lower-casing and turning
#: spaces and hyphens into ``_`` (so ``UserID``, ``userId`` and ``User ID`` all match).
COLUMN_ALIASES: dict[Role, tuple[str, ...]] = {
    "user": ("user", "user_id", "userid", "uid", "customer_id"),
    "item": ("item", "item_id", "itemid", "movieid", "movie_id", "product_id", "iid"),
    "rating": ("rating", "ratings", "score", "stars"),
    "time": ("timestamp", "time", "ts", "date", "datetime"),
}
_ROLE_OPTION = {"user": "user_col", "item": "item_col", "rating": "rating_col", "time": "time_col"}
_ROLE_WORD = {"user": "user id", "item": "item id", "rating": "rating", "time": "time"}
