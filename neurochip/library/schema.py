"""The index's schema: its columns, the values derived for them, and its migrations.

What lists search and sort by is stored in columns when a row is written (``prompt``;
``search``, the name, prompts and note case-folded; ``name_key``, ``song_key``,
``prompt_key``, which sort ignoring case and accents; ``faithfulness``, the chroma score the
note-faithfulness meter gave when the take was rendered, and ``notes_kept``, the share of the
sketch's notes it plays where they were counted, both from its metadata; see
:func:`_indexed`), and each sort has an index in its order (:mod:`~neurochip.library.query`),
so SQLite walks an index instead of sorting, and no row's metadata JSON is parsed to list it.

Schema changes are migrations (:data:`_MIGRATIONS`, ``PRAGMA user_version``): each version's
steps turn the previous one into it, and may backfill new columns from every row's metadata
JSON (version 2 added the search and sort columns that way; version 4 the note-faithfulness
score, and the note; version 5 notes kept). A later column is added the same way: ``ALTER
TABLE`` + an index + a backfill step, the value in :func:`_indexed`, and a sort key in
:data:`~neurochip.library.query._SORTS`.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from neurochip.library.metadata import faithfulness_score, notes_kept_score

SCHEMA_VERSION = 5
"""``PRAGMA user_version`` of the index; :data:`_MIGRATIONS` brings older ones up to it."""

_COLUMNS = (
    "id",
    "created",
    "name",
    "kind",
    "source_name",
    "audio_file",
    "thumbnail_file",
    "metadata",
    "starred",
    "frames",
    "sample_rate",
    "channels",
    "prompt",
    "search",
    "name_key",
    "song_key",
    "prompt_key",
    "audio_size",
    "faithfulness",
    "note",
    "notes_kept",
)


def _backfill_v2(conn: sqlite3.Connection) -> None:
    """Fill version 2's columns of the rows a version-1 index already holds."""
    rows = conn.execute("SELECT id, name, source_name, metadata FROM takes").fetchall()
    updates = []
    for take_id, name, source_name, text in rows:
        try:
            metadata = json.loads(text)
        except (TypeError, ValueError):
            metadata = {}
        updates.append({"id": take_id, **_indexed(name, source_name, metadata)})
    conn.executemany(
        "UPDATE takes SET prompt = :prompt, search = :search, name_key = :name_key, "
        "song_key = :song_key, prompt_key = :prompt_key WHERE id = :id",
        updates,
    )


def _backfill_v4(conn: sqlite3.Connection) -> None:
    """Fill version 4's faithfulness scores from the metadata of the rows already there."""
    _backfill(conn, "faithfulness", faithfulness_score)


def _backfill_v5(conn: sqlite3.Connection) -> None:
    """Fill version 5's notes kept from the metadata of the rows already there."""
    _backfill(conn, "notes_kept", notes_kept_score)


def _backfill(
    conn: sqlite3.Connection, column: str, score_of: Callable[[dict], float | None]
) -> None:
    """Set ``column`` of every row to ``score_of`` its metadata, where that gives one."""
    updates = []
    for take_id, text in conn.execute("SELECT id, metadata FROM takes").fetchall():
        try:
            metadata = json.loads(text)
        except (TypeError, ValueError):
            continue
        score = score_of(metadata) if isinstance(metadata, dict) else None
        if score is not None:
            updates.append((score, take_id))
    # column is one of this module's own names, never outside input.
    conn.executemany(f"UPDATE takes SET {column} = ? WHERE id = ?", updates)


