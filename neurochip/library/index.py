"""The index file: connections and transactions, creating and migrating it, and healing it.

The index (``library.sqlite3``) is a cache of the take folders, for fast listing, search and
sort, that also holds the edits (star, rename, note), each mirrored into the take's
``entry.json``; it can always be rebuilt from the folders alone.

Concurrency: every call opens its own SQLite connection, so one library object can be shared
by all of Streamlit's session threads; the database is in WAL mode (readers never wait for a
writer) with a busy timeout (writers from other tabs or processes queue instead of failing).
Changes that must agree with the folders (reconciling, deleting, starring, renaming, notes) run
in ``BEGIN IMMEDIATE`` transactions (:meth:`Index.transaction`), which take the write lock
before they look at anything. WAL needs a local disk: keep the library off network shares.

Damage
------

A damaged index (a failing disk, a torn copy, a file edited by another program) is found when
a library is opened, by ``PRAGMA quick_check`` (every page, about 25 ms for 10,000 takes), or
when SQLite reports it in use ("database disk image is malformed", "file is not a
database"). Either way it is moved aside, with its ``-wal`` and ``-shm``, as
``library.sqlite3.damaged-<time>`` (kept, never deleted) and rebuilt from the folders; a call
that found it runs again once, on the new index (:func:`_heals_index`). Nothing is lost: the
rows are made from the folders, and the edits in them (name, star, note) are in
``entry.json``.
An index deleted while a library is open (by hand, with or without its ``-wal`` and ``-shm``)
is noticed at the next call, by one ``stat`` before each connection, and made again from the
folders the same way (a ``-wal`` left without its database is set aside, never replayed into
the new one). Other index errors (locked, read-only) are reported as they are; a full or
failing disk in the words every file write uses ("the disk is full: free some space...").
Another thread or process that meets the damaged file later (a connection opened before the
move) sees that the file is no longer there and does not set the new one aside.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from neurochip.errors import NeuroChipError
from neurochip.io.write import describe_os_error
from neurochip.library.schema import _MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another tab or process holding the index's write lock."""


