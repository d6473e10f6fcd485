"""Search, sort and paging of takes: the SQL of a listing, from what a composer asked for.

:meth:`~neurochip.library.store.TakeLibrary.list` filters (starred, song, text in the name,
prompt or note), sorts (by date, name, song, prompt, star, notes kept) and pages with
one SQL query on the index (:meth:`~neurochip.library.store.TakeLibrary.count` counts what it
would list, for paging). It reads only columns written with each row
(:mod:`~neurochip.library.schema`), each sort walks an index in its order, and no row's
metadata JSON is parsed to list it.
"""

from __future__ import annotations

from neurochip.library.record import _LISTED
from neurochip.library.schema import _fold

_SORTS: dict[str, tuple[tuple[str, str], ...]] = {
    # sort -> its ORDER BY terms in the default direction; the other direction reverses every
    # term, so it is the same list backwards. Each matches an index of _MIGRATIONS[2], [4] or
    # [5] (the implicit rowid at the end included), which SQLite walks forwards or backwards
    # instead of sorting. Ties go newest first. "notes_kept": most notes kept first, the
    # chroma score breaking ties; takes whose notes were not counted (NULL) after every one
    # counted, by their chroma score, those never measured last (first when reversed).
    "created": (("created", "DESC"), ("rowid", "DESC")),
    "starred": (("starred", "DESC"), ("created", "DESC"), ("rowid", "DESC")),
    "name": (("name_key", "ASC"), ("created", "DESC"), ("rowid", "ASC")),
    "song": (("song_key", "ASC"), ("created", "DESC"), ("rowid", "ASC")),
    "prompt": (("prompt_key", "ASC"), ("created", "DESC"), ("rowid", "ASC")),
    "notes_kept": (
        ("notes_kept", "DESC"),
        ("faithfulness", "DESC"),
        ("created", "DESC"),
        ("rowid", "DESC"),
    ),
}
# Sorts by an older name: "faithfulness" (the chroma score alone, before notes were counted)
# sorts as notes kept, which it became.
_ALIASES = {"faithfulness": "notes_kept"}
_SORTS.update({old: _SORTS[new] for old, new in _ALIASES.items()})
_REVERSE = {"ASC": "DESC", "DESC": "ASC"}
SORTS: tuple[str, ...] = tuple(s for s in _SORTS if s not in _ALIASES)
"""What :meth:`~neurochip.library.store.TakeLibrary.list` sorts by (and "faithfulness", the
old name of "notes_kept")."""

SORT_NAMES: dict[str, str] = {
    "created": "Newest first",
    "starred": "Starred first",
    "notes_kept": "Notes kept",
    "name": "Name",
    "song": "Song",
    "prompt": "Prompt",
}
"""Each sort as people read it (the app's choices)."""

SONGS_QUERY = (
    "SELECT DISTINCT source_name FROM takes WHERE source_name IS NOT NULL "
    "ORDER BY song_key, source_name"
)
"""The songs the takes were rendered from, A to Z, once each."""


def listing_query(
    starred_only: bool,
    song: str | None,
    text: str | None,
    sort: str,
    descending: bool | None,
    limit: int | None,
    offset: int,
) -> tuple[str, list[object]]:
    """The query of a listing (its columns :data:`~neurochip.library.record._LISTED`) and its
    parameters; see :meth:`~neurochip.library.store.TakeLibrary.list` for the arguments.

    Raises:
        ValueError: For an unknown sort, or a negative limit or offset.
    """
    if sort not in _SORTS:
        raise ValueError(f"Takes can be sorted by {', '.join(SORTS)}, not {sort!r}.")
    if (limit is not None and limit < 0) or offset < 0:
        raise ValueError(f"limit and offset cannot be negative ({limit}, {offset}).")
    terms = _SORTS[sort]
    if descending is not None and descending != (terms[0][1] == "DESC"):
        terms = tuple((term, _REVERSE[way]) for term, way in terms)
    where, params = _filters(starred_only, song, text)
    query = "SELECT {} FROM takes {} ORDER BY {} LIMIT ? OFFSET ?".format(
        _LISTED, where, ", ".join(f"{term} {way}" for term, way in terms)
    )
    params += [-1 if limit is None else int(limit), int(offset)]
    return query, params


def count_query(starred_only: bool, song: str | None, text: str | None) -> tuple[str, list[object]]:
    """The query that counts what a listing with these filters gives, and its parameters."""
    where, params = _filters(starred_only, song, text)
    return f"SELECT count(*) FROM takes {where}", params


def _filters(starred_only: bool, song: str | None, text: str | None) -> tuple[str, list[object]]:
    """The WHERE clause of a listing (or "") and its parameters."""
    where: list[str] = []
    params: list[object] = []
    if starred_only:
        where.append("starred = 1")
    if song is not None:
        where.append("source_name = ?")
        params.append(str(song))
    needle = _fold(text) if text is not None else ""
    if needle:
        where.append("instr(search, ?) > 0")
        params.append(needle)
    return ("WHERE " + " AND ".join(where) if where else ""), params