# One list of steps per schema version; version n's turns n - 1 into n. A step is an SQL
# statement, or a function of the connection (to backfill a new column from the metadata).
# They run in one transaction, so an index is at one version or the next, never in between.
_MIGRATIONS: dict[int, tuple[str | Callable[[sqlite3.Connection], None], ...]] = {
    1: (
        """
        CREATE TABLE IF NOT EXISTS takes (
            id TEXT PRIMARY KEY,        -- random hex; also the folder name
            created REAL NOT NULL,      -- unix time
            name TEXT NOT NULL,         -- display title (user text: never used in a path)
            kind TEXT NOT NULL,         -- "take", "stereo pair", "crossfade comparison"
            source_name TEXT,           -- the song's file name as uploaded (user text)
            audio_file TEXT NOT NULL,   -- file name inside the take's folder
            thumbnail_file TEXT,        -- file name inside the take's folder, or NULL
            metadata TEXT NOT NULL,     -- the take_metadata() JSON
            starred INTEGER NOT NULL DEFAULT 0,
            frames INTEGER NOT NULL,
            sample_rate INTEGER NOT NULL,
            channels INTEGER NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS takes_by_created ON takes (created)",
    ),
    2: (
        # Derived from the name, song and metadata whenever a row is written; see _indexed().
        # prompt: the prompts of the takes in it, A's first, " / " between (for display).
        "ALTER TABLE takes ADD COLUMN prompt TEXT NOT NULL DEFAULT ''",
        # search: name and prompts, NFKC-normalised and case-folded, for text search.
        "ALTER TABLE takes ADD COLUMN search TEXT NOT NULL DEFAULT ''",
        # Sort keys (see _sort_key): case-folded, accents dropped, so "Élan" sorts with
        # "elan", not after "z"; a take without a song or prompt sorts after every one with.
        "ALTER TABLE takes ADD COLUMN name_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE takes ADD COLUMN song_key TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE takes ADD COLUMN prompt_key TEXT NOT NULL DEFAULT ''",
        # One index per sort in _SORTS (ordered as it orders), and one for the song filter.
        "CREATE INDEX IF NOT EXISTS takes_by_starred ON takes (starred, created)",
        "CREATE INDEX IF NOT EXISTS takes_by_name ON takes (name_key, created DESC)",
        "CREATE INDEX IF NOT EXISTS takes_by_song ON takes (song_key, created DESC)",
        "CREATE INDEX IF NOT EXISTS takes_by_prompt ON takes (prompt_key, created DESC)",
        "CREATE INDEX IF NOT EXISTS takes_by_source ON takes (source_name, created)",
        _backfill_v2,
    ),
    3: (
        # The size in bytes of the complete audio file, so that a listing can tell a file cut
        # off (by hand, a full disk, a bad copy) with one stat. NULL: not known; the rows of
        # older indexes get theirs from the files' headers in recover(), as it looks at every
        # take's audio anyway (a migration sees the index only, not the folders).
        "ALTER TABLE takes ADD COLUMN audio_size INTEGER",
    ),
    4: (
        # The note-faithfulness score the take was rendered with (metadata "faithfulness",
        # see faithfulness_score()); NULL for takes made before the meter, or not measured.
        "ALTER TABLE takes ADD COLUMN faithfulness REAL",
        # The composer's note (user text; mirrored in entry.json). Searched with the name and
        # prompts: a note is in the search column (see _indexed); none before version 4.
        "ALTER TABLE takes ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX IF NOT EXISTS takes_by_faithfulness ON takes (faithfulness, created)",
        _backfill_v4,
    ),
    5: (
        # Notes kept: the share of the sketch's notes the take plays (metadata
        # "faithfulness" -> "notes" -> "score", see notes_kept_score()); NULL where notes were
        # not counted (takes made before the measure, until counted on demand). Sorted by
        # with the chroma score as the tie-break, so one index holds both, in that order.
        "ALTER TABLE takes ADD COLUMN notes_kept REAL",
        "CREATE INDEX IF NOT EXISTS takes_by_notes_kept "
        "ON takes (notes_kept, faithfulness, created)",
        _backfill_v5,
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION


def _insert(conn: sqlite3.Connection, record: Mapping[str, Any]) -> int:
    """Insert a row unless its id is there already; returns 1 if it was inserted."""
    columns = ", ".join(_COLUMNS)
    values = ", ".join(f":{c}" for c in _COLUMNS)
    cursor = conn.execute(f"INSERT OR IGNORE INTO takes ({columns}) VALUES ({values})", record)
    return cursor.rowcount


def _indexed(
    name: str, source_name: str | None, metadata: Mapping[str, Any], note: str = ""
) -> dict[str, Any]:
    """The columns the index derives from a take's name, song, metadata and note, to sort and
    search (and the note itself).

    Written with every row (add, recovery, rename, note, and the migrations that added them),
    so a listing reads them and parses no JSON.
    """
    takes = metadata.get("takes")
    prompts: list[str] = []
    if isinstance(takes, Mapping):
        for key in sorted(takes, key=str):  # "A" before "B"
            settings = takes[key]
            prompt = settings.get("prompt") if isinstance(settings, Mapping) else None
            if isinstance(prompt, str) and prompt.strip() and prompt.strip() not in prompts:
                prompts.append(prompt.strip())
    prompt_text = " / ".join(prompts)
    # A newline between them, which a folded query never holds: no match spans two. (No note:
    # no third line, so rows of older versions, which had none, need no backfill.)
    search = f"{_fold(name)}\n{_fold(prompt_text)}" + (f"\n{_fold(note)}" if note else "")
    return {
        "prompt": prompt_text,
        "search": search,
        "name_key": _sort_key(name),
        "song_key": _sort_key(source_name),
        "prompt_key": _sort_key(prompt_text),
        "faithfulness": faithfulness_score(metadata),
        "note": note,
        "notes_kept": notes_kept_score(metadata),
    }


def _fold(text: str) -> str:
    """Text as search compares it: NFKC-normalised, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _sort_key(text: str | None) -> str:
    """Text as sorting compares it: case-folded, without accents ("Élan" -> "0elan").

    The "0" in front puts no text ("1") after all text, A to Z.
    """
    if not text or not text.strip():
        return "1"
    decomposed = unicodedata.normalize("NFKD", _fold(text))
    return "0" + "".join(ch for ch in decomposed if not unicodedata.combining(ch))
