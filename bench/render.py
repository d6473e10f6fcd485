"""Benchmark: how fast a whole song renders, NeuroChip's engine against a Riffusion-style loop.

Two contenders turn the same song (mono, 44.1 kHz) into a "live arrangement mockup" with the
same model modules, prompt, denoise (img2img strength), guidance, steps, seed and scheduler
(DPM-Solver++ from Stable Diffusion's PNDM config):

* **NeuroChip**: ``neurochip.engine.Engine.render`` -- the whole song as one latent image,
  overlapping 512-column UNet windows blended every step (MultiDiffusion), phase rebuilt from
  the source audio (``phase="source"``);
* **Riffusion loop**, as Riffusion's Streamlit playground does audio to audio: the song cut into
  5 s clips overlapping by 0.2 s; per clip an 8-bit spectrogram image, diffusers'
  ``StableDiffusionImg2ImgPipeline`` (same seed for every clip), the image back to mel
  amplitudes, Griffin-Lim from random phase (32 iterations); clips joined with 0.2 s linear
  crossfades.

For each: wall time (after an untimed warm-up of both on a short clip), seconds of audio per
second of wall time ("x RT"), UNet evaluations (a classifier-free-guidance pair counts as two
batch items), megapixels through the VAE, peak GPU memory on CUDA, and the output's length
against the input's in samples (NeuroChip's must match exactly; the loop's drifts).

**The weights are random.** The benchmark builds the real Stable Diffusion 1.5 architecture
(UNet, VAE, CLIP ViT-L/14 text encoder) with random weights, because no weights can be
downloaded here and the arithmetic -- so the speed -- does not depend on their values. The
audio it produces is noise: only the timings, counts and lengths mean anything, never the
sound. ``--quick`` shrinks the widths (same architecture family) so it runs on a CPU in minutes.

It also reports each stage's time (NeuroChip), the arithmetic done (UNet and VAE FLOPs counted
with ``torch.utils.flop_counter`` on the built model, not assumed), the TFLOP/s achieved and the
share of the device's dense fp16/bf16 peak (from the vendor's data sheet, for the cards listed in
``PEAK_TFLOPS``), and the share of the wall time spent outside the model.

Run it from the repository root::

    .venv/bin/python bench/render.py                          # GPU: SD 1.5, 3-minute stereo pair
    .venv/bin/python bench/render.py --quick                  # CPU: reduced width, 10 s
    .venv/bin/python bench/render.py --single --seconds 60    # one take
    .venv/bin/python bench/render.py --draft                  # the draft options
    .venv/bin/python bench/render.py --seconds 600 --memory-cap-gb 8 --skip-riffusion
    .venv/bin/python bench/render.py --count-only --seconds 180 --windows shifted
    .venv/bin/python bench/render.py song.wav --seconds 30 --json render.json

``--count-only`` runs no model: it counts the UNet items and calls of both contenders at the
given length and settings (``neurochip.engine.count_unet_work``, packed as the engine packs
them; the loop's from its clips), in well under a second.

With no file it uses the NES-style tune synthesised by ``tests/chiptune.py`` (labelled as such).
Timings are of the whole machine: on a busy CPU they are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from neurochip.cli.common import add_engine_options, engine_settings
from neurochip.device import describe_device, resolve_device
from neurochip.engine import STAGES, Engine, count_unet_work
from neurochip.errors import NeuroChipError
from neurochip.io import Audio, load_audio
from neurochip.model import COMPILE_MODES, RiffusionModel, assemble_model, resolve_dtype
from neurochip.phase import PhaseSettings, waveform_from_amplitudes
from neurochip.settings import RenderSettings
from neurochip.spectrogram import (
    SpectrogramParams,
    amplitudes_from_image,
    image_from_amplitudes,
    mel_amplitudes,
)

SAMPLE_RATE = 44100
PARAMS = SpectrogramParams()  # Riffusion model v1's format, mono
REPO_ROOT = Path(__file__).resolve().parents[1]
SYNTH_LABEL = "synthesised chip tune (tests/chiptune.py)"
DEFAULT_PROMPT = "chiptune song played by a live rock band, drums, bass guitar, electric guitar"
SEED = 42
GUIDANCE = 7.0
SCHEDULER = "dpm++"

#: Riffusion playground's audio-to-audio clip length and the overlap between clips
#: (riffusion/streamlit/tasks/audio_to_audio.py, get_clip_params).
CLIP_SECONDS = 5.0
OVERLAP_SECONDS = 0.2
#: The playground scales each clip image to a multiple of this many pixels before img2img.
RIFFUSION_STRIDE_PX = 32
#: Riffusion's default Griffin-Lim iterations (random phase).
RIFFUSION_GL_ITERATIONS = 32
#: Length of the untimed warm-up song: just over one model window (5.12 s), so the engine's
#: tiled-VAE path is warm too; the loop still makes one clip of it.
WARMUP_SECONDS = 6.0

#: Dense (no sparsity) fp16/bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s, by a
#: part of the device name. Only for the "% of peak" column; the work itself is counted.
PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 80GB HBM3": 989.0,  # SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "T4": 65.0,
}

#: UNet batch items per call the count-only mode assumes: what the engine's auto batch picks
#: on a large GPU (it caps there).
COUNT_BATCH = 64

#: Stable Diffusion's scheduler_config.json (PNDM); both contenders build DPM++ from it.
SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "trained_betas": None,
}


# --- the model: SD 1.5's architecture, random weights ------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """Widths of one member of the SD 1.x family; ``full`` is Stable Diffusion 1.5 itself."""

    name: str
    unet_channels: tuple[int, ...]
    vae_channels: tuple[int, ...]
    norm_groups: int  # GroupNorm groups: must divide every UNet and VAE width
    text_hidden: int  # CLIP width; also the UNet's cross-attention width
    text_layers: int
    text_heads: int
    text_intermediate: int
    heads: int = 8  # the UNet's attention heads (SD 1.5's 8)


FULL = Architecture(
    name="SD 1.5 (random weights)",
    unet_channels=(320, 640, 1280, 1280),
    vae_channels=(128, 256, 512, 512),
    norm_groups=32,
    text_hidden=768,
    text_layers=12,
    text_heads=12,
    text_intermediate=3072,
)
QUICK = Architecture(
    name="SD 1.5 layout, reduced width (random weights)",
    unet_channels=(32, 64, 128, 128),
    vae_channels=(32, 64, 64, 64),
    norm_groups=32,
    text_hidden=64,
    text_layers=2,
    text_heads=4,
    text_intermediate=256,
)

#: The smallest member, for dry runs of the GPU checks on a CPU (seconds, not minutes).
TINY = Architecture(
    name="SD 1.5 layout, tiny (random weights)",
    unet_channels=(8, 8, 16, 16),
    vae_channels=(8, 8, 8, 8),
    norm_groups=4,
    text_hidden=16,
    text_layers=1,
    text_heads=2,
    text_intermediate=32,
    heads=1,
)


def import_tests() -> None:
    # tests/ is a package at the repository root, which is not on sys.path when this file is
    # run as a script (only bench/ is).
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))


def build_tokenizer() -> Any:
    """A CLIP tokenizer built in memory from the tests' character vocabulary.

    Its ids are all below 49408, so it indexes ViT-L/14's embedding table; prompts still become
    77 tokens (padded), which is all that matters for speed.
    """
    import_tests()
    from transformers import CLIPTokenizer

    from tests.tiny_model import tiny_vocabulary

    vocab, merges = tiny_vocabulary()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_unet(arch: Architecture) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=arch.unet_channels,
        layers_per_block=2,
        norm_num_groups=arch.norm_groups,
        cross_attention_dim=arch.text_hidden,
        attention_head_dim=arch.heads,  # diffusers' name for it: it is really the heads
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
    )


def build_vae(arch: Architecture) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=arch.vae_channels,
        layers_per_block=2,
        norm_num_groups=arch.norm_groups,
        latent_channels=4,
        # sample_size sets diffusers' VAE tile size (512 px / 64 latents), as in SD's config.
        sample_size=512,
        scaling_factor=0.18215,
    )


def build_text_encoder(arch: Architecture) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=arch.text_hidden,
            intermediate_size=arch.text_intermediate,
            num_hidden_layers=arch.text_layers,
            num_attention_heads=arch.text_heads,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=arch.text_hidden,
            # The tests' vocabulary puts <|startoftext|> at 0 and <|endoftext|> at 1.
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )


def build_model(
    arch: Architecture, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> RiffusionModel:
    """The random-weight model, set up the way ``neurochip.model.load_model`` sets one up."""
    from diffusers.utils import logging as diffusers_logging

    torch.manual_seed(seed)
    # Initialised straight on the device: random init of 1 billion parameters is slow on a CPU.
    with torch.device(device):
        unet, vae, text_encoder = build_unet(arch), build_vae(arch), build_text_encoder(arch)
    verbosity = diffusers_logging.get_verbosity()
    # diffusers warns on any dtype cast of a model not from from_pretrained; nothing to keep
    # in fp32 here (its own list is empty), so the warning is noise.
    diffusers_logging.set_verbosity_error()
    try:
        # The same preparation (device, dtype, eval, SDPA attention) as load_model's.
        return assemble_model(
            unet,
            vae,
            text_encoder,
            build_tokenizer(),
            dict(SD_SCHEDULER_CONFIG),
            device=device,
            dtype=dtype,
            source=f"random SD1.5 architecture ({arch.name})",
        )
    finally:
        diffusers_logging.set_verbosity(verbosity)


def parameter_counts(model: RiffusionModel) -> dict[str, float]:
    """Millions of parameters per module: proof of which architecture ran."""
    modules = {"unet": model.unet, "vae": model.vae, "text_encoder": model.text_encoder}
    return {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in modules.items()}


# --- measuring -------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    # CUDA runs asynchronously: without this the clock stops before the GPU has finished.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class WorkCount:
    """What the networks were asked to do during one render."""

    unet_calls: int = 0
    unet_items: int = 0  # batch items: a CFG pair is 2, a window is 1
    unet_latent_sizes: set[str] = field(default_factory=set)  # e.g. {"64x64"}
    vae_megapixels: float = 0.0  # image pixels through the encoder plus out of the decoder


@contextmanager
def count_work(model: RiffusionModel) -> Iterator[WorkCount]:
    """Count UNet batch items and VAE pixels with forward pre-hooks, removed afterwards.

    Hooks on the VAE's encoder and decoder see every tile when diffusers tiles a wide image,
    so tiling overhead shows up in ``vae_megapixels``.
    """
    count = WorkCount()
    scale = model.vae_scale

    def first_tensor(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> torch.Tensor:
        return args[0] if args else kwargs[name]

    def on_unet(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        sample = first_tensor(args, kwargs, "sample")
        count.unet_calls += 1
        count.unet_items += int(sample.shape[0])
        count.unet_latent_sizes.add(f"{sample.shape[-2]}x{sample.shape[-1]}")

    def on_encoder(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = first_tensor(args, kwargs, "sample")
        count.vae_megapixels += x.shape[0] * x.shape[-2] * x.shape[-1] / 1e6

    def on_decoder(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        z = first_tensor(args, kwargs, "sample")
        count.vae_megapixels += z.shape[0] * z.shape[-2] * z.shape[-1] * scale**2 / 1e6

    handles = [
        model.unet.register_forward_pre_hook(on_unet, with_kwargs=True),
        model.vae.encoder.register_forward_pre_hook(on_encoder, with_kwargs=True),
        model.vae.decoder.register_forward_pre_hook(on_decoder, with_kwargs=True),
    ]
    try:
        yield count
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Result:
    """One contender's timed render: a JSON row."""

    contender: str
    wall_s: float  # best of the repeats: the least disturbed by other processes
    audio_s: float  # seconds of the input the render covers
    realtime_x: float  # audio_s / wall_s
    unet_calls: int
    unet_items: int
    unet_latent_sizes: list[str]
    vae_megapixels: float
    peak_gpu_mib: float | None  # CUDA only; includes the weights
    input_samples: int
    output_samples: int
    length_diff_samples: int  # output - input
    clips: int | None = None  # the loop's clip count
    wall_s_all: list[float] = field(default_factory=list)
    stages_s: dict[str, float] = field(default_factory=dict)  # NeuroChip: time per stage
    tflop: float | None = None  # arithmetic done, counted
    tflops_achieved: float | None = None  # tflop / wall_s
    peak_share: float | None = None  # of the device's dense fp16 peak
    non_model_share: float | None = None  # wall time outside the UNet and VAE (NeuroChip)


