"""ACE-Step 1.5 over a stretch of latents: the algorithm, top to bottom.

:func:`generate` is one call's path for several takes at once: (1) each take's conditions,
(2) the context the model hears (the source latents and the mask of what to make), (3) the
noise each take grows from, (4) the flow-matching loop, (5) decoding. Its components are
diffusers' :class:`~diffusers.AceStepPipeline`'s (text encoder, condition encoder, DiT, VAE);
what the model hears of the song is made by the backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from neurochip.engine.progress import StagedProgress
from neurochip.settings import RenderSettings

#: The tasks NeuroChip asks of ACE-Step: a cover of the source, a region of it made anew
#: (the rest heard as it is), and one instrument made to play along with it.
TASKS = ("cover", "repaint", "lego")

#: Reference audio the timbre encoder hears when none is given: its learned silence, this long.
TIMBRE_S = 30.0


@dataclass(frozen=True)
class Task:
    """What the model is asked: ``kind`` of :data:`TASKS`; ``track`` names lego's instrument."""

    kind: str = "cover"
    track: str = ""


@dataclass
class Conditions:
    """One take's cross-attention inputs: the task's, and a cover's text-only ones (for a
    cover strength below 1), and the learned null condition (for guidance)."""

    task: torch.Tensor  # (1, tokens, hidden)
    text_only: torch.Tensor | None = None
    null: torch.Tensor | None = None


def schedule(steps: int, shift: float) -> list[float]:
    """Noise levels 1 -> 0 of ``steps`` Euler steps (and the final 0), shifted toward the
    noisy end as ACE-Step's published schedule is."""
    levels = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    levels = shift * levels / (1 + (shift - 1) * levels)
    return [float(x) for x in levels]


def take_noise(seed: int, frames: int, dim: int, period: tuple[int, int] | None = None):
    """The noise a take grows from over a song of ``frames`` latent frames (1, frames, dim):
    drawn on the CPU from ``seed`` (the same take on every device), so a region of the song
    gets the noise the whole render puts there. ``period`` (offset, length) makes it repeat
    (a loop, rendered with its own ends wrapped round it)."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    if period is None:
        return torch.randn((1, frames, dim), generator=generator)
    offset, length = period
    one = torch.randn((1, length, dim), generator=generator)
    at = (torch.arange(frames) - offset) % length
    return one[:, at]


def conditions(
    pipe: Any, take: RenderSettings, task: Task, duration_s: float, cache: dict
) -> Conditions:
    """(1) A take's conditions: its prompt with the task's instruction and the song's facts
    (tempo, metre, key, length) in ACE-Step's prompt template; no lyrics (instrumental)."""
    key = (take.prompt, task, take.bpm, take.time_signature, take.key, int(duration_s))
    made = cache.get(key)
    if made is not None:
        return made

    def encode(instruction: str) -> torch.Tensor:
        device = pipe.transformer.device
        text, text_mask, lyric, lyric_mask = pipe.encode_prompt(
            prompt=take.prompt,
            lyrics="",
            device=device,
            audio_duration=duration_s,
            instruction=instruction,
            bpm=take.bpm,
            keyscale=take.key or None,
            timesignature=str(take.time_signature) if take.time_signature else None,
        )
        silence = pipe.condition_encoder.silence_latent
        timbre = silence[:, : math.ceil(TIMBRE_S * pipe.latents_per_second)]
        hidden, _ = pipe.condition_encoder(
            text_hidden_states=text,
            text_attention_mask=text_mask,
            lyric_hidden_states=lyric,
            lyric_attention_mask=lyric_mask,
            refer_audio_acoustic_hidden_states_packed=timbre.to(device, text.dtype),
            refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=device),
        )
        return hidden

    made = Conditions(encode(pipe._get_task_instruction(task.kind, task.track or None)))
    if task.kind == "cover":
        made.text_only = encode(pipe._get_task_instruction("text2music"))
    null = getattr(pipe.condition_encoder, "null_condition_emb", None)
    if null is not None:
        made.null = null.to(made.task.dtype).expand_as(made.task)
    cache[key] = made
    return made


def guided(pipe: Any, take: RenderSettings) -> bool:
    """Whether a take runs with guidance: base models above 1; turbo ones have it distilled."""
    return take.guidance > 1.0 and not getattr(pipe, "is_turbo", False)