class _DamagedIndex(NeuroChipError):
    """SQLite found the index damaged ("database disk image is malformed", "file is not a
    database") while a library used it: :func:`_heals_index` sets it aside and rebuilds it."""

    def __init__(self, message: str, reason: str, index_id: tuple[int, int] | None) -> None:
        super().__init__(message)
        self.reason = reason  # SQLite's words
        self.index_id = index_id  # the file the failing connection had open (see _file_id)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _heals_index(method: _Method) -> _Method:
    """A method (of an object whose ``_index`` is its :class:`Index`) that, if the index turns
    out damaged, rebuilds it once and runs again.

    Only for methods that can run twice: they change nothing, or nothing a second run would
    do differently (a star, a rename). A second failure is a plain error, so a healing method
    called by another rebuilds at most once. :meth:`TakeLibrary.add` and
    :meth:`~TakeLibrary.delete` heal their own way.
    """

    @functools.wraps(method)
    def healing(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _DamagedIndex as err:
            self._index.rebuild(err)
        try:
            return method(self, *args, **kwargs)
        except _DamagedIndex as err:
            raise self._index.damaged_again(err) from err

    return cast(_Method, healing)


class Index:
    """A library's SQLite index.

    Args:
        root: The library's folder (the index is ``library.sqlite3`` in it).
        takes_dir: Its take folders, named in errors.
        refill: Fills a new, empty index from the folders (after a rebuild); ``recover``.
    """

    def __init__(self, root: Path, takes_dir: Path, refill: Callable[[], object]) -> None:
        self.root = root
        self.takes_dir = takes_dir
        self.path = root / "library.sqlite3"
        self._refill = refill
        # Held while a damaged or deleted index is rebuilt, so threads do it once. Reentrant:
        # a rebuild's own connections may find the file deleted again.
        self._rebuild_lock = threading.RLock()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection of our own (sqlite3 connections must not cross threads)."""
        if _file_id(self.path) is None:
            self._gone()  # else connecting would make an empty file, with no takes
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise self.error(err) from err
        index_id = _file_id(self.path)  # which file: another may replace it meanwhile
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.Error as err:
            # No table: the file was deleted and made again, empty, between the check above
            # and the connection (here or in another process). Rebuilt like a damaged one.
            if _is_damage(err) or "no such table" in str(err):
                raise _DamagedIndex(str(self.error(err)), str(err), index_id) from err
            raise self.error(err) from err
        finally:
            conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock first (``BEGIN IMMEDIATE``).

        What it reads of the folders then stays true until it commits, because every change
        that must agree with the folders happens under this lock.
        """
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def error(self, err: sqlite3.Error) -> NeuroChipError:
        """An index error, as a composer reads it."""
        problem = _disk_problem(err)
        if problem is not None:  # said as for every file NeuroChip writes
            return NeuroChipError(f"The take library's index {self.path} failed: {problem}.")
        hint = (
            " Another NeuroChip is busy writing to it; try again."
            if "locked" in str(err) or "busy" in str(err)
            else ""
        )
        return NeuroChipError(f"The take library's index {self.path} failed: {err}.{hint}")

    def _gone(self) -> None:
        """The index file was deleted while the library is open (by hand, by a clean-up):
        make it again and fill it from the folders, as opening a library does. Nothing is
        lost: the rows are made from the folders, the edits (star, name, note) are in each
        take's ``entry.json``."""
        with self._rebuild_lock:
            if _file_id(self.path) is not None:
                return  # made again meanwhile, by another thread or process
            log.warning("Take index %s is gone; rebuilt from the take folders", self.path)
            leftovers = [Path(f"{self.path}{end}") for end in ("-wal", "-shm")]
            if any(path.exists() for path in leftovers):
                # A write-ahead log left without its database would be replayed into the new
                # one, and damage it: kept aside, as a damaged index is.
                self._set_aside("its file was deleted, its -wal and -shm left behind")
            self.open()
            self._refill()

    def open(self) -> None:
        """Create, check and migrate the index; set a damaged one aside (the folders rebuild it).

        The check is ``PRAGMA quick_check``: it reads every page of the index and checks its
        structure (not that each index agrees with the table, which integrity_check also does
        at five times the cost), about 25 ms for 10,000 takes. Damage found later, while the
        library is in use, is handled by :func:`_heals_index`.
        """
        try:
            problem = self._migrate()
        except sqlite3.Error as err:
            if isinstance(err, sqlite3.OperationalError) and not _is_damage(err):
                raise self.error(err) from err  # locked, read-only, disk full: say so
            problem = str(err)  # "file is not a database", "database disk image is malformed"
        if problem is None:
            return
        self._set_aside(problem)
        try:
            problem = self._migrate()
        except sqlite3.Error as err:
            raise self.error(err) from err
        if problem is not None:
            raise NeuroChipError(
                f"The take library's index {self.path} is damaged as soon as it is made "
                f"({problem}): check the disk. The takes themselves are in {self.takes_dir}."
            )

    def _set_aside(self, reason: str) -> None:
        """Move a damaged index (and its -wal and -shm) to ``library.sqlite3.damaged-<time>``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for n in range(2, 100):
            if not aside.exists():
                break
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        log.warning(
            "Take index %s is damaged (%s); moved to %s and rebuilt from the take folders",
            self.path,
            reason,
            aside,
        )
        for extra in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + extra)
            try:
                os.replace(source, aside.with_name(aside.name + extra))
            except FileNotFoundError:
                pass
            except OSError as err:  # e.g. open in another program, on Windows
                raise NeuroChipError(
                    f"The take library's index {self.path} is damaged ({reason}) and "
                    f"could not be moved aside: {err.strerror or err}. Close every NeuroChip "
                    f"and delete it; the takes themselves are safe in {self.takes_dir}."
                ) from err

    def rebuild(self, damaged: _DamagedIndex) -> None:
        """Set a damaged index aside and rebuild it from the folders, as recovery does.

        Unless it is no longer the file that failed: another thread or process has set that
        one aside already (its rebuild is then finished here, or merely checked).
        """
        with self._rebuild_lock:
            if damaged.index_id is not None and damaged.index_id == _file_id(self.path):
                self._set_aside(damaged.reason)
            try:
                self.open()
                self._refill()
            except _DamagedIndex as again:
                raise self.damaged_again(again) from again

    def damaged_again(self, err: _DamagedIndex) -> NeuroChipError:
        return NeuroChipError(
            f"The take library's index {self.path} was rebuilt from the take folders "
            f"and is damaged again ({err.reason}): check the disk. The takes themselves are "
            f"in {self.takes_dir}."
        )

    def _migrate(self) -> str | None:
        """Check the index and bring it to :data:`SCHEMA_VERSION`; what is wrong with it, if
        the check fails (and then nothing is changed)."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                return f"quick_check: {problem}"
            # Persistent: every later connection, from any process, uses the write-ahead log.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise NeuroChipError(
                    f"The take library in {self.root} was written by a newer NeuroChip "
                    f"(index version {version}, this one knows {SCHEMA_VERSION}). Upgrade "
                    "NeuroChip, or set NEUROCHIP_HOME to another folder."
                )
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    if callable(statement):
                        statement(conn)
                    else:
                        conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        return None


def _is_damage(err: sqlite3.Error) -> bool:
    """Whether SQLite says the index file is damaged, rather than busy, read-only or full."""
    code = getattr(err, "sqlite_errorcode", None)
    if isinstance(code, int):  # SQLITE_CORRUPT, SQLITE_NOTADB (and their extended codes)
        return (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    text = str(err).lower()
    return any(words in text for words in ("malformed", "not a database", "disk image"))


def _disk_problem(err: sqlite3.Error) -> str | None:
    """A full or failing disk as :func:`~neurochip.io.write.describe_os_error` says it (as
    for every file NeuroChip writes), or ``None`` for any other index error."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(err).lower()
    if primary == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in text:
        return describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    if primary == getattr(sqlite3, "SQLITE_IOERR", 10) or "disk i/o error" in text:
        return (
            "the disk could not be read or written (an input/output error): check the disk, "
            "or move NEUROCHIP_HOME to another one"
        )
    return None


def _file_id(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path`` (device and inode), or ``None``."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
