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
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neurochip.device import resolve_device
from neurochip.errors import ModelNotFoundError, NeuroChipError
from neurochip.settings import SCHEDULER_NAMES

#: The published Riffusion model on the Hugging Face hub.
DEFAULT_MODEL_ID = "riffusion/riffusion-model-v1"

#: Scheduler names users pick from, and the diffusers class (and options) behind each.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
}
DEFAULT_SCHEDULER = "dpm++"
# The names composers choose from are listed with the settings; each needs its class here.
assert tuple(SCHEDULERS) == SCHEDULER_NAMES, "neurochip.settings.SCHEDULER_NAMES is out of date"

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
        tokens = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)

    def describe(self) -> str:
        params = sum(p.numel() for p in self.unet.parameters()) / 1e6
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.source} on {self.device} ({dtype}, UNet {params:.0f}M parameters)"


def scheduler_spec(name: str) -> tuple[str, dict[str, Any]]:
    try:
        return SCHEDULERS[name]
    except KeyError:
        raise NeuroChipError(
            f"Unknown scheduler {name!r}: choose one of {', '.join(SCHEDULERS)}."
        ) from None


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


def _missing_weights(source: str, reason: str) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    return ModelNotFoundError(
        f"The Riffusion model weights could not be loaded from {source!r} ({reason}). "
        f"To get them: run `huggingface-cli download {DEFAULT_MODEL_ID}` once on a machine "
        "with internet access (about 4 GB, kept in the Hugging Face cache"
        + (", and HF_HUB_OFFLINE is set here, so nothing is downloaded" if offline else "")
        + "), or pass --model with a local folder in diffusers layout or a .safetensors file."
    )


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
    """
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    source = str(source)
    path = Path(source).expanduser()
    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")

    with warnings.catch_warnings():
        # The hub client's internal deprecation notices mean nothing to a composer.
        warnings.simplefilter("ignore", UserWarning)
        parts = _load_parts(source, path, torch_dtype, local_files_only)
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


def _load_parts(source: str, path: Path, dtype: torch.dtype, local_files_only: bool):
    if path.is_file():
        return _load_single_file(path, dtype)
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise _missing_weights(source, "the folder has no model_index.json or unet/")
        return _load_diffusers_parts(str(path), dtype, local_files_only=True)
    if path.suffix in (".safetensors", ".ckpt") or source.startswith((".", "/", "~")):
        raise _missing_weights(source, "no such file or folder")
    return _load_diffusers_parts(source, dtype, local_files_only)


def _load_diffusers_parts(source: str, dtype: torch.dtype, local_files_only: bool):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.schedulers import PNDMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    options = {"local_files_only": local_files_only}
    try:
        unet = UNet2DConditionModel.from_pretrained(
            source, subfolder="unet", torch_dtype=dtype, **options
        )
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **options)
        text_encoder = CLIPTextModel.from_pretrained(
            source, subfolder="text_encoder", torch_dtype=dtype, **options
        )
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **options)
        scheduler_config = PNDMScheduler.load_config(source, subfolder="scheduler", **options)
    except (OSError, ValueError) as err:
        # The hub client raises OSError subclasses for every flavour of "not here"
        # (offline, not cached, no such repo, gated); a wrong layout raises ValueError.
        if local_files_only and not Path(source).is_dir():
            from huggingface_hub.constants import HF_HUB_CACHE

            raise _missing_weights(source, f"not in the Hugging Face cache {HF_HUB_CACHE}") from err
        raise _missing_weights(source, _first_line(err)) from err
    return unet, vae, text_encoder, tokenizer, scheduler_config


def _load_single_file(path: Path, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline

    if path.suffix not in (".safetensors", ".ckpt"):
        raise _missing_weights(str(path), "expected a .safetensors or .ckpt file")
    try:
        # diffusers reads .ckpt files with torch.load(weights_only=True): tensors only, no code.
        pipeline = StableDiffusionPipeline.from_single_file(
            str(path),
            torch_dtype=dtype,
            load_safety_checker=False,
            local_files_only=os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"),
        )
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise _missing_weights(str(path), _first_line(err)) from err
    return (
        pipeline.unet,
        pipeline.vae,
        pipeline.text_encoder,
        pipeline.tokenizer,
        pipeline.scheduler.config,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
