"""Loading the Riffusion model from diffusers building blocks.

The model is Stable Diffusion 1.5 fine-tuned on spectrograms. We load its parts (UNet, VAE, CLIP
text encoder and tokenizer, scheduler config) as plain objects in a :class:`RiffusionModel`, so
the engine can be handed any model built the same way, including the tiny random one tests use.
No safety checker: spectrograms are not photographs.

Sources, in the order they are tried:
- a local folder in diffusers layout (``model_index.json``, ``unet/``, ``vae/``, ...),
- a single ``.safetensors`` or ``.ckpt`` checkpoint in Stable Diffusion's original layout
  (``.ckpt`` pickles are read with ``weights_only=True``, so no code in them ever runs),
- a Hugging Face hub id, through the normal cache (``HF_HOME``, ``HF_HUB_OFFLINE`` honoured).

Each part is loaded and checked on its own, so a model that cannot be used fails at load time
with one line naming the part (its file, what is wrong with it, what to do): a damaged or
swapped file, a pickle that would run code, a tokenizer without its vocabulary, parts that do
not fit together. Only weights that are not here at all get advice to download them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurochip.device import resolve_device
from neurochip.errors import NeuroChipError
from neurochip.model_files import (  # noqa: F401 (re-exported)
    DEFAULT_MODEL_ID,
    _check_parts,
    _check_scheduler,
    _load_parts,
    _missing_weights,
    _tokenize,
    hub_offline,
    owner_slash_name,
    quiet_loaders,
)
from neurochip.schedulers import DEFAULT_SCHEDULER, SCHEDULERS, scheduler_spec  # noqa: F401

#: ``torch.compile`` modes offered: ``reduce-overhead`` adds CUDA graphs, ``max-autotune``
#: also searches kernel configurations (a longer compile).
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune")

DTYPES = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RiffusionModel:
    """The parts of a Riffusion (Stable Diffusion 1.x) model, ready on one device."""

    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    text_encoder: Any  # transformers.CLIPTextModel
    tokenizer: Any  # transformers.CLIPTokenizer
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    source: str
    compiled: bool = False  # the UNet went through torch.compile (see compile_unet)
    # torch.compile's options it went through with: feature reuse compiles its paths alike.
    compile_options: dict | None = None
    channels_last: bool = False  # weights in channels-last order (see use_channels_last)
    # A tiny VAE for quick previews (neurochip.preview_vae), None: previews use ``vae``.
    preview_vae: Any = None
    preview_vae_source: str = ""

    @property
    def vae_scale(self) -> int:
        """Image pixels per latent pixel (8 for Stable Diffusion)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_multiple(self) -> int:
        """Latent sizes the UNet takes must be multiples of this (8 for Stable Diffusion)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def latent_scaling(self) -> float:
        return float(self.vae.config.scaling_factor)

    def make_scheduler(self, name: str = DEFAULT_SCHEDULER) -> Any:
        """A fresh scheduler (they keep per-render state) built from the model's config."""
        import diffusers

        class_name, options = scheduler_spec(name)
        return getattr(diffusers, class_name).from_config(self.scheduler_config, **options)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """CLIP embedding of a prompt, (1, 77, dim), as Stable Diffusion conditions on it."""
        tokens = _tokenize(self.tokenizer, prompt)
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)

    def compile_unet(self, backend: str = "inductor", mode: str = "default") -> None:
        """Compile the UNet with ``torch.compile``: faster on a GPU once compiled (a minute or
        more, at the first call; a new window width or batch size may compile again).

        ``mode`` is one of :data:`COMPILE_MODES`: ``reduce-overhead`` also records CUDA
        graphs of the fixed window shape, so a step's calls launch as one graph each (one
        graph per batch size met; the CPU ignores it). Feature reuse compiles its own two
        paths (the full one keeping deep features, the shallow one) with the same options.
        """
        if mode not in COMPILE_MODES:
            raise NeuroChipError(
                f"Unknown compile mode {mode!r}: choose one of {', '.join(COMPILE_MODES)}."
            )
        self.compile_options = {"backend": backend, "mode": None if mode == "default" else mode}
        self.unet = torch.compile(self.unet, **self.compile_options)
        self.compiled = True

    def use_channels_last(self) -> None:
        """Keep the UNet's and VAE's weights in channels-last memory order, which a GPU's
        tensor-core convolutions read without a transpose; results equal up to float
        rounding."""
        self.unet.to(memory_format=torch.channels_last)
        self.vae.to(memory_format=torch.channels_last)
        self.channels_last = True

    def describe(self) -> str:
        params = sum(p.numel() for p in self.unet.parameters())
        # Riffusion's UNet is 860M; a test's tiny one is a few hundred thousand, not "0M".
        count = f"{params / 1e6:.0f}M" if params >= 1e6 else f"{params / 1e3:.0f}k"
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.source} on {self.device} ({dtype}, UNet {count} parameters)"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere, unless asked (bf16 where the GPU supports it)."""
    if name not in DTYPES:
        raise NeuroChipError(f"Unknown dtype {name!r}: choose one of {', '.join(DTYPES)}.")
    dtype = DTYPES[name]
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype == torch.float16 and device.type == "cpu":
        raise NeuroChipError("fp16 is for GPUs; on the CPU use fp32 (the default) or bf16.")
    return dtype


def load_model(
    source: str | Path = DEFAULT_MODEL_ID,
    device: str = "auto",
    dtype: str = "auto",
    local_files_only: bool | None = None,
) -> RiffusionModel:
    """Load the Riffusion model (or any Stable Diffusion 1.x model) for rendering.

    Args:
        source: hub id, local diffusers folder, or a single ``.safetensors``/``.ckpt`` file.
        device: ``auto|cuda|mps|cpu``; auto picks the best available.
        dtype: ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp32``, ``fp16`` or ``bf16``.
        local_files_only: never touch the network (default: ``HF_HUB_OFFLINE``).

    Raises:
        ModelNotFoundError: the weights are not available; the message says how to get them.
        ModelLoadError: the model is here but a part of it cannot be used (damaged, refused,
            from another model); the message names the part and never says to download.
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = str(source)
    path = Path(source).expanduser()
    if local_files_only is None:
        local_files_only = hub_offline()

    with warnings.catch_warnings(), quiet_loaders():
        # The hub client's internal deprecation notices mean nothing to a composer.
        warnings.simplefilter("ignore", UserWarning)
        parts = _load_parts(source, path, torch_dtype, local_files_only)
    _check_parts(*parts[:4], source=source, path=path)
    _check_scheduler(parts[4], source=source, path=path, build=True)
    return assemble_model(*parts, device=torch_device, dtype=torch_dtype, source=source)


def assemble_model(
    unet: Any,
    vae: Any,
    text_encoder: Any,
    tokenizer: Any,
    scheduler_config: dict[str, Any],
    *,
    device: torch.device,
    dtype: torch.dtype,
    source: str,
) -> RiffusionModel:
    """Put loaded (or freshly built) parts on one device, ready for inference."""
    for module in (unet, vae, text_encoder):
        module.to(device, dtype).eval().requires_grad_(False)
    # PyTorch's fused scaled-dot-product attention: the fastest and leanest on every backend.
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    vae.set_attn_processor(AttnProcessor2_0())
    if device.type == "cuda":
        # Windows and VAE tiles are of a few fixed shapes: cuDNN's pick of the fastest
        # convolution for each, made once, pays for itself within a render.
        torch.backends.cudnn.benchmark = True
    return RiffusionModel(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=dict(scheduler_config),
        device=device,
        dtype=dtype,
        source=source,
    )
