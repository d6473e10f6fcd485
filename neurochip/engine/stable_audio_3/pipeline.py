"""Stable Audio 3 over a stretch of latents: the algorithm, top to bottom.

:func:`generate` is one call's path for several takes at once: (1) each take's conditions,
(2) where each take starts: the song's latents noised to the take's level (audio-to-audio),
or pure noise with the latents to keep and their mask (inpainting), (3) the log-SNR schedule
from that level down, (4) the rectified-flow loop, (5) decoding. Its components are
diffusers' :class:`~diffusers.StableAudio3AudioToAudioPipeline`'s (text encoder, duration
embedder, DiT, SAME autoencoder, scheduler); for one take of a whole song it computes what
that pipeline computes with a generator of the take's seed (a test holds it to that).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from neurochip.engine.progress import StagedProgress
from neurochip.settings import RenderSettings

#: The log-SNR range of the published schedule (the pipelines' defaults).
LOGSNR_MIN, LOGSNR_MAX = -6.2, 2.0


class NoiseStream:
    """The noise a take grows from, and the fresh noise each stochastic step mixes in: one
    draw over the whole song per use, from the take's seed on the CPU (the same take on every
    device), cut to the frames rendered, so a region of the song gets the noise the whole
    render puts there. ``period`` (offset, length) makes every draw repeat (a loop, rendered
    with its own ends wrapped round it)."""

    def __init__(
        self, seed: int, frames: int, dim: int, period: tuple[int, int] | None = None
    ) -> None:
        self.generator = torch.Generator("cpu").manual_seed(int(seed))
        self.frames, self.dim, self.period = frames, dim, period

    def next(self, lo: int, hi: int) -> torch.Tensor:
        """The next draw (1, dim, hi - lo): frames ``lo`` .. ``hi`` of the song's."""
        if self.period is None:
            return torch.randn((1, self.dim, self.frames), generator=self.generator)[..., lo:hi]
        offset, length = self.period
        one = torch.randn((1, self.dim, length), generator=self.generator)
        return one[..., (torch.arange(lo, hi) - offset) % length]


def sigmas(steps: int, level: float) -> list[float]:
    """Noise levels of ``steps`` steps from ``level`` down, as the published schedule warps
    them (diffusers' own ``logsnr_sigma_schedule``); the scheduler appends the final 0."""
    from diffusers.pipelines.stable_audio_3.pipeline_stable_audio_3_audio2audio import (
        logsnr_sigma_schedule,
    )

    return logsnr_sigma_schedule(steps, LOGSNR_MIN, LOGSNR_MAX, sigma_max=level)


def conditions(pipe: Any, prompt: str, duration_s: float, cache: dict):
    """(1) A take's conditions: its prompt's tokens with the duration's token after them
    (cross-attention, with their mask), and the duration alone (the DiT's global input)."""
    key = (prompt, round(duration_s, 3))
    if key not in cache:
        device = pipe.transformer.device
        text, mask = pipe.encode_prompt(prompt, device, 1)
        duration = pipe.encode_duration(duration_s, device, 1, 1)
        context, context_mask = pipe.prepare_cross_attention(text, mask, duration)
        cache[key] = (context, context_mask, duration)
    return cache[key]


@torch.no_grad()
def generate(
    pipe: Any,
    reference: torch.Tensor,
    takes: Sequence[RenderSettings],
    noise: Sequence[NoiseStream],
    window: tuple[int, int],
    report: StagedProgress,
    prompt_cache: dict,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Several takes over latent frames ``window`` of their songs, each as it comes out alone.

    ``reference`` (takes, dim, frames) is the song's latents over the window. Without
    ``keep`` each take is a variation of it at its ``denoise`` (the noise level it is mixed
    to); with ``keep`` (frames,) of 1 (keep) and 0 (make), the frames marked 0 are inpainted
    from pure noise, hearing the kept ones. Returns the waveforms (takes, channels, samples).
    """
    transformer, scheduler = pipe.transformer, pipe.scheduler
    device, dtype = transformer.device, transformer.dtype
    lo, hi = window
    seconds = (hi - lo) * pipe.vae.downsampling_ratio / pipe.vae.config.sampling_rate
    reference = reference.to(device, torch.float32)
    stochastic = bool(scheduler.config.stochastic_sampling)

    # 1. Conditions, per take (prompts seen before come from the cache).
    conds = [conditions(pipe, take.prompt, seconds, prompt_cache) for take in takes]
    context = torch.cat([c[0] for c in conds]).to(dtype)
    context_mask = torch.cat([c[1] for c in conds])
    duration = torch.cat([c[2] for c in conds]).to(dtype)
    local = None
    if keep is not None:  # the inpainting pathway: the mask, and the latents it keeps
        mask = keep.to(device, torch.float32).view(1, 1, -1).expand(len(takes), 1, -1)
        local = torch.cat([mask, reference * mask], dim=1).to(dtype)

    # 2. Where each take starts: the reference mixed with its noise at its level.
    levels = [1.0 if keep is not None else float(take.denoise) for take in takes]
    x = torch.cat([stream.next(lo, hi) for stream in noise]).to(device)
    level = torch.tensor(levels, device=device).view(-1, 1, 1)
    x = (1.0 - level) * reference + level * x

    # 3-4. The loop: takes sharing a schedule (steps, level) step together.
    groups: dict[tuple[int, float], list[int]] = {}
    for i, take in enumerate(takes):
        if levels[i] > 0:  # denoise 0: the song's latents as they are
            groups.setdefault((take.steps, levels[i]), []).append(i)
    total = sum(steps for steps, _ in groups) or 1
    done = 0
    for (steps, top), members in groups.items():
        scheduler.set_timesteps(sigmas=sigmas(steps, top), device=device)
        ts, sig = scheduler.timesteps, scheduler.sigmas.tolist()
        for step in range(steps):
            report.stage("denoise", (done + step) / total, "denoise")
            v = transformer(
                x[members].to(dtype),
                ts[step].expand(len(members)),
                encoder_hidden_states=context[members],
                global_hidden_states=duration[members],
                encoder_attention_mask=context_mask[members],
                local_add_cond=None if local is None else local[members],
                return_dict=False,
            )[0].float()
            now, then = sig[step], sig[step + 1]
            if stochastic:  # "ping-pong": predict the clean latents, noise them to the next level
                fresh = torch.cat([noise[i].next(lo, hi) for i in members]).to(device)
                x[members] = (1.0 - then) * (x[members] - now * v) + then * fresh
            else:
                x[members] = x[members] + (then - now) * v
        done += steps

    # 5. Decode, a take at a time (a whole song's decoder activations are large).
    waves = []
    for i in range(len(takes)):
        report.stage("decode", i / len(takes), "decode")
        wave = pipe.vae.decode(x[i : i + 1].to(pipe.vae.dtype)).sample
        waves.append(wave.float().clamp(-1.0, 1.0))
    return torch.cat(waves)
