"""LoRA adapters for the UNet: a style, or LCM-LoRA for 4-8 step draft renders.

An adapter is fused into the UNet's weights once, at load time: rendering with it then costs
nothing extra. Only ``.safetensors`` files are read (a ``.bin``/``.ckpt`` is a pickle, which
can run code when loaded). Both the diffusers/peft and the kohya/A1111 key layouts are
accepted: diffusers' own loader converts them (peft does the fusing).

With LCM-LoRA (``latent-consistency/lcm-lora-sdv1-5``), render with the ``lcm`` scheduler,
4-8 steps and guidance 1-2. Whether it suits Riffusion's spectrograms is for a listening
check on the real weights; it is offered as a draft option.
"""

from __future__ import annotations

from pathlib import Path

from neurochip.errors import ModelLoadError, ModelNotFoundError, NeuroChipError
from neurochip.model import RiffusionModel, hub_offline, owner_slash_name

#: The file name diffusers saves LoRA weights under, in a folder or a hub repository.
LORA_FILE = "pytorch_lora_weights.safetensors"

#: Largest LoRA strength accepted: past 2 an adapter overdrives the weights it changes.
MAX_LORA_SCALE = 2.0


def lora_file(source: str | Path, local_files_only: bool | None = None) -> Path:
    """The ``.safetensors`` file of a LoRA given as a file, a folder or a hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".safetensors":
            raise NeuroChipError(
                f"{path.name}: NeuroChip reads LoRA weights from .safetensors files only (a "
                f"{path.suffix or 'file without a suffix'} can run code when loaded). Most "
                "LoRAs are published as .safetensors; convert this one or get that file."
            )
        return path
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        named = path / LORA_FILE
        if named.is_file():
            return named
        if len(files) == 1:
            return files[0]
        raise NeuroChipError(
            f"{path} holds {len(files) or 'no'} .safetensors files: give the LoRA's file itself."
        )
    text = str(source)
    if not owner_slash_name(text) or text.endswith(".safetensors"):
        raise NeuroChipError(f"No LoRA at {source}: no such file or folder.")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if local_files_only is None:
        local_files_only = hub_offline()
    try:
        return Path(hf_hub_download(str(source), LORA_FILE, local_files_only=local_files_only))
    except LocalEntryNotFoundError as err:
        raise ModelNotFoundError(
            f"The LoRA {source} is not downloaded. Download it once with: "
            f"huggingface-cli download {source} {LORA_FILE}"
        ) from err
    except Exception as err:  # the hub's many errors (no such repo, no network) in one line
        raise ModelNotFoundError(f"Could not get the LoRA {source}: {err}") from err


def apply_lora(
    model: RiffusionModel,
    source: str | Path,
    scale: float = 1.0,
    local_files_only: bool | None = None,
) -> RiffusionModel:
    """Fuse a LoRA into ``model``'s UNet at strength ``scale`` (in place; returns the model).

    Raises:
        NeuroChipError: For a pickle file, a missing file, a scale out of range, or a LoRA for
            other parts (the text encoder) or another architecture.
        ModelNotFoundError: A hub LoRA that is not downloaded (the message says how).
    """
    if not 0.0 < scale <= MAX_LORA_SCALE:
        raise NeuroChipError(f"LoRA strength must be more than 0 and at most 2, not {scale}.")
    path = lora_file(source, local_files_only)
    import safetensors.torch
    from diffusers import StableDiffusionPipeline

    try:
        state = safetensors.torch.load_file(str(path))
        # Converts kohya/A1111 keys to diffusers' and finds the alphas.
        state, alphas = StableDiffusionPipeline.lora_state_dict(state)
    except Exception as err:
        raise ModelLoadError(f"{path.name} is not a LoRA NeuroChip can read: {err}") from err
    if any(key.startswith("text_encoder") for key in state):
        raise NeuroChipError(
            f"{path.name} also changes the text encoder, which NeuroChip does not apply yet: "
            "use a LoRA for the UNet only (LCM-LoRA is one)."
        )
    if not any(key.startswith("unet.") for key in state):
        raise NeuroChipError(f"{path.name} has no weights for the UNet: is it a LoRA for SD 1.x?")
    unet = model.unet
    try:
        unet.load_lora_adapter(
            state, prefix="unet", network_alphas=alphas, adapter_name="neurochip"
        )
        unet.fuse_lora(lora_scale=scale)
        unet.unload_lora()  # the fused weights stay; the adapter layers go
    except Exception as err:
        raise ModelLoadError(
            f"{path.name} does not fit this model's UNet (is it for Stable Diffusion 1.x?): {err}"
        ) from err
    model.source = f"{model.source} + LoRA {Path(str(source)).name} x{scale:g}"
    return model