@torch.no_grad()
def generate(
    pipe: Any,
    context: torch.Tensor,
    takes: Sequence[RenderSettings],
    task: Task,
    noise: torch.Tensor,
    report: StagedProgress,
    duration_s: float,
    prompt_cache: dict,
    decode: bool = True,
) -> torch.Tensor:
    """Several takes over one stretch of latent frames, each as it would come out alone.

    ``context`` (takes, frames, 2 x dim) is what each take hears: the source latents and the
    mask of the frames to make (:func:`context_latents`); ``noise`` (takes, frames, dim) what
    each grows from. Returns the waveforms (takes, channels, frames x the VAE's hop), or the
    latents where ``decode`` is False.
    """
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

    transformer = pipe.transformer
    device, dtype = transformer.device, transformer.dtype

    # 1. Conditions, per take (prompts seen before come from the cache).
    conds = [conditions(pipe, take, task, duration_s, prompt_cache) for take in takes]

    # 2-3. Context and noise on the device.
    context = context.to(device, dtype)
    x = noise.to(device, dtype)

    # 4. The flow-matching loop: takes sharing a schedule step together; within a step,
    # one DiT call per group of equally long conditions (a padded prompt would change a take).
    groups: dict[tuple[int, float], list[int]] = {}
    for i, take in enumerate(takes):
        groups.setdefault((take.steps, take.shift), []).append(i)
    total = sum(steps for steps, _ in groups) or 1
    done = 0
    for (steps, shift), members in groups.items():
        levels = schedule(steps, shift)
        momentum = {i: MomentumBuffer(momentum=-0.75) for i in members if guided(pipe, takes[i])}
        for step in range(steps):
            report.stage("denoise", (done + step) / total, "denoise")
            t = levels[step]
            v = velocity(
                pipe,
                x[members],
                t,
                context[members],
                [conds[i] for i in members],
                [takes[i] for i in members],
                [momentum.get(i) for i in members],
            )
            x[members] = x[members] + (levels[step + 1] - t) * v
        done += steps
    if not decode:
        return x

    # 5. Decode, a take at a time (a whole song's decoder activations are large).
    waves = []
    for i in range(len(takes)):
        report.stage("decode", i / len(takes), "decode")
        waves.append(pipe.vae.decode(x[i : i + 1].transpose(1, 2).to(pipe.vae.dtype)).sample)
    return torch.cat(waves).float()


def velocity(
    pipe: Any,
    x: torch.Tensor,
    t: float,
    context: torch.Tensor,
    conds: Sequence[Conditions],
    takes: Sequence[RenderSettings],
    momentum: Sequence[Any],
) -> torch.Tensor:
    """One step's predicted velocity of each take: the task's, blended with the text-only
    one by the cover strength, guided (APG, as ACE-Step's base models) where asked."""
    from diffusers.guiders.adaptive_projected_guidance import normalized_guidance

    out = torch.empty_like(x)
    by_length: dict[int, list[int]] = {}
    for i, cond in enumerate(conds):
        by_length.setdefault(cond.task.shape[1], []).append(i)
    for members in by_length.values():

        def pick(name: str, members: list[int] = members) -> torch.Tensor:
            return torch.cat([getattr(conds[i], name) for i in members])

        call = _dit(pipe, x[members], t, context[members])
        v = call(pick("task"))
        strength = torch.tensor(
            [takes[i].cover_strength for i in members], device=x.device, dtype=x.dtype
        ).view(-1, 1, 1)
        if any(takes[i].cover_strength < 1 for i in members) and conds[0].text_only is not None:
            # 1 x v + 0 x text-only is v exactly: a take at strength 1 is as it is alone.
            v = strength * v + (1 - strength) * call(pick("text_only"))
        for row, i in enumerate(members):
            if momentum[i] is None:
                continue
            unguided = _dit(pipe, x[i : i + 1], t, context[i : i + 1])(conds[i].null)
            v[row : row + 1] = normalized_guidance(
                pred_cond=v[row : row + 1],
                pred_uncond=unguided,
                guidance_scale=takes[i].guidance - 1.0,
                momentum_buffer=momentum[i],
                eta=0.0,
                norm_threshold=2.5,
                use_original_formulation=True,
                norm_dim=(1,),
            )
        out[members] = v
    return out


def _dit(pipe: Any, x: torch.Tensor, t: float, context: torch.Tensor):
    """The DiT at noise level ``t`` over ``x``, as a function of the conditions."""
    level = torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype)

    def call(encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return pipe.transformer(
            hidden_states=x,
            timestep=level,
            timestep_r=level,
            encoder_hidden_states=encoder_hidden_states,
            context_latents=context,
            return_dict=False,
        )[0]

    return call


def context_latents(source: torch.Tensor, make: torch.Tensor, silence: torch.Tensor | None = None):
    """What the DiT hears besides the noise (takes, frames, 2 x dim): the source latents and
    the mask of the frames to make (1) or keep (0), per latent channel. ``silence`` (frames,
    dim) replaces the source where frames are made (a repaint does not hear what it replaces)."""
    mask = make.view(1, -1, 1).to(source.dtype).expand_as(source)
    if silence is not None:
        source = torch.where(mask > 0.5, silence.to(source.dtype).expand_as(source), source)
    return torch.cat([source, mask], dim=-1)