@dataclass(frozen=True)
class Arithmetic:
    """FLOPs of the model's parts, counted once on the built model (a multiply-add is 2)."""

    unet_item: float  # one 64x64-latent UNet batch item
    unet_shallow_item: float  # the same, reusing deep features (feature reuse)
    vae_encode_mpx: float  # per megapixel of picture encoded
    vae_decode_mpx: float  # per megapixel decoded

    def of(self, result: Result, shallow_items: int = 0) -> float:
        full = result.unet_items - shallow_items
        vae = result.vae_megapixels * (self.vae_encode_mpx + self.vae_decode_mpx) / 2
        return full * self.unet_item + shallow_items * self.unet_shallow_item + vae


def count_arithmetic(model: RiffusionModel) -> Arithmetic:
    """Count with ``torch.utils.flop_counter`` on one item of each part (no timing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from neurochip.feature_reuse import full_unet, shallow_unet

    device, dtype = model.device, model.dtype
    latents = torch.zeros(1, 4, 64, 64, device=device, dtype=dtype)
    t = torch.tensor([500], device=device)
    context = torch.zeros(1, 77, model.unet.config.cross_attention_dim, device=device, dtype=dtype)
    picture = torch.zeros(1, 3, 512, 512, device=device, dtype=dtype)

    def flops(run: Callable[[], Any]) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run()
        return float(counter.get_total_flops())

    with torch.no_grad():
        _, deep = full_unet(model.unet, latents, t, context)
    mpx = 512 * 512 / 1e6
    return Arithmetic(
        unet_item=flops(lambda: model.unet(latents, t, encoder_hidden_states=context)),
        unet_shallow_item=flops(lambda: shallow_unet(model.unet, latents, t, context, deep)),
        vae_encode_mpx=flops(lambda: model.vae.encode(picture)) / mpx,
        vae_decode_mpx=flops(lambda: model.vae.decode(latents)) / mpx,
    )


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for part, peak in PEAK_TFLOPS.items() if part in name), None)


class StageTimer:
    """Seconds spent in each engine stage, read off its progress reports: pass
    :meth:`progress` as the callback, :meth:`start` when the clock starts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.spent: dict[str, float] = {}
        self.current, self.since = "encode", time.perf_counter()

    def start(self) -> None:
        self.since = time.perf_counter()

    def progress(self, fraction: float, label: str) -> None:
        synchronize(self.device)  # the stage before this report is finished, not just queued
        now = time.perf_counter()
        self.spent[self.current] = self.spent.get(self.current, 0.0) + now - self.since
        # Labels read "denoise step 3 of 17", "phase", ...; "done" ends the last stage.
        self.current = next((s for s in STAGES if label.startswith(s)), "other")
        self.since = now

    def seconds(self) -> dict[str, float]:
        return {stage: self.spent.get(stage, 0.0) for stage in STAGES}


