"""Data NeuroChip did not write itself, checked where it comes in.

A take file's embedded settings, a stems export's ``stems.json``, a batch manifest, a model
folder's configs: anyone can edit them, and a damaged or hostile one must end in one
:class:`~neurochip.errors.NeuroChipError` saying what is wrong, never a ``TypeError`` deep in
a render. Each is read here, in two steps:

1. **Parse with limits**: :func:`load_json_text` and :func:`load_toml_text` refuse text
   over a size limit and data nested more deeply than a limit (Python's parsers recurse:
   100,000 ``[`` would end in ``RecursionError``, and code walking the result would too).
2. **Read typed fields**: :func:`table`, :func:`tables`, :func:`field`, :func:`text`,
   :func:`number`, :func:`whole` and :func:`flag` return a field of the type asked for, or raise
   :class:`DataError` naming the field and what it holds.

File names from such data (and from the command line) go through :func:`check_file_name`:
a NUL character cannot be in a path on any OS, and Python says so with a ``ValueError``.

Plain checks, no schema library: the core depends on nothing beyond what it uses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

from neurochip.errors import NeuroChipError

#: How deeply data may nest (tables in lists in tables...). NeuroChip's own files nest at
#: most 5 levels (a take's sections' settings); model configs a few more.
MAX_DEPTH = 32

#: Largest JSON or TOML text read by default: NeuroChip's own are a few kilobytes.
MAX_BYTES = 1_000_000

_REQUIRED: Any = object()


class DataError(NeuroChipError):
    """Untrusted data is not what it must be.

    ``str(err)`` says what and what is wrong ("Stem 2's "gain_db" must be a number from -24
    to 12, not 5000."); ``problem`` is the part after ``what``, for a caller that words its
    own sentence around it ("...looks damaged: its tokenizer (vocab.json) <problem>").
    """

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(_sentence(f"{what} {problem}" if what else problem))
        self.what = what
        self.problem = problem


class MalformedError(DataError):
    """The text is not JSON (or TOML) at all: perhaps not meant for NeuroChip."""


def _sentence(text: str) -> str:
    if "." not in text.split(" ", 1)[0]:  # a file name ("stems.json") keeps its case
        text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def _size_text(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size:,} bytes"


def _kind(value: object) -> str:
    """What a JSON or TOML value is, as a composer would say it."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {_number_text(value)}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:39] + "…"
        return f"the text {shown!r}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


# --- parsing with limits ------------------------------------------------------------------


def check_size(text: str | bytes, what: str, max_bytes: int) -> None:
    """Raise :class:`DataError` for text over ``max_bytes`` (characters count as bytes: a
    check before encoding must not cost a copy)."""
    if len(text) > max_bytes:
        raise DataError(
            what, f"is too large ({_size_text(len(text))}; at most {_size_text(max_bytes)})"
        )


def check_depth(data: Any, what: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`DataError` for data whose tables and lists nest more than ``max_depth``
    levels. Walks without recursion, so any depth is measured safely."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Iterable[Any] = value.values()
        elif isinstance(value, (list, tuple)):
            children = value
        else:
            continue
        if depth > max_depth:
            raise DataError(what, f"is nested more than {max_depth} levels deep")
        stack.extend((child, depth + 1) for child in children)


def load_json_text(
    text: str | bytes, what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """JSON text as data, at most ``max_bytes`` long and ``max_depth`` levels deep.

    NaN and infinities (which Python's parser takes, JSON has not) are refused as well.

    Raises:
        DataError: For text too large, not JSON, or nested too deeply; ``what`` names it.
    """
    check_size(text, what, max_bytes)
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise MalformedError(
            what, f"is not valid JSON (line {err.lineno}, column {err.colno})"
        ) from None
    except UnicodeDecodeError:
        raise MalformedError(what, "is not valid JSON (not text)") from None
    except ValueError as err:  # NaN or Infinity, from _refuse_constant
        raise MalformedError(what, f"is not valid JSON ({err})") from None
    except RecursionError:
        raise DataError(what, f"is nested more than {max_depth} levels deep") from None
    check_depth(data, what, max_depth)
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON has")


def load_toml_text(
    text: str, what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> dict[str, Any]:
    """TOML text as a table, at most ``max_bytes`` long and ``max_depth`` levels deep.

    Raises:
        DataError: For text too large, not TOML, or nested too deeply; ``what`` names it.
        NeuroChipError: On Python 3.10, which has no TOML reader.
    """
    try:
        import tomllib  # the standard library's from Python 3.11
    except ImportError:
        raise NeuroChipError(f"Reading {what} needs Python 3.11 or later (tomllib).") from None
    check_size(text, what, max_bytes)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MalformedError(what, f"is not valid TOML: {err}") from None
    except RecursionError:
        raise DataError(what, f"is nested more than {max_depth} levels deep") from None
    check_depth(data, what, max_depth)
    return data


def read_text_file(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_BYTES) -> str:
    """A UTF-8 text file, refused before it is read when larger than ``max_bytes``.

    Raises:
        DataError: For a file too large, or not UTF-8 text.
        OSError: When it cannot be read; the caller says what that means where it is.
    """
    size = os.stat(path).st_size
    if size > max_bytes:
        raise DataError(what, f"is too large ({_size_text(size)}; at most {_size_text(max_bytes)})")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)  # a file growing meanwhile is cut, then refused
    check_size(data, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(what, "is not UTF-8 text") from None


# --- typed fields ---------------------------------------------------------------------------


def table(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a table (a JSON object) whose keys are text."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise DataError(what, f"must be a table, not {_kind(value)}")
    return dict(value)


def tables(value: Any, what: str, item: str) -> list[dict[str, Any]]:
    """``value`` as a list of tables; ``item`` names one in an error ("stem" -> "stem 2")."""
    if not isinstance(value, (list, tuple)):
        raise DataError(what, f"must be a list of tables, not {_kind(value)}")
    return [table(entry, f"{item} {i}") for i, entry in enumerate(value, start=1)]


def _missing(data: Mapping[str, Any], key: str, what: str, default: Any) -> bool:
    """Whether ``key`` is missing and ``default`` stands in; raises if it was required."""
    if key in data:
        return False
    if default is _REQUIRED:
        raise DataError(what, f'has no "{key}"') if what else DataError("", f'there is no "{key}"')
    return True


def field(data: Mapping[str, Any], key: str, what: str, default: Any = _REQUIRED) -> Any:
    """``data[key]`` as it is (``default`` when missing, if given)."""
    return default if _missing(data, key, what, default) else data[key]


def _named(what: str, key: str) -> str:
    """How an error names a field: 'stem 2's "gain_db"' ('"gain_db"' without ``what``)."""
    return f'{what}\'s "{key}"' if what else f'"{key}"'


def text(data: Mapping[str, Any], key: str, what: str, default: Any = _REQUIRED) -> Any:
    """``data[key]`` as text (``default`` when missing, if given; returned as it is)."""
    if _missing(data, key, what, default):
        return default
    value = data[key]
    if not isinstance(value, str):
        raise DataError(_named(what, key), f"must be text, not {_kind(value)}")
    return value


def number(
    data: Mapping[str, Any],
    key: str,
    what: str,
    *,
    low: float | None = None,
    high: float | None = None,
    default: Any = _REQUIRED,
) -> Any:
    """``data[key]`` as a finite number from ``low`` to ``high`` (``default`` when missing)."""
    if _missing(data, key, what, default):
        return default
    value = data[key]
    must = f"must be a number{_span(low, high)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(_named(what, key), f"{must}, not {_kind(value)}")
    # Compared as they are: a huge whole number is never turned into a float (OverflowError).
    if (
        (isinstance(value, float) and not math.isfinite(value))
        or (isinstance(value, int) and abs(value) > 1e300)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        raise DataError(_named(what, key), f"{must}, not {_number_text(value)}")
    return float(value)


def whole(
    data: Mapping[str, Any],
    key: str,
    what: str,
    *,
    low: int | None = None,
    high: int | None = None,
    default: Any = _REQUIRED,
) -> Any:
    """``data[key]`` as a whole number from ``low`` to ``high`` (``default`` when missing)."""
    if _missing(data, key, what, default):
        return default
    value = data[key]
    must = f"must be a whole number{_span(low, high)}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(_named(what, key), f"{must}, not {_kind(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise DataError(_named(what, key), f"{must}, not {_number_text(value)}")
    return value


def flag(data: Mapping[str, Any], key: str, what: str, default: Any = _REQUIRED) -> Any:
    """``data[key]`` as true or false (``default`` when missing)."""
    if _missing(data, key, what, default):
        return default
    value = data[key]
    if not isinstance(value, bool):
        raise DataError(_named(what, key), f"must be true or false, not {_kind(value)}")
    return value


def _number_text(value: float) -> str:
    """A number in a message, short even when it has thousands of digits."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"a number of {len(str(abs(value)))} digits"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _span(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" of at least {low:g}"
    return f" of at most {high:g}" if high is not None else ""


# --- file names -----------------------------------------------------------------------------


def check_file_name(path: str | os.PathLike[str]) -> None:
    """Raise for a file name no OS takes: one with a NUL character (Python would raise
    ``ValueError: embedded null byte`` at the first use)."""
    name = os.fspath(path)
    if "\x00" in name:
        raise NeuroChipError(
            f"File names cannot contain a NUL character (\\x00): {name!r}. Give another name."
        )


def check_file_names(paths: Iterable[str | os.PathLike[str] | None]) -> None:
    """:func:`check_file_name` for each path given (``None`` is skipped)."""
    for path in paths:
        if path is not None:
            check_file_name(path)
