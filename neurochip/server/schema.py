"""The shapes a request's JSON must have, checked at the door (pydantic) before anything is
read, synthesised or queued.

The render settings' schema is made from the settings dataclasses' own fields
(:class:`RenderSettings`, :class:`TakeSetOptions`, :class:`Section`), so it never drifts from
them: a new setting is a new field there and is taken here at once. The dataclasses still
check ranges ("Denoise must be between 0 and 1"); this checks types and nesting, so a prompt
of ``5`` or a section without a prompt is a 422 that says which field, never a 500 later.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from neurochip.errors import NeuroChipError
from neurochip.settings import RenderSettings, Section, TakeSetOptions

#: The longest settings JSON taken (a long prompt timeline is a few kB).
MAX_SETTINGS_CHARS = 64 * 1024

_STRICT = ConfigDict(extra="forbid", strict=True)


def _model_of(settings_class: type, name: str, **replace: Any) -> type[BaseModel]:
    """A strict pydantic model of a settings dataclass's fields (``replace``: other types)."""
    hints = typing.get_type_hints(settings_class)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(settings_class):
        default = ... if f.default is dataclasses.MISSING else f.default
        fields[f.name] = (replace.get(f.name, hints[f.name]), default)
    return create_model(name, __config__=_STRICT, **fields)


SectionBody = _model_of(Section, "Section")
_FIELDS = {
    **_model_of(RenderSettings, "Render", sections=list[SectionBody]).model_fields,
    **_model_of(TakeSetOptions, "Options").model_fields,
}
RenderBody = create_model(
    "RenderRequestSettings",
    __config__=_STRICT,
    **{name: (info.annotation, info.default) for name, info in _FIELDS.items()},
    version=(int, 0),
    stems=(bool, False),
    stem=(list[str], []),
)


def read_settings(text: str) -> dict[str, Any]:
    """A render request's ``settings`` field -> the keys it set, their types checked.

    Raises:
        NeuroChipError: For JSON that is not an object of known settings of the right types,
            saying which key (``sections.0.prompt: Field required``).
    """
    if len(text) > MAX_SETTINGS_CHARS:
        raise NeuroChipError(
            f"The settings are {len(text):,} characters: at most {MAX_SETTINGS_CHARS:,} are taken."
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise NeuroChipError(f"The settings are not valid JSON: {err}.") from None
    except RecursionError:
        raise NeuroChipError("The settings are nested too deeply to be settings.") from None
    if not isinstance(data, dict):
        raise NeuroChipError(
            'The settings must be a JSON object of settings, e.g. {"prompt": "a funk band"}.'
        )
    unknown = sorted(set(data) - set(RenderBody.model_fields))
    if unknown:
        raise NeuroChipError(f"Unknown settings: {', '.join(map(str, unknown))}.")
    try:
        checked = RenderBody.model_validate_json(text)
    except ValidationError as err:
        raise NeuroChipError(f"Bad settings: {said(err)}.") from None
    if not checked.prompt.strip():
        raise NeuroChipError('Say what the band should sound like: give a "prompt".')
    return checked.model_dump(exclude_unset=True, exclude={"version"})


def said(err: ValidationError) -> str:
    """A pydantic error as one line: ``where: what`` for each problem."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
        for e in err.errors()[:5]
    )