def best_of(runs: Sequence[Result]) -> Result:
    """The fastest of repeated runs (the work and lengths are the same in every one)."""
    best = min(runs, key=lambda r: r.wall_s)
    best.wall_s_all = [r.wall_s for r in runs]
    return best


def timed(
    contender: str,
    render: Callable[[], tuple[np.ndarray, float]],
    model: RiffusionModel,
    input_samples: int,
    clips: int | None = None,
) -> Result:
    """Run ``render`` (returns output samples and seconds of input covered) under the clock."""
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with count_work(model) as work:
        synchronize(device)
        began = time.perf_counter()
        output, audio_s = render()
        synchronize(device)
        wall = time.perf_counter() - began
    peak = None
    if device.type == "cuda":  # the whole render's, probes included
        seen = max(torch.cuda.max_memory_allocated(device), getattr(render, "peak_bytes", 0) or 0)
        peak = seen / 2**20
    return Result(
        contender=contender,
        wall_s=wall,
        audio_s=audio_s,
        realtime_x=audio_s / wall,
        unet_calls=work.unet_calls,
        unet_items=work.unet_items,
        unet_latent_sizes=sorted(work.unet_latent_sizes),
        vae_megapixels=work.vae_megapixels,
        peak_gpu_mib=peak,
        input_samples=input_samples,
        output_samples=int(output.shape[-1]),
        length_diff_samples=int(output.shape[-1]) - input_samples,
        clips=clips,
        stages_s=dict(getattr(render, "stages_s", {})),
    )


