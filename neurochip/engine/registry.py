"""Which backend renders each kind of model: the one place a new model is registered.

The shared engine asks here for a backend and never imports one itself, so it stays free of
model internals. A kind names the module and class of its backend, imported only when used
(a model's dependencies load with it, not with NeuroChip).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from neurochip.errors import NeuroChipError

if TYPE_CHECKING:
    from neurochip.engine.backend import Backend
    from neurochip.model_spec import ModelSpec

#: Engine kind -> (module, class) of its backend.
BACKENDS: dict[str, tuple[str, str]] = {
    "riffusion": ("neurochip.engine.riffusion", "RiffusionBackend"),
    "ace-step": ("neurochip.engine.ace_step", "AceStepBackend"),
    "stable-audio-3": ("neurochip.engine.stable_audio_3", "StableAudio3Backend"),
}


def backend_class(kind: str) -> Any:
    """The backend class of an engine kind."""
    if kind not in BACKENDS:
        known = ", ".join(sorted(BACKENDS))
        raise NeuroChipError(f"No engine of kind {kind!r}: choose one of {known}.")
    module, name = BACKENDS[kind]
    return getattr(importlib.import_module(module), name)


def load_backend(spec: ModelSpec, local_files_only: bool | None = None, **options: Any) -> Backend:
    """The backend ``spec`` asks for, its model loaded (see each backend's ``from_spec``)."""
    return backend_class(spec.kind).from_spec(spec, local_files_only, **options)


def backend_for_model(model: Any, **options: Any) -> Backend:
    """A backend around a model already loaded (a :class:`~neurochip.model.RiffusionModel`
    built by hand or by the tests)."""
    return backend_class("riffusion")(model, **options)
