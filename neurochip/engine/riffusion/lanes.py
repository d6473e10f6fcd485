"""One take in a shared denoising loop (a lane), and the noise it grows from.

Takes rendered together each keep their own scheduler, prompts, guidance and latents; the
loop in :mod:`neurochip.engine.riffusion.pipeline` sends all their windows through shared
UNet calls and steps each lane with its own prediction.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from neurochip.engine.riffusion.windows import voice_weights
from neurochip.model import RiffusionModel
from neurochip.settings import RenderSettings


@dataclass
class Lane:
    """One take in a shared denoising loop: its schedule, prompts and latents.

    A take with a prompt timeline (``settings.sections``) has several *voices*: its own
    conditioning and each section's (prompt, negative prompt, guidance, denoise). Each latent
    column follows the voices by ``weights`` (a row per voice, summing to one per column:
    one voice inside a section, two across a boundary's transition). A column whose denoise
    is below the strongest joins the loop later (differential diffusion): until its step it
    is held at the sketch's latents noised to the current level.
    """

    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    positives: list[torch.Tensor]  # (1, 77, dim) prompt embedding per voice
    negatives: list[torch.Tensor | None]  # the negative prompt's, where guidance is on
    guidances: list[float]
    strengths: list[float]  # denoise per voice
    guided_steps: int  # the first steps follow the prompt with guidance
    step_options: dict[str, Any]
    noise: torch.Tensor  # what was added to the latents at the start
    init: torch.Tensor  # the sketch's latents, before any noise
    steps: int  # the schedule's full length (denoise 1)
    weights: torch.Tensor | None = None  # (voices, columns); None: the one voice everywhere
    joins: torch.Tensor | None = None  # (columns,) the step each column joins; None: all at 0

    def guided_at(self, k: int, voice: int = 0) -> bool:
        return self.negatives[voice] is not None and k < self.guided_steps

    def items(self, k: int, voice: int = 0) -> int:
        """UNet batch items per window at step ``k``: the guidance pair is two."""
        return 2 if self.guided_at(k, voice) else 1

    def voices_in(self, columns: slice | list[int]) -> list[int]:
        """The voices with any weight in these columns."""
        if self.weights is None:
            return [0]
        present = self.weights[:, columns].amax(dim=-1) > 0
        return [int(v) for v in torch.nonzero(present).flatten()]

    def place(
        self, settings: RenderSettings, origin: int, width: int, column_s: float, start_s: float
    ) -> None:
        """Lay the prompt timeline over latent columns ``origin`` .. ``+ width`` of a span
        starting ``start_s`` into the song (``column_s`` seconds a column)."""
        weights = voice_weights(settings, origin, width, column_s, start_s)
        if weights is None:
            return
        device = self.latents.device
        self.weights = weights.to(device)
        strength = (self.weights * torch.tensor(self.strengths, device=device)[:, None]).sum(0)
        own = torch.floor(self.steps * strength + 1e-6).clamp(max=len(self.timesteps))
        self.joins = (len(self.timesteps) - own).long()

    @classmethod
    def start(
        cls,
        model: RiffusionModel,
        latents: torch.Tensor,
        noise: torch.Tensor,
        settings: RenderSettings,
        embed: Callable[[str], torch.Tensor],
    ) -> Lane:
        scheduler = model.make_scheduler(settings.scheduler)
        scheduler.set_timesteps(settings.steps, device=model.device)
        # img2img: skip the first (1 - denoise) of the schedule, as diffusers' pipeline does
        # (the strongest denoise anywhere in the take: the rest join later).
        t_start = settings.steps - settings.denoise_steps
        timesteps = scheduler.timesteps[t_start * scheduler.order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * scheduler.order)
        # Ancestral schedulers draw fresh noise each step: seed it too. Not every scheduler's
        # step() takes a generator (PNDM does not), so pass it only where accepted.
        step_options: dict[str, Any] = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_options["generator"] = torch.Generator("cpu").manual_seed(settings.seed + 1)
        # The take's own voice, then each section's (its overrides resolved on the take).
        voices = [(settings.prompt, settings.negative_prompt, settings.guidance, settings.denoise)]
        voices += [tuple(section.resolve(settings)) for section in settings.sections]
        return cls(
            scheduler=scheduler,
            timesteps=timesteps,
            latents=scheduler.add_noise(latents, noise, timesteps[:1]),
            positives=[
                interpolated(embed, prompt, settings) if i == 0 else embed(prompt)
                for i, (prompt, _, _, _) in enumerate(voices)
            ],  # fmt: skip
            negatives=[embed(negative) if g > 1.0 else None for _, negative, g, _ in voices],
            guidances=[g for _, _, g, _ in voices],
            strengths=[d for _, _, _, d in voices],
            guided_steps=settings.guided_steps,
            step_options=step_options,
            noise=noise,
            init=latents,
            steps=settings.steps,
        )

    def step(self, noise_pred: torch.Tensor, k: int) -> None:
        t = self.timesteps[k]
        self.latents = self.scheduler.step(
            noise_pred, t, self.latents, **self.step_options
        ).prev_sample.float()
        if self.joins is not None and bool((self.joins > k + 1).any()):
            # Columns whose denoise is weaker join later: until then, the sketch's latents at
            # the next step's noise level (differential diffusion).
            waiting = (self.joins > k + 1).float().view(1, 1, 1, -1)
            self.keep(self.init, 1 - waiting, k)

    def keep(self, kept: torch.Tensor, mask: torch.Tensor, k: int) -> None:
        """After step ``k``: where ``mask`` is 0, the kept latents at the next step's noise
        level (after the last step, as they are); where it is 1, this take's own."""
        if k + 1 < len(self.timesteps):
            kept = self.scheduler.add_noise(kept, self.noise, self.timesteps[k + 1 : k + 2])
        self.latents = kept + mask * (self.latents - kept)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, parallel: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation from ``v0`` (t = 0) to ``v1`` (t = 1): two noises' mix keeps a
    noise's norm where a straight mix would shrink it; nearly parallel ones mix straight."""
    # In float64 on the CPU: the angle of two long noises needs it, and Apple's GPU has none.
    a = v0.detach().to("cpu", torch.float64).flatten()
    b = v1.detach().to("cpu", torch.float64).flatten()
    dot = float(torch.dot(a, b) / (a.norm() * b.norm()))
    if abs(dot) > parallel:
        return (1 - t) * v0 + t * v1
    theta = math.acos(dot)
    mixed = (math.sin((1 - t) * theta) * a + math.sin(t * theta) * b) / math.sin(theta)
    return mixed.reshape(v0.shape).to(v0.device, v0.dtype)


def interpolated(
    embed: Callable[[str], torch.Tensor], prompt: str, settings: RenderSettings
) -> torch.Tensor:
    """The prompt's embedding, moved by ``alpha`` toward ``prompt_end``'s (Riffusion's
    interpolation is this straight mix of the two)."""
    start = embed(prompt)
    if not settings.prompt_end or settings.alpha == 0.0:
        return start
    return start + settings.alpha * (embed(settings.prompt_end) - start)


def take_noise(
    shape: torch.Size,
    settings: RenderSettings,
    device: torch.device,
    period: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A take's noise for the whole song: its seed's, or on the way (by ``alpha``) to
    another seed's, spherically, as Riffusion interpolates (the noise stays noise)."""
    noise = song_noise(shape, settings.seed, device, period)
    if settings.seed_end is None or settings.alpha == 0.0:
        return noise
    return slerp(settings.alpha, noise, song_noise(shape, settings.seed_end, device, period))


def song_noise(
    shape: torch.Size, seed: int, device: torch.device, period: tuple[int, int] | None = None
) -> torch.Tensor:
    """A seed's noise for the whole song (``period``: a loop's, (offset, length) in latent
    columns, repeating)."""
    # Drawn on the CPU so the same seed gives the same noise on every device.
    generator = torch.Generator("cpu").manual_seed(seed)
    if period is None:
        return torch.randn(tuple(shape), generator=generator).to(device)
    # Periodic: column c gets the noise of column (c - offset) mod period of one period.
    offset, length = period
    one = torch.randn((*shape[:-1], length), generator=generator)
    columns = (torch.arange(shape[-1]) - offset) % length
    return one[..., columns].to(device)