# --- contender 1: NeuroChip -------------------------------------------------------------------


def neurochip_settings(
    prompt: str,
    denoise: float,
    steps: int,
    guidance: float = GUIDANCE,
    scheduler: str = SCHEDULER,
    **engine: Any,
) -> RenderSettings:
    return RenderSettings(
        prompt=prompt,
        denoise=denoise,
        guidance=guidance,
        steps=steps,
        seed=SEED,
        scheduler=scheduler,
        phase="source",
        **engine,
    )


def neurochip_render(
    model: RiffusionModel,
    song: np.ndarray,
    settings: RenderSettings,
    takes: int = 1,
    together: bool = True,
    memory_limit: int | None = None,
):
    """A render function for :func:`timed`: the whole song as one piece.

    ``takes=2`` renders a stereo pair's takes A and B (seeds n and n + 1), in one denoising
    loop (``together``, as the app and CLI do) or one after the other; take A is returned.
    """
    all_settings = [replace(settings, seed=settings.seed + k) for k in range(takes)]
    device = model.device

    def render() -> tuple[np.ndarray, float]:
        # A fresh engine: its cache of song encodings must not carry over from the warm-up.
        engine, audio = Engine(model, PARAMS, memory_limit=memory_limit), Audio(song, SAMPLE_RATE)
        timer = StageTimer(device)
        if together:
            renders = engine.render_many(audio, all_settings, timer.progress)
        else:
            renders = [engine.render(audio, s, timer.progress) for s in all_settings]
        render.stages_s = timer.seconds()
        # The engine's memory probes may reset CUDA's peak counter mid-render (only to measure
        # a probe hidden under an earlier peak); it keeps the peak from before, for this.
        render.peak_bytes = engine.peak_memory_bytes()
        return renders[0].audio.samples, song.shape[-1] / SAMPLE_RATE

    render.stages_s = {}
    render.peak_bytes = None
    return render


# --- contender 2: the Riffusion playground's clip loop ---------------------------------------


def make_img2img_pipeline(model: RiffusionModel) -> Any:
    """diffusers' img2img pipeline around the very same modules (no copies). The UNet as it
    was loaded, never compiled: the contender is the playground's loop, not ours made faster."""
    from diffusers import StableDiffusionImg2ImgPipeline

    pipeline = StableDiffusionImg2ImgPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=getattr(model.unet, "_orig_mod", model.unet),
        scheduler=model.make_scheduler(SCHEDULER),  # DPM++ from the same config as the engine
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def riffusion_clip_starts_ms(duration_s: float) -> list[int]:
    """Clip start times in ms, computed as Riffusion's playground computes them.

    ``np.arange(0, duration - clip, clip - overlap)`` stops short of the song's end, so the
    last few seconds are never rendered (up to one increment plus the overlap); and starts are
    truncated to whole ms (3 * 4.8 s becomes 14399 ms). Both kept: this is the loop people ran.
    A song of one clip's length or less gets one clip (the playground would render nothing).
    """
    starts = np.arange(0, duration_s - CLIP_SECONDS, CLIP_SECONDS - OVERLAP_SECONDS)
    return [int(t * 1000) for t in starts] or [0]


def riffusion_clips(song: np.ndarray, starts_ms: Sequence[int]) -> list[np.ndarray]:
    """5 s clips at the given starts; one that runs past the end is padded with silence
    (the playground pads its last clip the same way)."""
    length = round(CLIP_SECONDS * SAMPLE_RATE)
    clips = []
    for start_ms in starts_ms:
        start = start_ms * SAMPLE_RATE // 1000  # pydub slices by ms, i.e. 44.1 samples each
        clip = song[:, start : start + length]
        clips.append(np.pad(clip, ((0, 0), (0, length - clip.shape[-1]))))
    return clips


