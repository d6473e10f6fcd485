"""Which model renders, on what: one typed :class:`ModelSpec` for every front end.

The app's Model page, the CLI's ``--model/--dtype/--lora/...`` options, the server and a Ray
cluster's workers all say the model they want as a ``ModelSpec``, and
``Engine.from_pretrained(spec)`` is the one place that turns one into an engine (its kind picks
the backend, :mod:`neurochip.engine.registry`). Every take
records the spec that made it (``metadata["model_spec"]``); :meth:`ModelSpec.of_take` reads
it back, older takes included.

Each field carries a :class:`~neurochip.settings.Setting` (label and help, written once) as
the render settings do: the CLI's ``--help`` and the app's labels and tooltips come from
there (:func:`neurochip.settings.describe` reads them).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurochip.device import DEVICE_CHOICES
from neurochip.errors import NeuroChipError
from neurochip.kinds import ABOUT_KINDS, KIND_DEFAULTS, KIND_KNOBS, KIND_NAMES, KINDS
from neurochip.model import COMPILE_MODES, DEFAULT_MODEL_ID, DTYPES
from neurochip.setting_fields import describe, setting_field

#: ACE-Step's diffusers checkpoint NeuroChip loads by default (MIT licence).
DEFAULT_ACE_STEP_ID = "ACE-Step/acestep-v15-xl-turbo-diffusers"

#: Stable Audio 3's diffusers checkpoints: Medium (the default; a GPU's) and Small Music (made
#: to run on a laptop's CPU). Both under the Stability AI Community License, gated on the hub.
DEFAULT_STABLE_AUDIO_3_ID = "stabilityai/stable-audio-3-medium"
STABLE_AUDIO_3_SMALL_ID = "stabilityai/stable-audio-3-small-music"

#: Each kind's default source.
DEFAULT_SOURCES = {
    "riffusion": DEFAULT_MODEL_ID,
    "ace-step": DEFAULT_ACE_STEP_ID,
    "stable-audio-3": DEFAULT_STABLE_AUDIO_3_ID,
}

#: Each kind's small model where it has one, the one recommended for a CPU
#: (:func:`neurochip.kinds.cpu_advice`): what Compare engines offers when it is on the machine
#: and the kind's default is not.
SMALL_SOURCES = {"stable-audio-3": STABLE_AUDIO_3_SMALL_ID}


#: The options only Riffusion's loader takes (ACE-Step refuses them rather than ignore them).
RIFFUSION_ONLY = ("lora", "compile", "channels_last", "preview_vae")

#: How an old take's ``"model"`` says a fused LoRA (:func:`neurochip.lora.apply_lora`).
_OLD_LORA = re.compile(r"^(?P<source>.+?) \+ LoRA (?P<lora>.+) x(?P<scale>[0-9.eE+-]+)$")


@dataclass(frozen=True)
class ModelSpec:
    """Which model renders, on what: everything :meth:`load` needs to make an engine.

    Frozen and hashable: a spec keys the engines a server keeps loaded.
    """

    kind: str = setting_field(
        "riffusion",
        label="Engine",
        help="Which kind of model renders: riffusion (Riffusion, or any Stable Diffusion 1.x "
        "model; the default), ace-step (ACE-Step 1.5: whole-song covers, repaint, an added "
        "part) or stable-audio-3 (Stable Audio 3: fast variations, inpainting).",
    )
    source: str = setting_field(
        DEFAULT_MODEL_ID,
        label="Model",
        help=f"A Hugging Face hub id ({DEFAULT_MODEL_ID}; for ACE-Step "
        f"{DEFAULT_ACE_STEP_ID}; for Stable Audio 3 {DEFAULT_STABLE_AUDIO_3_ID} or, on a CPU, "
        f"{STABLE_AUDIO_3_SMALL_ID}), a local folder in diffusers layout, or (Riffusion) a single "
        ".safetensors file.",
    )
    device: str = setting_field(
        "auto",
        label="Device",
        help="Where to compute: auto (the best found), cuda, mps or cpu. A CUDA GPU or Apple "
        "MPS is much faster.",
    )
    dtype: str = setting_field(
        "auto",
        label="Number format",
        help="auto is fp16 on CUDA GPUs (fast, half the memory) and fp32 elsewhere; fp32, fp16 "
        "or bf16 ask for one.",
    )
    lora: str = setting_field(
        "",
        label="LoRA (optional)",
        help="A LoRA fused into the model: a .safetensors file, a folder or a hub id (only "
        ".safetensors files are read). latent-consistency/lcm-lora-sdv1-5 with the lcm "
        "scheduler, 8 steps and guidance 1-2 makes fast drafts (not yet checked by ear on "
        "Riffusion). Empty: none.",
    )
    lora_scale: float = setting_field(
        1.0,
        label="LoRA strength",
        help="How strongly the LoRA changes the model: more than 0 and at most 2 (1: as trained).",
        minimum=0.05,
        maximum=2.0,
        step=0.05,
    )
    compile: str = setting_field(
        "",
        label="Compile",
        help="torch.compile the model: faster renders on a GPU after a one-time compile of a "
        "minute or more (worth it for long songs and batches). Modes: "
        + ", ".join(COMPILE_MODES)
        + "; reduce-overhead also records CUDA graphs, max-autotune searches kernels (a "
        "longer compile). Empty: off.",
    )
    channels_last: bool = setting_field(
        False,
        label="Channels last",
        help="Keep the model's weights in channels-last memory order (often faster on GPUs "
        "with tensor cores; the same takes up to float rounding).",
    )
    preview_vae: str = setting_field(
        "",
        label="Preview VAE (optional)",
        help="A tiny VAE (TAESD, about 10 MB: madebyollin/taesd) that decodes quick previews "
        "in a fraction of the time: a local folder or a hub id. Its pictures are close to the "
        "model's own, not the same, so takes are always decoded by the model's VAE. Empty: "
        "none.",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            label = f.metadata["setting"].label
            if f.type == "str" and not isinstance(value, str):
                raise NeuroChipError(f"{label} ({f.name}) must be text, not {_shown(value)}.")
            if f.type == "bool" and not isinstance(value, bool):
                raise NeuroChipError(
                    f"{label} ({f.name}) must be true or false, not {_shown(value)}."
                )
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise NeuroChipError(
                        f"{label} ({f.name}) must be a number, not {_shown(value)}."
                    )
                if not math.isfinite(value):
                    raise NeuroChipError(f"{label} ({f.name}) must be a finite number.")
                object.__setattr__(self, f.name, float(value))  # 1 and 1.0: one spec
        if self.kind not in KINDS:
            raise NeuroChipError(
                f"Unknown engine kind {self.kind!r}: NeuroChip knows {', '.join(KINDS)}."
            )

    @classmethod
    def for_kind(cls, kind: str, **fields: Any) -> ModelSpec:
        """A spec of engine ``kind`` with that kind's default source unless one is given."""
        if kind not in KINDS:
            raise NeuroChipError(
                f"Unknown engine kind {kind!r}: NeuroChip knows {', '.join(KINDS)}."
            )
        return cls(kind=kind, **({"source": DEFAULT_SOURCES[kind]} | fields))

    # -- as data ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (see :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """The spec ``data`` (JSON, TOML) holds: keys it does not know are left out (a newer
        NeuroChip's), missing ones take their defaults.

        Raises:
            NeuroChipError: ``data`` is not a table, a field holds the wrong type, or the
                kind is not one NeuroChip knows.
        """
        if isinstance(data, ModelSpec):
            return data
        if not isinstance(data, Mapping):
            raise NeuroChipError(f"A model spec must be a table of fields, not {_shown(data)}.")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def of_take(cls, metadata: Any) -> ModelSpec:
        """The spec that made a take, from its metadata (:func:`~neurochip.library.metadata.
        take_metadata`).

        A take records it as ``"model_spec"``; a take made before that is a Riffusion one
        whose ``"model"`` names the source (and a LoRA fused into it, by file name and
        strength: ``"riffusion/riffusion-model-v1 + LoRA style.safetensors x0.8"``).

        Raises:
            NeuroChipError: The take's ``"model_spec"`` is damaged (the message says so).
        """
        metadata = metadata if isinstance(metadata, Mapping) else {}
        recorded = metadata.get("model_spec")
        if recorded is not None:
            try:
                return cls.from_dict(recorded)
            except NeuroChipError as err:
                raise NeuroChipError(f"The take's model spec is damaged: {err}") from None
        model = metadata.get("model")
        if not isinstance(model, str) or not model.strip():
            return cls()
        old = _OLD_LORA.match(model)
        if old is not None:
            try:
                scale = float(old["scale"])
            except ValueError:
                scale = math.nan
            if math.isfinite(scale):
                return cls(source=old["source"], lora=old["lora"], lora_scale=scale)
        return cls(source=model)

    @classmethod
    def of_take_if_known(cls, metadata: Any) -> ModelSpec | None:
        """:meth:`of_take` where the take says its model, ``None`` where it does not (made
        by hand, not rendered) or its record of it is damaged: for what only informs."""
        metadata = metadata if isinstance(metadata, Mapping) else {}
        if "model_spec" not in metadata and not isinstance(metadata.get("model"), str):
            return None
        try:
            return cls.of_take(metadata)
        except NeuroChipError:
            return None

    def describe(self) -> str:
        """Short text for people: "riffusion/riffusion-model-v1, on cuda, fp16, LoRA
        style.safetensors x0.8" (what is left at its default is not said)."""
        named = self.kind == "riffusion" or not self.source
        parts = [self.source if named else f"{KIND_NAMES[self.kind]} {self.source}"]
        if self.device != "auto":
            parts.append(f"on {self.device}")
        if self.dtype != "auto":
            parts.append(self.dtype)
        if self.lora:
            parts.append(f"LoRA {Path(self.lora).name or self.lora} x{self.lora_scale:g}")
        if self.compile:
            parts.append("compiled" + ("" if self.compile == "default" else f" ({self.compile})"))
        if self.channels_last:
            parts.append("channels last")
        if self.preview_vae:
            parts.append(f"preview VAE {self.preview_vae}")
        return ", ".join(parts)

    def same_model(self, other: ModelSpec) -> bool:
        """Whether ``other`` loads the same weights: kind, source, LoRA and its strength (what
        decides the sound). Device, number format, compile and memory layout change a take
        by float rounding at most; the preview VAE never decodes a take. A LoRA is compared
        by file name (an old take names it so)."""

        def weights(spec: ModelSpec) -> tuple[Any, ...]:
            lora = Path(spec.lora).name if spec.lora else ""
            scale = spec.lora_scale if spec.lora else None
            return spec.kind, spec.source.rstrip("/\\"), lora, scale

        return weights(self) == weights(other)

    # -- before and at the load ------------------------------------------------------------------

    def check(self, local_files_only: bool | None = None, *, files: bool = True) -> None:
        """Raise now, before the slow load, for what can be found wrong without the model.

        The kind, device, number format and compile mode are ones NeuroChip knows; a LoRA's
        strength is more than 0 and at most :data:`~neurochip.lora.MAX_LORA_SCALE`; with
        ``files``, the LoRA is a ``.safetensors`` file that is there (a hub id: in the
        Hugging Face cache, or fetched unless ``local_files_only``). ``files=False`` for a
        spec loaded on another machine (a Ray cluster's workers), whose files this one may
        not have.

        Raises:
            NeuroChipError: Saying which field is wrong and what it may be.
        """
        from neurochip.lora import MAX_LORA_SCALE, lora_file

        if self.kind not in KINDS:  # as the constructor: said here too, with the rest
            raise NeuroChipError(
                f"Unknown engine kind {self.kind!r}: NeuroChip knows {', '.join(KINDS)}."
            )
        name, _, index = self.device.partition(":")
        if name not in DEVICE_CHOICES or (index and (name != "cuda" or not index.isdigit())):
            raise NeuroChipError(
                f"Unknown device {self.device!r}: choose one of {', '.join(DEVICE_CHOICES)} "
                "(or cuda:N)."
            )
        if self.dtype not in DTYPES:
            raise NeuroChipError(
                f"Unknown number format {self.dtype!r}: choose one of {', '.join(DTYPES)}."
            )
        if self.compile and self.compile not in COMPILE_MODES:
            raise NeuroChipError(
                f"Unknown compile mode {self.compile!r}: choose one of "
                f"{', '.join(COMPILE_MODES)} (or none)."
            )
        if self.kind != "riffusion":
            used = [f for f in RIFFUSION_ONLY if getattr(self, f)]
            if used:
                label = describe(ModelSpec, used[0]).label.replace(" (optional)", "")
                raise NeuroChipError(
                    f"{label} is a Riffusion option: {self.kind} does not take it. Clear it, "
                    "or choose the riffusion engine."
                )
        if self.lora:
            if not 0.0 < self.lora_scale <= MAX_LORA_SCALE:
                raise NeuroChipError(
                    f"LoRA strength must be more than 0 and at most {MAX_LORA_SCALE:g}, not "
                    f"{self.lora_scale:g}."
                )
            if files:
                lora_file(self.lora, local_files_only)  # a wrong path, a pickle file


def _shown(value: Any) -> str:
    """A value in a message: as written, or its type where that would be long."""
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


__all__ = [
    "ABOUT_KINDS",
    "KIND_DEFAULTS",
    "DEFAULT_ACE_STEP_ID",
    "DEFAULT_SOURCES",
    "DEFAULT_STABLE_AUDIO_3_ID",
    "KIND_KNOBS",
    "KIND_NAMES",
    "KINDS",
    "SMALL_SOURCES",
    "STABLE_AUDIO_3_SMALL_ID",
    "ModelSpec",
]
