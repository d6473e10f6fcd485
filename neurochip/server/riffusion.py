"""Riffusion's own endpoint, ``POST /run_inference/``, so that Riffusion's web app and scripts
written for Riffusion's server work against NeuroChip unchanged.

The request and response have Riffusion's shape (its ``InferenceInput`` with a ``start`` and
an ``end`` prompt, ``alpha``, ``num_inference_steps``, ``seed_image_id``; its
``InferenceOutput`` with a base64 JPEG ``image``, a base64 MP3 ``audio`` and ``duration_s``).
In between, NeuroChip does what Riffusion does, so that a client hears what it would hear
from Riffusion: the seed image (``<id>.png`` in the seed images folder, as Riffusion keeps
them) is rendered as a picture, img2img on its pixels (no audio in between), with the
prompts' embeddings and the seeds' noises interpolated by ``alpha`` (denoising and guidance
mixed the same way); a mask image (``mask_image_id``, from the same folder) keeps the
picture where it is black and renders anew where it is white; ``negative_prompt`` is not
used (Riffusion's pipeline never passes it on: the ``X-NeuroChip-Ignored`` header says so);
the sound comes from random phase, as Riffusion's. A model that renders audio, not pictures
(ACE-Step, Stable Audio), hears the seed image as audio instead, and takes no masks.

Riffusion's server is lenient where NeuroChip's own API is strict, and its clients count on
it (:func:`parse_body`, :func:`within_neurochip`):

* the body is read as JSON whatever its ``Content-Type`` (none, ``text/plain``...);
* a seed may be any integer (RiffusionVST's are often negative): it is taken modulo 2**32
  (:func:`neurochip_seed`), so the same request always gives the same take;
* denoising, guidance and steps outside NeuroChip's ranges are clamped to the nearest value
  allowed (denoising 0-1, guidance 0-50, steps 1-1000) and the response says so in its
  ``X-NeuroChip-Clamped`` header (:data:`CLAMPED_HEADER`);
* ``alpha`` within :data:`ALPHA_SLACK` of 0-1 (a browser's rounding) is taken as 0 or 1.

Requests Riffusion itself refuses (not JSON, a field missing or of the wrong type, an
unknown seed image) still get NeuroChip's readable JSON errors.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from neurochip.engine import Engine, PictureJob, ProgressCallback
from neurochip.errors import NeuroChipError
from neurochip.io.write import save_audio
from neurochip.phase import PhaseSettings, audio_from_image
from neurochip.server.schema import said
from neurochip.settings import MAX_SEED, RenderSettings
from neurochip.spectrogram import (
    DEFAULT_MAX_VALUE,
    amplitudes_from_image,
    image_pixels,
    load_image,
    spectrogram_image,
)

#: A seed or mask image id: a file name in the seed images folder, never a path.
IMAGE_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")

#: How far outside 0-1 an ``alpha`` may be and still be taken (as 0 or 1): the web app's
#: ``alphaVelocity`` steps add up to 1.0000000000000002.
ALPHA_SLACK = 1e-6

#: The response header that lists the values clamped into NeuroChip's ranges, e.g.
#: ``start.denoising=1.2->1.0; num_inference_steps=0->1``.
CLAMPED_HEADER = "X-NeuroChip-Clamped"

#: The response header that lists what Riffusion's own server would not have used either
#: (``start.negative_prompt``): NeuroChip's ``/v1`` API uses it.
IGNORED_HEADER = "X-NeuroChip-Ignored"

#: The ranges Riffusion's values are clamped into: (low, high) by field.
DENOISING = (0.0, 1.0)
GUIDANCE = (0.0, 50.0)
STEPS = (1, 1000)

Finite = Annotated[float, Field(allow_inf_nan=False)]


class PromptInput(BaseModel):
    """One end of the interpolation (Riffusion's ``PromptInput``): any integer seed, any
    denoising and guidance (clamped by :func:`within_neurochip`)."""

    prompt: str
    seed: int
    negative_prompt: str | None = None
    denoising: Finite = 0.75
    guidance: Finite = 7.0


class Interpolation(BaseModel):
    """What every Riffusion request says: from ``start`` to ``end`` by ``alpha``."""

    start: PromptInput
    end: PromptInput
    alpha: float = Field(ge=-ALPHA_SLACK, le=1.0 + ALPHA_SLACK)
    num_inference_steps: int = 50


class InferenceInput(Interpolation):
    """Riffusion's ``/run_inference/`` request: an :class:`Interpolation` on a seed image."""

    seed_image_id: str = "og_beat"
    mask_image_id: str | None = None


class InferenceOutput(BaseModel):
    """Riffusion's response: data URLs of the picture (JPEG) and the sound (MP3)."""

    image: str
    audio: str
    duration_s: float


class RiffusionRequestError(NeuroChipError):
    """A request Riffusion's server would refuse with a 400 (an unknown seed image...)."""


class RiffusionBodyError(NeuroChipError):
    """A body that is not the route's JSON (not JSON at all, a field missing, a wrong type)."""


Request = TypeVar("Request", bound=BaseModel)


def parse_body(body: bytes, model: type[Request]) -> Request:
    """A request's body as ``model``, read as JSON whatever its ``Content-Type`` said (as
    Riffusion's server reads it).

    Raises:
        RiffusionBodyError: It is not JSON, or not ``model``'s; the message says what."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RiffusionBodyError(f"Bad request: the body is not JSON ({err}).") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise RiffusionBodyError(f"Bad request: {said(err)}.") from None


def neurochip_seed(seed: int) -> int:
    """A Riffusion seed (any integer: RiffusionVST's are C++ ``int`` hashes, often negative) as
    NeuroChip's (0 to 2**32 - 1): ``seed % 2**32``, so -5 is 4294967291, 2**40 is 0, and a
    seed already in range is itself."""
    return seed % (MAX_SEED + 1)


Clamped = TypeVar("Clamped", bound=Interpolation)


def within_neurochip(inputs: Clamped) -> tuple[Clamped, list[str]]:
    """``inputs`` with every value in NeuroChip's ranges, and what was clamped
    (``"start.guidance=60.0->50.0"`` and so on; a seed's mapping by :func:`neurochip_seed` and
    alpha's rounding slack are not listed)."""
    notes: list[str] = []

    def clamp(name: str, value: Any, low: Any, high: Any) -> Any:
        kept = type(value)(min(max(value, low), high))
        if kept != value:
            notes.append(f"{name}={value}->{kept}")
        return kept

    ends = {}
    for name in ("start", "end"):
        end: PromptInput = getattr(inputs, name)
        ends[name] = end.model_copy(
            update={
                "seed": neurochip_seed(end.seed),
                "denoising": clamp(f"{name}.denoising", end.denoising, *DENOISING),
                "guidance": clamp(f"{name}.guidance", end.guidance, *GUIDANCE),
            }
        )
    steps = clamp("num_inference_steps", inputs.num_inference_steps, *STEPS)
    alpha = min(max(inputs.alpha, 0.0), 1.0)
    return inputs.model_copy(update={**ends, "num_inference_steps": steps, "alpha": alpha}), notes


def without_negative_prompts(inputs: Clamped) -> tuple[Clamped, list[str]]:
    """``inputs`` without negative prompts, as Riffusion renders them (its pipeline takes
    none from a request), and which ones were dropped (``"start.negative_prompt"``)."""
    dropped = [
        f"{name}.negative_prompt"
        for name in ("start", "end")
        if getattr(inputs, name).negative_prompt
    ]
    ends = {
        name: getattr(inputs, name).model_copy(update={"negative_prompt": None})
        for name in ("start", "end")
    }
    return inputs.model_copy(update=ends), dropped


def clamped_headers(clamped: list[str], ignored: list[str] = ()) -> dict[str, str]:
    """The response headers that report what was ``clamped`` and ``ignored`` (none when
    nothing was)."""
    headers = {CLAMPED_HEADER: "; ".join(clamped)} if clamped else {}
    if ignored:
        headers[IGNORED_HEADER] = "; ".join(ignored)
    return headers


def request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` written in place, for the OpenAPI docs of a
    route that reads its body itself."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    body = {"content": {"application/json": {"schema": inline(schema)}}, "required": True}
    return {"requestBody": body}


def inference_settings(inputs: Interpolation) -> RenderSettings:
    """NeuroChip's settings for a Riffusion request (its values in NeuroChip's ranges: see
    :func:`within_neurochip`): the start prompt and seed, moving toward the end's by
    ``alpha``; denoising and guidance mixed by ``alpha`` as Riffusion does."""
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


def seed_image_path(folder: Path | None, image_id: str, kind: str = "seed") -> Path:
    """The seed (or mask) image ``<id>.png`` in ``folder``; the id is a name, never a path."""
    if folder is None:
        raise RiffusionRequestError(
            f"This server has no {kind} images: start it with --seed-images DIR (Riffusion's "
            "seed_images folder, or your own spectrogram PNGs named <id>.png)."
        )
    if not IMAGE_ID.fullmatch(image_id):
        raise RiffusionRequestError(f"Invalid {kind} image: {image_id!r} (letters, digits, _ -).")
    path = folder / f"{image_id}.png"
    if not path.is_file():
        raise RiffusionRequestError(f"Invalid {kind} image: {image_id}")
    return path


def mask_pixels(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """A mask image as (height, width) in [0, 1] at the seed image's ``size`` (width,
    height): 1 (white) renders anew, 0 (black) keeps the seed; a mask of another size is
    stretched to it, nearest pixel."""
    with Image.open(path) as image:
        gray = image.convert("L")
    if gray.size != size:
        gray = gray.resize(size, resample=Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(gray, dtype=np.float32) / 255.0)


def run_inference(
    engine: Engine,
    inputs: InferenceInput,
    seed_images: Path | None,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> InferenceOutput:
    """Riffusion's ``/run_inference/`` on NeuroChip's engine -> :class:`InferenceOutput`.

    ``cancel`` stops the render at its next step (the client hung up).

    Raises:
        RiffusionRequestError: An unknown seed or mask image, or a mask for a model that
            renders audio, not pictures.
    """
    path = seed_image_path(seed_images, inputs.seed_image_id)
    try:
        seed = load_image(path)
    except NeuroChipError as err:  # there, but not an image
        raise RiffusionRequestError(f"Invalid seed image: {err}") from None
    mask_path = None
    if inputs.mask_image_id:
        mask_path = seed_image_path(seed_images, inputs.mask_image_id, "mask")
    settings = inference_settings(inputs)
    if engine.backend.capabilities.pictures:
        pixels, max_value = image_pixels(seed, engine.params)
        mask = mask_pixels(mask_path, seed.size) if mask_path is not None else None
        job = PictureJob(pixels, max_value or DEFAULT_MAX_VALUE, settings, mask)
        render = engine.render_picture(job, progress, cancel)
    else:
        if mask_path is not None:
            raise RiffusionRequestError(
                f"Mask images need a Riffusion model; this server renders with "
                f"{engine.describe()}. To render part of a take again, use its re-roll "
                "(neurochip reroll, or Fix a part in the app)."
            )
        # The seed image heard as audio (it has no phase of its own: Riffusion's random phase).
        decoded = amplitudes_from_image(seed)
        mono = dataclasses.replace(decoded, amplitudes=decoded.amplitudes.mean(dim=0, keepdim=True))
        seed_audio = audio_from_image(mono, PhaseSettings(mode="random"))
        render = engine.render(seed_audio, settings, progress, cancel)

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
