"""A composer's edits to kept takes: star, name, note, and deleting.

An edit changes the take's row and mirrors it into its ``entry.json`` in the same
``BEGIN IMMEDIATE`` transaction, so that the index can be rebuilt from the folders with every
edit in it. A take's note is an edit, like its name: kept in ``entry.json`` and the index, not
in the settings its audio file carries (rewriting a whole take's audio for a note would be
slow, and the settings say how it was made, not what a composer thinks of it).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from neurochip.errors import NeuroChipError
from neurochip.library.folders import TakeFolders
from neurochip.library.index import Index
from neurochip.library.schema import _indexed


def update_row(
    index: Index, folders: TakeFolders, take_id: str, column: str, value: object
) -> dict[str, Any]:
    """Set a take's ``starred``, ``name`` or ``note``; its whole row as it now is."""
    if column not in ("starred", "name", "note"):  # it is spliced into the SQL below
        raise ValueError(f"Cannot update {column!r}.")
    with index.transaction() as conn:
        row = conn.execute("SELECT * FROM takes WHERE id = ?", (take_id,)).fetchone()
        if row is None:
            raise folders.unknown(take_id)
        record = {**dict(row), column: value}
        if column in ("name", "note"):
            metadata = json.loads(row["metadata"])
            record.update(_indexed(record["name"], row["source_name"], metadata, record["note"]))
        conn.execute(
            f"UPDATE takes SET {column} = ?, search = ?, name_key = ? WHERE id = ?",
            (value, record["search"], record["name_key"], take_id),
        )
        # Mirrored inside the transaction, so concurrent edits reach the file in the
        # order they reach the index.
        folders.write_entry(record)
    return record


def delete_take(index: Index, folders: TakeFolders, take_id: str) -> None:
    """Delete a take's row and its folder (invariant 3 of :mod:`~neurochip.library.folders`).

    The folder is renamed to ``<id>.deleted`` inside the transaction that deletes the row
    and removed after it commits.
    """
    with index.transaction() as conn:
        if conn.execute("DELETE FROM takes WHERE id = ?", (take_id,)).rowcount == 0:
            raise folders.unknown(take_id)
        folder = folders.folder(take_id)
        doomed = folder.with_name(f"{take_id}.deleted")
        try:
            os.rename(folder, doomed)
        except FileNotFoundError:
            return  # its files were already gone: dropping the row (on commit) is all
        except OSError as err:  # e.g. a file in it open elsewhere, on Windows
            raise NeuroChipError(
                f"Could not delete the take in {folder}: {err.strerror or err}."
            ) from err
    shutil.rmtree(doomed, ignore_errors=True)  # whatever is left is recover()'s job
