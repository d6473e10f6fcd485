"""How one setting is described and checked: the label, help and range a dataclass field
carries (:class:`Setting`), read by the CLI's ``--help``, the app's tooltips and the README's
table, and the checks every settings class shares (types, ranges, tables read from files).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from neurochip.errors import NeuroChipError


@dataclass(frozen=True)
class Setting:
    """What a composer is told about one setting."""

    label: str  # as the app shows it
    help: str  # one paragraph: what it does to the sound
    useful: str = ""  # the useful range, for the README table ("" keeps it out of the table)
    minimum: float | None = None  # for sliders; the real limits: `limits`, or the dataclass's check
    maximum: float | None = None
    step: float | None = None
    # The values the dataclass takes, where it checks them by this (:func:`within_limits`):
    # one range for a setting and every override of it (a section's, a stem's).
    limits: tuple[float, float] | None = None


def setting_field(default: Any, **about: Any) -> Any:
    """A dataclass field described by a :class:`Setting` (label, help, range)."""
    return field(default=default, metadata={"setting": Setting(**about)})


def setting_like(settings_class: type, name: str) -> Any:
    """A dataclass field described as field ``name`` of ``settings_class`` is, with its
    default (a stem's denoise is an override's)."""
    return field(
        default=default_of(settings_class, name),
        metadata={"setting": describe(settings_class, name)},
    )


def _field(settings_class: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(settings_class):
        if f.name == name:
            return f
    raise KeyError(name)


def describe(settings_class: type, name: str) -> Setting:
    """The :class:`Setting` of field ``name`` of a settings dataclass."""
    return _field(settings_class, name).metadata["setting"]


def default_of(settings_class: type, name: str) -> Any:
    """The default value of field ``name`` of a settings dataclass."""
    return _field(settings_class, name).default


def help_text(settings_class: type, name: str) -> str:
    return describe(settings_class, name).help


def within_limits(settings_class: type, name: str, value: float) -> tuple[bool, str]:
    """``value`` checked against the :attr:`Setting.limits` of field ``name``: (ok, what is
    wrong, as a composer reads it: "guidance must be 0-50, not 70")."""
    about = describe(settings_class, name)
    if about.limits is None:
        raise TypeError(f"{settings_class.__name__}.{name} has no limits to check")
    low, high = about.limits
    span = f"between {low:g} and {high:g}" if (low, high) == (0, 1) else f"{low:g}-{high:g}"
    return low <= value <= high, f"{about.label.lower()} must be {span}, not {value}"


def table_of(settings_class: type, data: Any, what: str) -> dict[str, Any]:
    """``data`` (JSON, TOML) checked as the fields of ``settings_class``: a table, with no
    key the class does not have ("Unknown section settings: volume.")."""
    if not isinstance(data, dict):
        raise NeuroChipError(f"A {what} must be a table of settings, not {data!r}.")
    unknown = set(data) - {f.name for f in dataclasses.fields(settings_class)}
    if unknown:
        raise NeuroChipError(f"Unknown {what} settings: {', '.join(sorted(unknown))}.")
    return dict(data)


def _check_plain_types(settings_class: type, data: dict[str, Any]) -> None:
    """Text and true/false fields of ``data`` (JSON, TOML) hold text and true/false.

    The dataclasses check their numbers themselves (:func:`_check_numbers`); a prompt that is
    a number or a list would otherwise get as far as the tokenizer.
    """
    for f in dataclasses.fields(settings_class):
        if f.name not in data:
            continue
        value = data[f.name]
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if value is None and "None" in kind:
            continue
        about = f.metadata.get("setting")
        label = about.label if about is not None else f.name
        if kind.startswith("str") and not isinstance(value, str):
            raise NeuroChipError(f"{label} must be text, not {_shown(value)}.")
        if kind == "bool" and not isinstance(value, bool):
            raise NeuroChipError(f"{label} must be true or false, not {_shown(value)}.")


def _shown(value: Any) -> str:
    """A value in a message: as written, or its type where that would be long."""
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise NeuroChipError(message[0].upper() + message[1:] + ".")


def _check_numbers(settings: Any) -> None:
    """Every number field holds a finite number of its type (``None`` where allowed).

    Runs before the range checks, so those never compare a string or NaN, and no NaN or
    infinity reaches a file's metadata (JSON has no way to write them).
    """
    for f in dataclasses.fields(settings):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        value = getattr(settings, f.name)
        if not kind.startswith(("int", "float")) or (value is None and "None" in kind):
            continue
        label = f.metadata["setting"].label
        if kind.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise NeuroChipError(f"{label} must be a whole number, not {value!r}.")
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise NeuroChipError(f"{label} must be a number, not {value!r}.")
        elif not math.isfinite(value):
            raise NeuroChipError(f"{label} must be a finite number, not {value}.")
