"""The roles a column can play and how a header name is read as one, by its words.

A header name is cut into lower-case words at case changes, digits and punctuation
(``User-ID`` -> ``user id``, ``artistID`` -> ``artist id``, ``playCount`` -> ``play count``,
``playcount`` -> ``play count``). Its last word decides the role (``Book-Rating`` is a rating,
``play_count`` a weight); a last word that only says "identifier" (``id``, ``key``, ``code`` ...)
hands the decision to the word before it (``customer_id`` is a user, ``book_id`` an item,
``session_id`` nothing). So ``member``, ``visitor``, ``ISBN``, ``sku``, ``asin`` and ``track`` are
recognised without a list of every spelling.
"""

from __future__ import annotations

import re
from typing import Literal

Role = Literal["user", "item", "rating", "time", "weight"]
ROLES: tuple[Role, ...] = ("user", "item", "rating", "time", "weight")

#: The words that name each role, as the last word of a header name (or, for users and items,
#: the word before an identifier word such as ``id``).
ROLE_WORDS: dict[Role, frozenset[str]] = {
    "user": frozenset({
        "user", "users", "uid", "customer", "customers", "member", "members", "visitor",
        "visitors", "client", "clients", "account", "listener", "reader", "viewer", "buyer",
        "shopper", "subscriber", "reviewer", "learner", "student", "patron", "guest",
    }),
    "item": frozenset({
        "item", "items", "iid", "movie", "movies", "film", "product", "products", "sku", "asin",
        "isbn", "upc", "ean", "gtin", "track", "tracks", "song", "songs", "book", "books",
        "article", "articles", "video", "videos", "artist", "artists", "album", "albums", "game",
        "games", "show", "episode", "podcast", "anime", "recipe", "news", "post", "page",
        "course", "app", "business", "restaurant", "hotel", "venue", "listing", "offer", "doc",
        "document", "content", "merchant", "repo", "repository", "channel",
    }),
    "rating": frozenset({"rating", "ratings", "rate", "score", "scores", "stars", "star", "grade",
                         "overall", "vote"}),
    "time": frozenset({"timestamp", "timestamps", "time", "ts", "date", "datetime", "at",
                       "stamp", "epoch", "when", "day"}),
    "weight": frozenset({"count", "counts", "plays", "playcount", "weight", "weights", "quantity",
                         "qty", "clicks", "views", "n", "freq", "frequency", "listens",
                         "purchases", "visits", "dwell", "duration", "seconds", "secs",
                         "minutes", "amount", "times"}),
}
#: Last words that only say "identifier": the role comes from the word before.
ID_WORDS = frozenset({"id", "ids", "key", "code", "no", "nr", "number", "num", "hash", "uuid",
                      "guid", "ref"})
#: Words that make any name a weight (``dwell_time``, ``watch_duration``).
_WEIGHT_ANYWHERE = frozenset({"dwell", "duration"})
#: Prefixes glued to an identifier or count word in one lower-case token (``userid``, ``playcount``).
_GLUED_PREFIXES = ROLE_WORDS["user"] | ROLE_WORDS["item"] | {"play", "listen", "click", "view",
                                                             "purchase", "visit"}
_GLUED_SUFFIXES = ("ids", "id", "counts", "count", "key")
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")

#: Examples of header names recognised for each role (for messages and documentation).
COLUMN_ALIASES: dict[Role, tuple[str, ...]] = {
    "user": ("user", "user_id", "userId", "User-ID", "customer_id", "member", "visitor"),
    "item": ("item", "item_id", "movieId", "ISBN", "artistID", "product", "sku", "asin", "track",
             "song", "book", "article", "video"),
    "rating": ("rating", "Book-Rating", "score", "stars"),
    "time": ("timestamp", "time", "ts", "date", "datetime", "created_at"),
    "weight": ("count", "plays", "playcount", "weight", "quantity", "qty", "clicks", "views", "n",
               "dwell_time"),
}
_ROLE_OPTION: dict[Role, str] = {"user": "user_col", "item": "item_col", "rating": "rating_col",
                                 "time": "time_col", "weight": "weight_col"}
_ROLE_WORD: dict[Role, str] = {"user": "user id", "item": "item id", "rating": "rating",
                               "time": "time", "weight": "weight"}


def header_words(name: str) -> list[str]:
    """The lower-case words of a header name (``"User-ID"`` -> ``["user", "id"]``)."""
    words: list[str] = []
    for token in _WORD.findall(name.strip().strip("\"'")):
        low = token.lower()
        for suffix in _GLUED_SUFFIXES:
            head = low[: -len(suffix)]
            if low.endswith(suffix) and head in _GLUED_PREFIXES:
                words += [head, suffix]
                break
        else:
            words.append(low)
    return words


def column_role(name: str) -> Role | None:
    """The role a header name reads as, or ``None`` (``"Book-Rating"`` -> ``"rating"``)."""
    words = header_words(name)
    if not words:
        return None
    if _WEIGHT_ANYWHERE.intersection(words):
        return "weight"
    if words[-1] in ID_WORDS:
        for word in reversed(words[:-1]):
            if word in ROLE_WORDS["user"]:
                return "user"
            if word in ROLE_WORDS["item"]:
                return "item"
        return None
    last = words[-1]
    order: tuple[Role, ...] = ("rating", "weight", "time", "user", "item")
    return next((role for role in order if last in ROLE_WORDS[role]), None)
