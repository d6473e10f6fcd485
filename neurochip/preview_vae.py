"""A tiny VAE (TAESD) that decodes quick previews' latents in a fraction of the full VAE's time.

TAESD (``madebyollin/taesd``, diffusers' ``AutoencoderTiny``, ~10 MB) is distilled to decode
Stable Diffusion 1.x latents, the ones the UNet denoises, straight to pictures: it has no
latent scaling of its own (its ``scaling_factor`` is 1.0). Its pictures are close to the full
VAE's but not equal, so it is for previews only (:data:`~neurochip.engine.QUICK_PREVIEW`
decodes with it when one is attached); takes are always decoded with the model's own VAE.
Whether its spectrograms sound close enough is for a listening check on the real weights.

    use_preview_vae(model, "madebyollin/taesd")  # load_preview_vae + attach_preview_vae
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from neurochip.errors import ModelLoadError, ModelNotFoundError
from neurochip.model import RiffusionModel, hub_offline, owner_slash_name, quiet_loaders

#: The published TAESD for Stable Diffusion 1.x latents.
DEFAULT_PREVIEW_VAE_ID = "madebyollin/taesd"


def load_preview_vae(
    source: str | Path = DEFAULT_PREVIEW_VAE_ID,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool | None = None,
) -> Any:
    """An ``AutoencoderTiny`` from a local diffusers folder or a hub id, ready on ``device``.

    Raises:
        ModelNotFoundError: it is not here; the message says how to get it.
        ModelLoadError: it is here but cannot be used (damaged, not a tiny VAE).
    """
    from diffusers import AutoencoderTiny

    source = str(source)
    path = Path(source).expanduser()
    if local_files_only is None:
        local_files_only = hub_offline()
    if not path.exists() and not owner_slash_name(source):
        raise ModelNotFoundError(
            f"The preview VAE {source!r} is not here: no such file or folder. Choose a folder "
            f"in diffusers layout (config.json and its weights), or the hub id "
            f"{DEFAULT_PREVIEW_VAE_ID}."
        )
    if path.is_file():
        raise ModelLoadError(
            f"The preview VAE {source!r} is a file: choose the folder it is in (config.json "
            "and diffusion_pytorch_model.safetensors)."
        )
    try:
        with warnings.catch_warnings(), quiet_loaders():
            warnings.simplefilter("ignore", UserWarning)
            vae = AutoencoderTiny.from_pretrained(
                str(path) if path.exists() else source,
                torch_dtype=dtype,
                local_files_only=local_files_only or path.exists(),
                use_safetensors=True,  # never a pickle
            )
    except Exception as err:  # every loader failure becomes one line a composer can act on
        if path.exists():
            raise ModelLoadError(
                f"The preview VAE in {source!r} cannot be used ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else 'unreadable'}). Copy it again, "
                "or leave the preview VAE empty to preview with the model's own VAE."
            ) from err
        raise ModelNotFoundError(
            f"The preview VAE {source!r} is not downloaded. Run `huggingface-cli download "
            f"{source}` once on a machine with internet access (about 10 MB)"
            + (", and HF_HUB_OFFLINE is set here" if hub_offline() else "")
            + ", or leave the preview VAE empty."
        ) from err
    return vae.to(device).eval().requires_grad_(False)


def attach_preview_vae(model: RiffusionModel, vae: Any, source: str) -> None:
    """Let the model's quick previews decode with ``vae``, once it fits the model's latents."""
    config = vae.config
    channels = int(getattr(config, "latent_channels", 0))
    wanted = int(getattr(model.vae.config, "latent_channels", 4))
    scale = int(config.upsampling_scaling_factor) ** (len(config.decoder_block_out_channels) - 1)
    if channels != wanted or scale != model.vae_scale:
        raise ModelLoadError(
            f"The preview VAE {source!r} decodes {channels}-channel latents at {scale}x, but "
            f"this model's are {wanted}-channel at {model.vae_scale}x: choose the tiny VAE made "
            f"for it ({DEFAULT_PREVIEW_VAE_ID} for Stable Diffusion 1.x and Riffusion)."
        )
    model.preview_vae = vae.to(model.device, model.dtype)
    model.preview_vae_source = source


def use_preview_vae(
    model: RiffusionModel, source: str | Path, local_files_only: bool | None = None
) -> None:
    """Load the tiny VAE ``source`` for ``model``'s device and number format, and attach it."""
    vae = load_preview_vae(source, model.device, model.dtype, local_files_only)
    attach_preview_vae(model, vae, str(source))


__all__ = ["DEFAULT_PREVIEW_VAE_ID", "attach_preview_vae", "load_preview_vae", "use_preview_vae"]