def scale_to_stride(image: Image.Image, stride: int) -> Image.Image:
    """The playground's ``scale_image_to_32_stride``: a bicubic resize (not a pad or crop) up
    to the next multiple of 32 px. A 5 s clip is 501 columns, so 501 -> 512 wide; the height,
    512, stays. diffusers would otherwise round down to a multiple of 8 (496) on its own."""
    width = math.ceil(image.width / stride) * stride
    height = math.ceil(image.height / stride) * stride
    return image.resize((width, height), Image.Resampling.BICUBIC)


def riffusion_clip(
    pipeline: Any,
    clip: np.ndarray,
    device: torch.device,
    prompt: str,
    denoise: float,
    steps: int,
    seed: int = SEED,
) -> np.ndarray:
    """One clip through Riffusion's audio-to-audio path; returns (1, samples) float32."""
    waveform = torch.from_numpy(clip).to(device)
    image = image_from_amplitudes(mel_amplitudes(waveform, PARAMS), PARAMS)  # 8-bit, EXIF
    result = pipeline(
        prompt=prompt,
        image=scale_to_stride(image, RIFFUSION_STRIDE_PX),
        strength=denoise,
        guidance_scale=GUIDANCE,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(seed),  # the same seed for every clip
    ).images[0]
    # Back to the clip's width, as the playground does ("Resize back to original size").
    result = result.resize(image.size, Image.Resampling.BICUBIC)
    # The model's output carries no EXIF; give it the clip's, so it decodes as mono (Riffusion
    # reads the R channel of a mono-params image) instead of being guessed stereo from noise.
    result.info["exif"] = image.info["exif"]
    amplitudes = amplitudes_from_image(result).amplitudes.to(device)
    # Riffusion's inverse: random initial phase, 32 Griffin-Lim iterations, length
    # (columns - 1) * hop = 5 s. (Riffusion's torchaudio InverseMelScale is an SGD solve, far
    # slower than neurochip's NNLS used here: if anything this loop is faster than the real one.)
    audio = waveform_from_amplitudes(
        amplitudes,
        PARAMS,
        settings=PhaseSettings(mode="random", iterations=RIFFUSION_GL_ITERATIONS),
    )
    audio = audio.cpu().numpy()
    peak = float(np.abs(audio).max())
    if peak > 0:  # Riffusion normalises every clip (pydub effects.normalize)
        audio = audio * (0.99 / peak)
    return audio.astype(np.float32)


def crossfade_join(pieces: Sequence[np.ndarray], overlap: int) -> np.ndarray:
    """Clips joined end to start with linear crossfades of ``overlap`` samples; each join
    shortens the total by the overlap, as pydub's ``append(crossfade=...)`` does."""
    out = pieces[0]
    for piece in pieces[1:]:
        n = min(overlap, out.shape[-1], piece.shape[-1])
        ramp = (np.arange(n, dtype=np.float32) + 0.5) / n
        mixed = out[:, out.shape[-1] - n :] * (1 - ramp) + piece[:, :n] * ramp
        out = np.concatenate([out[:, : out.shape[-1] - n], mixed, piece[:, n:]], axis=-1)
    return out


def riffusion_render(
    pipeline: Any,
    song: np.ndarray,
    device: torch.device,
    prompt: str,
    denoise: float,
    steps: int,
    takes: int = 1,
):
    """A render function for :func:`timed`: the whole clip loop, slicing to joining.

    With ``takes=2`` (a stereo pair) the loop runs twice, the second time with the next seed,
    as a composer doing it by hand would; the first take's audio is returned.
    """

    def render() -> tuple[np.ndarray, float]:
        duration = song.shape[-1] / SAMPLE_RATE
        starts = riffusion_clip_starts_ms(duration)
        joined = []
        for take in range(takes):
            with torch.no_grad():
                pieces = [
                    riffusion_clip(pipeline, clip, device, prompt, denoise, steps, SEED + take)
                    for clip in riffusion_clips(song, starts)
                ]
            joined.append(crossfade_join(pieces, round(OVERLAP_SECONDS * SAMPLE_RATE)))
        covered = min(duration, starts[-1] / 1000 + CLIP_SECONDS)
        return joined[0], covered

    return render


# --- input ----------------------------------------------------------------------------------


def load_song(path: str | None, seconds: float) -> tuple[np.ndarray, str]:
    """(1, samples) mono float32 at 44.1 kHz, and a label. Both contenders get this array."""
    if path is None:
        import_tests()
        from tests.chiptune import make_chiptune

        return make_chiptune(seconds, stereo=False, seed=0), SYNTH_LABEL
    audio = load_audio(path).span(0.0, seconds).to_mono().resample(SAMPLE_RATE)
    return audio.samples, Path(path).name


# --- report -----------------------------------------------------------------------------------


