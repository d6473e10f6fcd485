"""Riffusion's own endpoint, ``POST /run_inference/``, so that RiffusionVST and scripts
written for Riffusion's server work against NeuroChip unchanged.

The request and response have Riffusion's shape (its ``InferenceInput`` with a ``start`` and
an ``end`` prompt, ``alpha``, ``num_inference_steps``, ``seed_image_id``; its
``InferenceOutput`` with a base64 JPEG ``image``, a base64 MP3 ``audio`` and ``duration_s``).
What happens in between is NeuroChip's: the seed image (``<id>.png`` in the seed images
folder, as Riffusion keeps them) is heard as audio, rendered by the engine with the prompts'
embeddings and the seeds' noises interpolated by ``alpha`` (denoising and guidance mixed the
same way, as Riffusion does), and the take's picture and sound come back.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import tempfile
import threading
from pathlib import Path

from pydantic import BaseModel, Field

from neurochip.engine import Engine, ProgressCallback
from neurochip.errors import NeuroChipError
from neurochip.io.write import save_audio
from neurochip.phase import PhaseSettings, audio_from_image
from neurochip.settings import RenderSettings
from neurochip.spectrogram import amplitudes_from_image, load_image, spectrogram_image

#: A seed or mask image id: a file name in the seed images folder, never a path.
IMAGE_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class PromptInput(BaseModel):
    """One end of the interpolation (Riffusion's ``PromptInput``)."""

    prompt: str
    seed: int = Field(ge=0)
    negative_prompt: str | None = None
    denoising: float = Field(0.75, ge=0.0, le=1.0)
    guidance: float = Field(7.0, ge=0.0, le=50.0)


class InferenceInput(BaseModel):
    """Riffusion's request: from ``start`` to ``end`` by ``alpha``, on a seed image."""

    start: PromptInput
    end: PromptInput
    alpha: float = Field(ge=0.0, le=1.0)
    num_inference_steps: int = Field(50, ge=1, le=1000)
    seed_image_id: str = "og_beat"
    mask_image_id: str | None = None


class InferenceOutput(BaseModel):
    """Riffusion's response: data URLs of the picture (JPEG) and the sound (MP3)."""

    image: str
    audio: str
    duration_s: float


class RiffusionRequestError(NeuroChipError):
    """A request Riffusion's server would refuse with a 400 (an unknown seed image...)."""


def inference_settings(inputs: InferenceInput) -> RenderSettings:
    """NeuroChip's settings for a Riffusion request: the start prompt and seed, moving toward
    the end's by ``alpha``; denoising and guidance mixed by ``alpha`` as Riffusion does."""
    a = inputs.alpha
    return RenderSettings(
        prompt=inputs.start.prompt,
        negative_prompt=inputs.start.negative_prompt or "",
        seed=inputs.start.seed,
        prompt_end=inputs.end.prompt,
        seed_end=inputs.end.seed,
        alpha=a,
        denoise=(1 - a) * inputs.start.denoising + a * inputs.end.denoising,
        guidance=(1 - a) * inputs.start.guidance + a * inputs.end.guidance,
        steps=inputs.num_inference_steps,
    )


def seed_image_path(folder: Path | None, image_id: str) -> Path:
    """The seed image ``<id>.png`` in ``folder``; the id is a name, never a path."""
    if folder is None:
        raise RiffusionRequestError(
            "This server has no seed images: start it with --seed-images DIR (Riffusion's "
            "seed_images folder, or your own spectrogram PNGs named <id>.png)."
        )
    if not IMAGE_ID.fullmatch(image_id):
        raise RiffusionRequestError(f"Invalid seed image: {image_id!r} (letters, digits, _ -).")
    path = folder / f"{image_id}.png"
    if not path.is_file():
        raise RiffusionRequestError(f"Invalid seed image: {image_id}")
    return path


def run_inference(
    engine: Engine,
    inputs: InferenceInput,
    seed_images: Path | None,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> InferenceOutput:
    """Riffusion's ``/run_inference/`` on NeuroChip's engine -> :class:`InferenceOutput`.

    ``cancel`` stops the render at its next step (the client hung up)."""
    if inputs.mask_image_id:
        raise RiffusionRequestError(
            "Mask images are not supported by NeuroChip: to render part of a take again, use "
            "its re-roll (neurochip reroll, or Fix a part in the app)."
        )
    decoded = amplitudes_from_image(load_image(seed_image_path(seed_images, inputs.seed_image_id)))
    # The seed image heard as audio (it has no phase of its own: Riffusion's random phase).
    mono = dataclasses.replace(decoded, amplitudes=decoded.amplitudes.mean(dim=0, keepdim=True))
    seed_audio = audio_from_image(mono, PhaseSettings(mode="random"))
    render = engine.render(seed_audio, inference_settings(inputs), progress, cancel)

    picture = io.BytesIO()
    image = spectrogram_image(render.audio)
    image.convert("RGB").save(picture, format="JPEG", exif=image.getexif())
    with tempfile.TemporaryDirectory(prefix="neurochip-riffusion-") as folder:
        mp3 = save_audio(Path(folder) / "take.mp3", render.audio).read_bytes()
    return InferenceOutput(
        image="data:image/jpeg;base64," + base64.b64encode(picture.getvalue()).decode(),
        audio="data:audio/mpeg;base64," + base64.b64encode(mp3).decode(),
        duration_s=round(render.audio.duration_s, 4),
    )
