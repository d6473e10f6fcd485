"""Loading a diffusers pipeline for a backend: the checkpoint a spec names, safetensors only.

The newer engines (ACE-Step, Stable Audio 3) are each one diffusers pipeline; they load the
same way, and a missing checkpoint says the same kind of thing: where it was looked for and
how to get it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurochip.errors import ModelLoadError, ModelNotFoundError

if TYPE_CHECKING:
    from neurochip.model_spec import ModelSpec


def load_pipeline(
    pipeline_class: Any,
    spec: ModelSpec,
    local_files_only: bool | None,
    name: str,
    how_to_get: str,
) -> Any:
    """``pipeline_class`` from ``spec.source`` (hub id or local folder in diffusers layout),
    safetensors weights only (no pickle code runs), in the number format asked, on the device,
    its progress bars off. ``name`` is the model as a composer reads it; ``how_to_get`` ends
    the message when the weights are not there."""
    from neurochip.device import resolve_device
    from neurochip.model import resolve_dtype
    from neurochip.model_files import _is_hub_miss, hub_offline, quiet_loaders

    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    offline = hub_offline() if local_files_only is None else local_files_only
    source = spec.source
    if _looks_like_a_path(source) and not Path(source).expanduser().is_dir():
        raise ModelNotFoundError(f"No {name} model folder at {source!r}. {how_to_get}")
    try:
        with quiet_loaders():
            pipe = pipeline_class.from_pretrained(
                source, dtype=dtype, local_files_only=offline, use_safetensors=True
            )
    except (OSError, ValueError) as err:
        text = str(err)
        if _is_hub_miss(err) or "does not appear to have" in text or "not found" in text.lower():
            raise ModelNotFoundError(
                f"The {name} weights could not be loaded from {source!r}. {how_to_get}"
            ) from None
        raise ModelLoadError(f"The {name} model in {source!r} cannot be used: {err}") from None
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _looks_like_a_path(source: str) -> bool:
    """A folder, not a hub id: absolute, relative with ./ or ~, or more than owner/name."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source