def print_table(results: Sequence[Result], input_samples: int) -> None:
    header = (
        f"{'contender':<18} {'wall s':>8} {'audio s':>7} {'x RT':>7}  {'UNet items':>10} "
        f"{'calls':>5} {'per call':>8}  {'VAE Mpx':>7}  {'peak GPU MiB':>12}  "
        f"{'out samples':>11} {'diff':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        peak = f"{r.peak_gpu_mib:12.0f}" if r.peak_gpu_mib is not None else f"{'n/a':>12}"
        print(
            f"{r.contender:<18} {r.wall_s:8.2f} {r.audio_s:7.2f} {r.realtime_x:7.3f}  "
            f"{r.unet_items:>10} {r.unet_calls:>5} {r.unet_items / max(1, r.unet_calls):8.1f}  "
            f"{r.vae_megapixels:7.2f}  {peak}  "
            f"{r.output_samples:>11} {r.length_diff_samples:>+7}"
        )
    print(f"input: {input_samples} samples ({input_samples / SAMPLE_RATE:.2f} s)")
    for r in results:
        if r.tflop is not None:
            achieved = f"{r.tflops_achieved:.3g} TFLOP/s"
            if r.peak_share is not None:
                achieved += f" ({100 * r.peak_share:.0f}% of the device's dense fp16 peak)"
            print(f"{r.contender}: {r.tflop:.3g} TFLOP of model arithmetic (counted), {achieved}")
        if r.stages_s:
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in r.stages_s.items())
            print(
                f"{r.contender} stages: {stages}; outside the model "
                f"{100 * (r.non_model_share or 0):.0f}% of the wall time"
            )
    for r in results:
        if len(r.wall_s_all) > 1:
            walls = ", ".join(f"{w:.2f}" for w in r.wall_s_all)
            print(f"{r.contender} wall s of every run: {walls}")


def print_findings(results: Sequence[Result]) -> dict[str, float]:
    by_name = {r.contender: r for r in results}
    neuro = by_name["NeuroChip"]
    exact = "exactly the input's length" if neuro.length_diff_samples == 0 else "WRONG LENGTH"
    print(f"NeuroChip output: {exact}")
    loop = by_name.get("Riffusion loop")
    if loop is None:
        return {}
    print(
        f"Riffusion loop output: {loop.length_diff_samples:+d} samples "
        f"({loop.length_diff_samples / SAMPLE_RATE * 1000:+.0f} ms) against the input; "
        f"it covers {loop.audio_s:.2f} s of the input in {loop.clips} clips"
    )
    ratios = {
        "speed_ratio": neuro.realtime_x / loop.realtime_x,
        "wall_ratio": neuro.wall_s / loop.wall_s,
        "unet_items_ratio": neuro.unet_items / loop.unet_items,
    }
    print(
        f"NeuroChip / Riffusion loop: {ratios['speed_ratio']:.2f} x the speed (x RT), "
        f"{ratios['wall_ratio']:.2f} x the wall time, "
        f"{ratios['unet_items_ratio']:.2f} x the UNet items"
    )
    return ratios


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Speed of a full-song render: NeuroChip's engine against Riffusion's "
        "clip loop, on the SD 1.5 architecture with random weights (speed only, never sound).",
    )
    parser.add_argument("file", nargs="?", help=f"audio file (default: a {SYNTH_LABEL})")
    parser.add_argument(
        "--quick", action="store_true", help="reduced-width model, 10 s, 10 steps: for a CPU"
    )
    parser.add_argument("--seconds", type=float, default=None, help="audio length (180; quick 10)")
    parser.add_argument("--steps", type=int, default=None, help="scheduler steps (50; quick 10)")
    parser.add_argument("--denoise", type=float, default=0.35, help="img2img strength (0.35)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="text prompt (speed: any)")
    parser.add_argument(
        "--guidance",
        type=float,
        default=GUIDANCE,
        help=f"NeuroChip's guidance ({GUIDANCE:g}; 1 skips the unprompted half: LCM drafts)",
    )
    parser.add_argument(
        "--scheduler",
        default=SCHEDULER,
        help=f"NeuroChip's scheduler ({SCHEDULER}; lcm for LCM drafts; the loop keeps {SCHEDULER})",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="the smallest SD layout: a dry run of the steps on a CPU, in seconds",
    )
    parser.add_argument(
        "--warmup-full",
        action="store_true",
        help="warm up on the whole song (the timed shapes: a compile or CUDA graphs are made "
        "there, not in the timed run); the warm-up's time is reported apart",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="auto: fp16 on CUDA, fp32 on the CPU",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="timed runs per contender, alternating; the best is kept (use 3 on a busy CPU)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--single",
        action="store_true",
        help="one take instead of a stereo pair (takes A and B: NeuroChip's in one loop and "
        "in turn, the clip loop twice; the default)",
    )
    parser.add_argument("--pair", action="store_true", help=argparse.SUPPRESS)  # the default
    parser.add_argument(
        "--count-only",
        action="store_true",
        help="count UNet items and calls of both contenders, running no model",
    )
    parser.add_argument(
        "--count-batch",
        type=int,
        default=COUNT_BATCH,
        help=f"UNet items per call --count-only assumes ({COUNT_BATCH}, the auto batch's cap)",
    )
    parser.add_argument(
        "--memory-cap-gb",
        type=float,
        default=None,
        help="CUDA: cap this process's GPU memory (torch's per-process fraction) and the "
        "engine's auto batch at this many GiB, e.g. 8 for a consumer card",
    )
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="torch.compile the UNet (the warm-up pays for the compile; untimed); MODE "
        "reduce-overhead adds CUDA graphs",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="the UNet's and VAE's weights in channels-last memory order",
    )
    add_engine_options(parser)
    parser.add_argument(
        "--skip-riffusion", action="store_true", help="time NeuroChip only (no clip loop)"
    )
    args = parser.parse_args(argv)
    args.seconds = args.seconds if args.seconds is not None else (10.0 if args.quick else 180.0)
    args.steps = args.steps if args.steps is not None else (10 if args.quick else 50)
    if not args.seconds >= 1.0:
        parser.error("--seconds must be 1 or more")
    if not 1 <= args.steps <= 1000:
        parser.error("--steps must be 1-1000")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    if not 0 < args.denoise <= 1:
        parser.error("--denoise must be more than 0 and at most 1")
    if int(args.steps * args.denoise) < 1:
        # Both contenders run int(steps * denoise) steps; with none, neither uses the model.
        parser.error("--steps x --denoise must give at least one denoising step")
    return args


