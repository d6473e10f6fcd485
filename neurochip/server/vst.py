"""RiffusionVST's endpoint, ``POST /run_vst/``, so that the plugin works against NeuroChip.

RiffusionVST (a JUCE plugin) records a clip in the DAW and posts it, as the server fork it was
written for (``vst_server.py`` in mklingen/riffusion-inference) expects: Riffusion's
interpolation (``start`` and ``end`` prompts with seed, denoising and guidance, ``alpha``,
``num_inference_steps``) and ``"audio"``, the clip as a WAV file in plain base64 (no data
URL). It reads back ``{"audio": ...}``: a WAV in plain base64, which it plays in place of the
clip.

Here the clip is a sketch like any other: the whole clip rendered as one piece by
:func:`~neurochip.takeset.render_take_set` (NeuroChip's workflow, the phase taken from the
clip), the take kept in the take library as coming from the plugin (its source is
:data:`VST_SOURCE`, its metadata's ``"client"`` is :data:`VST_CLIENT`), and the answer is a
16-bit WAV of exactly the clip's length, sample rate and channels.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import threading
from typing import Any

import numpy as np
import soundfile as sf
from pydantic import BaseModel

from neurochip.engine import Engine, ProgressCallback
from neurochip.io.audio import Audio
from neurochip.library.store import TakeLibrary
from neurochip.server.riffusion import Interpolation, RiffusionRequestError, inference_settings
from neurochip.sketch import load_sketch
from neurochip.takeset import render_take_set

#: The source name of the plugin's takes in the library.
VST_SOURCE = "RiffusionVST clip"

#: Their metadata's ``"client"``.
VST_CLIENT = "RiffusionVST"


class VstInput(Interpolation):
    """RiffusionVST's request: Riffusion's interpolation and the clip, a base64 WAV."""

    audio: str = ""
    mask_image_id: str | None = None


class VstOutput(BaseModel):
    """The answer RiffusionVST reads: the take as a base64 WAV of the clip's length."""

    audio: str


def clip_bytes(audio: str) -> bytes:
    """The WAV file in a request's ``"audio"`` (plain base64; a data URL is taken too)."""
    text = audio.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if not text:
        raise RiffusionRequestError(
            'There is no clip: "audio" must be a WAV file in base64 (record one in the plugin).'
        )
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise RiffusionRequestError('"audio" is not base64: send the WAV file in base64.') from None


def run_vst(
    engine: Engine,
    inputs: VstInput,
    library: TakeLibrary,
    max_work: float = math.inf,
    cancel: threading.Event | None = None,
    progress: ProgressCallback | None = None,
) -> VstOutput:
    """RiffusionVST's ``/run_vst/`` on NeuroChip's workflow -> :class:`VstOutput`.

    ``inputs`` are in NeuroChip's ranges (:func:`~neurochip.server.riffusion.within_neurochip`);
    ``max_work`` is the server's limit in seconds of clip x denoising steps; ``cancel`` stops
    the render at its next step (the client hung up).

    Raises:
        RiffusionRequestError: For a mask, a missing clip or one that is not a WAV file, or a
            clip that asks too much.
    """
    if inputs.mask_image_id:
        raise RiffusionRequestError(
            "Mask images apply to seed images (/run_inference/), not to a plugin's clip: to "
            "render part of a take again, use its re-roll (neurochip reroll, or Fix a part in "
            "the app)."
        )
    wav = clip_bytes(inputs.audio)
    try:
        clip = sf.info(io.BytesIO(wav))
    except (RuntimeError, sf.LibsndfileError):
        raise RiffusionRequestError('"audio" is not a WAV file: send the clip as a WAV.') from None
    if clip.frames == 0:
        raise RiffusionRequestError("The clip is empty: record some audio in the plugin first.")
    settings = inference_settings(inputs).replace(phase="source")
    work = clip.frames / clip.samplerate * max(1, math.ceil(settings.steps * settings.denoise))
    if work > max_work:
        raise RiffusionRequestError(
            f"This clip asks for {work:,.0f} seconds x denoising steps, over this server's "
            f"limit of {max_work:,.0f}: record a shorter clip, or use fewer steps."
        )
    sketch = load_sketch(wav, name=f"{VST_SOURCE}.wav", max_duration_s=None)
    made = render_take_set(
        engine, sketch, settings, source_name=VST_SOURCE, progress=progress, cancel=cancel
    )
    take = made.files["A"]
    with contextlib.suppress(OSError):  # the take matters more than reopening its clip
        library.keep_source(sketch)  # the clip itself: Open in the app brings it back
    metadata: dict[str, Any] = {**take.metadata, "client": VST_CLIENT}
    library.add(take.audio, metadata, thumbnail=take.thumbnail)
    answer = fit(take.audio, clip.samplerate, clip.channels, clip.frames)
    out = io.BytesIO()
    sf.write(out, answer.samples.T, answer.sample_rate, format="WAV", subtype="PCM_16")
    return VstOutput(audio=base64.b64encode(out.getvalue()).decode("ascii"))


def fit(audio: Audio, sample_rate: int, channels: int, frames: int) -> Audio:
    """``audio`` at ``sample_rate`` with ``channels`` and exactly ``frames`` frames (cut, or
    padded with silence): what the plugin plays in the clip's place."""
    audio = audio.resample(sample_rate)
    if audio.channels != channels:
        mono = audio.to_mono()
        audio = mono if channels == 1 else Audio(np.repeat(mono.samples, channels, 0), sample_rate)
    samples = audio.samples[:, :frames]
    if samples.shape[1] < frames:
        samples = np.pad(samples, ((0, 0), (0, frames - samples.shape[1])))
    return Audio(np.clip(samples, -1.0, 1.0), sample_rate)