def log(message: str) -> None:
    # Progress on stderr, so the table on stdout stays clean when redirected.
    print(message, file=sys.stderr, flush=True)


def count_contenders(seconds: float, settings: RenderSettings, takes: int, batch: int):
    """UNet items and calls of both contenders, without a model (``--count-only``)."""
    all_settings = [replace(settings, seed=settings.seed + k) for k in range(takes)]
    frames = PARAMS.num_frames(round(seconds * SAMPLE_RATE))
    neuro = count_unet_work(frames, all_settings, batch)
    clips = len(riffusion_clip_starts_ms(seconds))
    per_clip = settings.denoise_steps  # one call a step, the guidance pair in it
    guided = 2 if settings.guidance > 1.0 else 1
    loop = {
        "unet_items": takes * clips * per_clip * guided,
        "unet_calls": takes * clips * per_clip,
        "clips": clips,
    }
    return {
        "seconds": seconds,
        "takes": takes,
        "batch": batch,
        "settings": settings.to_dict(),
        "NeuroChip": neuro,
        "Riffusion loop": loop,
        "unet_items_ratio": neuro["unet_items"] / loop["unet_items"],
        "full_items_ratio": neuro["full_items"] / loop["unet_items"],
    }


def print_counts(counts: dict[str, Any]) -> None:
    neuro, loop = counts["NeuroChip"], counts["Riffusion loop"]
    what = "a stereo pair" if counts["takes"] == 2 else "one take"
    print(
        f"{counts['seconds']:g} s, {what}, at most {counts['batch']} items a call "
        "(counted, no model run)"
    )
    print(
        f"NeuroChip:      {neuro['unet_items']:>7} UNet items in {neuro['unet_calls']:>5} calls"
        f" ({neuro['full_items']} items in {neuro['full_calls']} whole evaluations)"
    )
    print(
        f"Riffusion loop: {loop['unet_items']:>7} UNet items in {loop['unet_calls']:>5} calls"
        f" ({loop['clips']} clips a take)"
    )
    print(
        f"NeuroChip / loop: {counts['unet_items_ratio']:.2f} x the UNet items, "
        f"{counts['full_items_ratio']:.2f} x counting whole evaluations only"
    )


def keep_partial(path: Path | None, runs: dict[str, list[Result]]) -> None:
    """The runs so far, in the JSON: a step cut off by its time limit keeps them (the full
    report replaces this at the end)."""
    if path is not None:
        done = [asdict(r) for contender in runs.values() for r in contender]
        path.write_text(json.dumps({"partial": True, "results": done}, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    takes = 1 if args.single else 2
    try:
        settings = neurochip_settings(
            args.prompt,
            args.denoise,
            args.steps,
            args.guidance,
            args.scheduler,
            **engine_settings(args),
        )
        if args.count_only:
            counts = count_contenders(args.seconds, settings, takes, args.count_batch)
            print_counts(counts)
            if args.json is not None:
                args.json.write_text(json.dumps(counts, indent=2) + "\n")
                print(f"wrote {args.json}")
            return 0
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
        song, label = load_song(args.file, args.seconds)
    except NeuroChipError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    memory_limit = None
    if args.memory_cap_gb is not None and device.type == "cuda":
        memory_limit = int(args.memory_cap_gb * 2**30)
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, memory_limit / total), device)
    if device.type == "cpu":
        # Engine() turns on flush-denormal process-wide on the CPU. Set here for both, so the
        # loop is not timed with it off before the engine exists and on after; flushing also
        # keeps random weights from changing CPU speed through denormal arithmetic.
        torch.set_flush_denormal(True)

    arch = TINY if args.tiny else QUICK if args.quick else FULL
    log(f"building {arch.name} on {device} ...")
    model = build_model(arch, device, dtype)
    if args.channels_last:
        model.use_channels_last()
    if args.compile:
        model.compile_unet(mode=args.compile)  # compiled at the warm-up's first call
    params = parameter_counts(model)
    if device.type == "cuda" and not args.quick and song.shape[-1] / SAMPLE_RATE < 30:
        log("note: short songs are dominated by fixed costs; the full benchmark uses 60 s")

    warm_s = args.seconds if args.warmup_full else min(WARMUP_SECONDS, args.seconds)
    warm = song[:, : round(warm_s * SAMPLE_RATE)]
    pipeline = None if args.skip_riffusion else make_img2img_pipeline(model)
    loop = None
    if pipeline is not None:
        loop = riffusion_render(
            pipeline, song, device, args.prompt, args.denoise, args.steps, takes
        )

    # Warm-up: first calls pay for kernel selection, allocator growth and cached filters.
    log(f"warming up on {warm_s:g} s ...")
    warm_began = time.perf_counter()
    neurochip_render(model, warm, settings, takes)()
    synchronize(device)
    warmup_s = time.perf_counter() - warm_began  # a compile's time, where there is one
    if pipeline is not None:
        riffusion_render(pipeline, warm, device, args.prompt, args.denoise, args.steps)()
    synchronize(device)

    contenders = {"NeuroChip": neurochip_render(model, song, settings, takes, True, memory_limit)}
    if takes > 1:
        # The same pair with its takes rendered in turn: what sharing the loop saves.
        contenders["NeuroChip, in turn"] = neurochip_render(
            model, song, settings, takes, False, memory_limit
        )
    clips = len(riffusion_clip_starts_ms(song.shape[-1] / SAMPLE_RATE))
    runs: dict[str, list[Result]] = {name: [] for name in [*contenders, "Riffusion loop"]}
    # Repeats alternate between the contenders, so a slow spell of a shared machine hits both.
    for k in range(args.repeat):
        for name, render in contenders.items():
            log(f"[{k + 1}/{args.repeat}] {name}: {song.shape[-1] / SAMPLE_RATE:.2f} s ...")
            runs[name].append(timed(name, render, model, song.shape[-1]))
            keep_partial(args.json, runs)
        if loop is not None:
            # The playground renders with the VAE as loaded: undo the tiling the engine left on.
            model.vae.disable_tiling()
            log(f"[{k + 1}/{args.repeat}] Riffusion loop: {clips} clips ...")
            runs["Riffusion loop"].append(
                timed("Riffusion loop", loop, model, song.shape[-1], clips)
            )
            keep_partial(args.json, runs)
    results = [best_of(r) for r in runs.values() if r]
    log("counting the model's arithmetic ...")
    arithmetic = count_arithmetic(model)
    peak = device_peak_tflops(device)
    frames = PARAMS.num_frames(song.shape[-1])
    for r in results:
        shallow = 0
        if r.contender.startswith("NeuroChip"):
            work = count_unet_work(
                frames, [replace(settings, seed=SEED + k) for k in range(takes)], 1 << 30
            )
            shallow = work["unet_items"] - work["full_items"]
            in_model = sum(r.stages_s.get(k, 0.0) for k in ("encode", "denoise", "decode"))
            # What no stage accounts for: the engine's own work between them.
            r.stages_s["other"] = max(0.0, r.wall_s - sum(r.stages_s.values()))
            r.non_model_share = max(0.0, 1 - in_model / r.wall_s)
        r.tflop = arithmetic.of(r, shallow) / 1e12
        r.tflops_achieved = r.tflop / r.wall_s
        r.peak_share = None if peak is None else r.tflops_achieved / peak

    print(
        f"model: {model.source}; UNet {params['unet']:.1f}M, VAE {params['vae']:.1f}M, "
        f"text encoder {params['text_encoder']:.1f}M parameters"
    )
    print(
        "WEIGHTS ARE RANDOM: the output is noise. Only speed, work counts and lengths mean "
        "anything here, never the sound."
    )
    print(
        f"device: {describe_device(device)}, {str(dtype).removeprefix('torch.')}, "
        f"torch {torch.__version__}, threads: {torch.get_num_threads()}; "
        f"wall: best of {args.repeat}"
    )
    print(
        f"input: {label}, {song.shape[-1] / SAMPLE_RATE:.2f} s mono; steps {args.steps}, "
        f"denoise {args.denoise} ({settings.denoise_steps} denoising steps), guidance "
        f"{args.guidance:g}, seed {SEED}, {args.scheduler}; NeuroChip: phase source"
        + ("; a stereo pair: takes A and B (seed + 1) in every row" if takes > 1 else "")
        + (
            ""
            if loop is None
            else f"; Riffusion loop: {CLIP_SECONDS:g} s clips, {OVERLAP_SECONDS:g} s "
            f"crossfades, random phase x {RIFFUSION_GL_ITERATIONS}"
        )
    )
    print()
    print_table(results, song.shape[-1])
    print()
    ratios = print_findings(results)
    total = time.perf_counter() - started
    print(f"benchmark run time (build, warm-up, both renders): {total:.1f} s")

    if args.json is not None:
        report = {
            "model": model.source,
            "random_weights": True,
            "parameters_millions": params,
            "device": describe_device(device),
            "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "input": label,
            "synthesised": args.file is None,
            "input_samples": int(song.shape[-1]),
            "settings": settings.to_dict(),
            "riffusion_loop": {
                "clip_s": CLIP_SECONDS,
                "overlap_s": OVERLAP_SECONDS,
                "griffin_lim_iterations": RIFFUSION_GL_ITERATIONS,
            },
            "results": [asdict(r) for r in results],
            "arithmetic_flop": asdict(arithmetic),
            "device_peak_tflops": peak,
            "memory_cap_gb": args.memory_cap_gb,
            "compile": args.compile,
            "warmup_s": warmup_s,
            "warmup_seconds_of_song": warm_s,
            "channels_last": args.channels_last,
            "takes": takes,
            "ratios": ratios,
            "benchmark_run_s": total,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
