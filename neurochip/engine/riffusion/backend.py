"""Riffusion (or any Stable Diffusion 1.x model) as a NeuroChip backend.

A song is one mel-spectrogram picture; its latents are denoised whole, in overlapping windows
(:mod:`~neurochip.engine.riffusion.pipeline`), decoded in tiles, and its audio rebuilt with
the sketch's own phase (:mod:`neurochip.phase`), so a take has exactly the sketch's length.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from neurochip.engine.backend import Capabilities, Render, RenderJob
from neurochip.engine.device import MemoryProbe, batch_for_memory
from neurochip.engine.progress import StagedProgress
from neurochip.engine.riffusion.lanes import song_noise
from neurochip.engine.riffusion.latents import (
    VAE_TILE,
    SongPicture,
    decode,
    lazy_latents,
    region_columns,
)
from neurochip.engine.riffusion.picture import render_picture
from neurochip.engine.riffusion.pipeline import img2img
from neurochip.engine.riffusion.windows import SHALLOW_SHARE, WINDOW_COLUMNS, count_unet_work
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio, limit_peak
from neurochip.model import RiffusionModel, load_model
from neurochip.phase import PhaseSettings, waveform_from_amplitudes
from neurochip.spectrogram import (
    SpectrogramParams,
    amplitudes_to_float_image,
    float_image_to_amplitudes,
    mel_amplitudes,
)

if TYPE_CHECKING:
    from neurochip.model_spec import ModelSpec

#: Prompt embeddings kept (prompt and negative prompt of recent takes).
PROMPT_CACHE_SIZE = 16

#: A loop is rendered with this much of itself wrapped round each side (latent columns: half
#: a model window), so the windows near its ends see the music that follows and precedes
#: them on repeat.
LOOP_CONTEXT_COLUMNS = 32

#: Seconds per unit of each stage before this device's are measured (the tests' tiny model on
#: a 2-core CPU): encode per picture column, denoise per UNet item, decode per latent column,
#: phase per second of audio. Only the ratios matter, and only until the first render.
PRIOR_RATES = {"encode": 2.5e-4, "denoise": 9e-3, "decode": 1.5e-3, "phase": 0.2}
STAGES = tuple(PRIOR_RATES)


class RiffusionBackend:
    """Renders with one loaded :class:`RiffusionModel`; keeps recent prompts' embeddings."""

    prior_rates = PRIOR_RATES
    estimate_needs = frozenset({"denoise", "phase"})

    def __init__(
        self,
        model: RiffusionModel,
        params: SpectrogramParams = SpectrogramParams(),
        memory_limit: int | None = None,
        decode_batch: int | None = None,
    ) -> None:
        self.model, self.params = model, params
        self.spec: ModelSpec | None = None  # what it was loaded from, where known
        self.device = model.device
        # Takes the VAE decodes in one batch; None: as many as fit (see decode_batch_size).
        self.decode_batch = decode_batch
        self.memory = MemoryProbe(model.device, memory_limit)
        self.capabilities = Capabilities(
            sample_rate=params.sample_rate,
            channels=1,
            probe_frames=params.num_samples(WINDOW_COLUMNS),
            loops=True,
            sections=True,
            repaint=True,
            batching=True,
            pictures=True,
        )
        self._prompts: OrderedDict[str, torch.Tensor] = OrderedDict()
        if model.device.type == "cpu":
            # Denormal floats (from SiLU of large negative activations) make CPU convolutions
            # several times slower; flushing them to zero changes no audible result.
            torch.set_flush_denormal(True)

    @classmethod
    def from_spec(
        cls,
        spec: ModelSpec,
        local_files_only: bool | None = None,
        on_preview_vae_error: Callable[[Exception], None] | None = None,
    ) -> RiffusionBackend:
        """The model ``spec`` names, loaded from a hub id, a diffusers folder or one
        ``.safetensors`` file, with a LoRA fused, a preview VAE attached, compiled, as asked.
        A preview VAE that cannot be loaded is said to ``on_preview_vae_error`` where given
        (quick previews then decode with the model's own VAE), else it fails the load."""
        model = load_model(spec.source, spec.device, spec.dtype, local_files_only)
        if spec.lora:
            from neurochip.lora import apply_lora

            apply_lora(model, spec.lora, spec.lora_scale, local_files_only)
        if spec.preview_vae:
            from neurochip.preview_vae import use_preview_vae

            try:
                use_preview_vae(model, spec.preview_vae, local_files_only)
            except NeuroChipError as err:
                if on_preview_vae_error is None:
                    raise
                on_preview_vae_error(err)
        if spec.channels_last:
            model.use_channels_last()
        if spec.compile:
            model.compile_unet(mode=spec.compile)
        backend = cls(model)
        backend.spec = spec
        return backend

    def describe(self) -> str:
        return self.model.describe()

    def info(self) -> dict[str, Any]:
        info = {"model": self.model.source, "device": str(self.model.device)}
        if self.spec is not None:
            info["spec"] = self.spec.to_dict()
        return info

    # -- what the engine asks ----------------------------------------------------------------

    def encode(self, song: Audio, kept: SongPicture | None, for_model: bool) -> SongPicture:
        """The song's picture (and lazily encoded latents, where a take changes the song)."""
        entry = kept
        if entry is None:
            waveform = torch.from_numpy(song.samples).to(self.device)
            image, max_value = amplitudes_to_float_image(mel_amplitudes(waveform, self.params))
            entry = SongPicture(image, torch.tensor(max_value))
        if for_model and entry.latents is None:
            entry.latents = lazy_latents(self.model, entry.image)
        return entry

    def loop_pad(self, length: int) -> int:
        return LOOP_CONTEXT_COLUMNS * self.params.hop_length * self.model.vae_scale

    def work(self, job: RenderJob, kept: SongPicture | None) -> dict[str, float]:
        """Units of work of each stage (picture columns, UNet items, seconds of audio)."""
        model, params = self.model, self.params
        first, frames, length, context = self._region(job)
        # The whole song's columns (an estimate's loop is longer than the span it was given).
        columns = params.num_frames(max(job.songs[0].frames, job.start + job.length))
        denoised = [s for s in job.takes if s.denoise_steps > 0]
        a, b = region_columns(
            -(-columns // (model.vae_scale * model.unet_multiple)) * model.unet_multiple,
            first,
            frames,
            model.vae_scale,
            model.unet_multiple,
            context,
        )
        if kept is None:
            encode = columns  # the picture, and then the region's tiles
        elif denoised and kept.latents is not None:
            encode = kept.latents.missing(a, b)
        else:
            encode = (b - a) * model.vae_scale if denoised else 0
        items = 0.0
        if denoised:
            column_s = model.vae_scale * params.hop_length / params.sample_rate
            work = count_unet_work(
                (b - a) * model.vae_scale,
                denoised,
                1 << 30,
                model.vae_scale,
                model.unet_multiple,
                start_s=job.song_start_s + a * column_s,
            )
            reused = work["unet_items"] - work["full_items"]
            items = work["full_items"] + SHALLOW_SHARE * reused
        return {
            "encode": float(encode),
            "denoise": float(items),
            "decode": float(len(denoised) * (b - a)),
            "phase": len(job.takes) * length / params.sample_rate,
        }

    def render(
        self, job: RenderJob, encodings: Sequence[SongPicture], report: StagedProgress
    ) -> list[Render]:
        """Each take of ``job``; one with no denoising step is the song's own picture."""
        first, frames, length, context = self._region(job)
        quality, takes = job.quality, job.takes
        input_images = [entry.image[..., first : first + frames] for entry in encodings]
        output_images = list(input_images)
        used = [i for i, s in enumerate(takes) if s.denoise_steps > 0]
        if used:
            unit = self.params.hop_length * self.model.vae_scale  # samples per latent column
            inner = job.length - 2 * job.loop_pad  # a loop's own length
            period = (job.loop_pad // unit, max(1, round(inner / unit))) if job.loop_pad else None
            vae = self.model.preview_vae if quality.preview_vae else None
            rendered = img2img(
                self,
                [encodings[i].latents for i in used],
                first,
                frames,
                [takes[i] for i in used],
                report,
                context=context,
                noise_period=period,
                song_start_s=job.song_start_s,
                vae=vae,
            )
            for i, image in zip(used, rendered, strict=True):
                output_images[i] = image

        start = job.start
        sources = [torch.from_numpy(m.samples[:, start : start + length]) for m in job.songs]
        phases = [settings.phase_settings for settings in takes]
        if quality.phase_iterations is not None:
            most = quality.phase_iterations
            phases = [replace(p, iterations=min(p.griffin_lim_iterations, most)) for p in phases]
        max_values = [float(entry.max_value) for entry in encodings]
        waveforms = self.waveforms(output_images, max_values, sources, phases, length, report)
        info = self.info()
        if quality.preview_vae and self.model.preview_vae is not None:
            info["preview_vae"] = self.model.preview_vae_source  # its pictures are TAESD's
        rate = self.params.sample_rate
        return [
            Render(
                audio=Audio(limit_peak(waveform).cpu().numpy(), rate),  # never clips
                source=Audio(source.numpy().copy(), rate),
                settings=settings,
                input_image=input_image.cpu(),
                output_image=output_image.cpu(),
                start_s=start / rate,
                info=dict(info),
            )
            for settings, waveform, source, input_image, output_image in zip(
                takes, waveforms, sources, input_images, output_images, strict=True
            )
        ]

    def repaint(
        self, job: RenderJob, encoding: SongPicture, report: StagedProgress
    ) -> list[Render]:
        """Blended latent diffusion (RePaint-style): the region's latents denoise as in any
        render, and after every step those around it are replaced by the parent take's,
        noised to that step, through the bounds' mask; the audio is spliced the same way."""
        assert job.repaint is not None
        model, params, hop = self.model, self.params, self.params.hop_length
        bounds, mono = job.repaint.bounds, job.songs[0]
        first, frames, length, _ = self._region(job)
        a_s, b_s = first * hop, first * hop + length
        # The parent take as the model sees it: its picture at the sketch's level, encoded
        # only where the denoised columns reach.
        wave = torch.from_numpy(job.repaint.parent.samples).to(model.device)
        max_value = float(encoding.max_value)
        parent_image, _ = amplitudes_to_float_image(mel_amplitudes(wave, params), max_value)

        def keep(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
            parent_latents = lazy_latents(model, parent_image).columns(a, b)
            mask = bounds.latent_mask(a, b, model.vae_scale, hop).to(model.device)
            return parent_latents, mask

        def noise(shape: torch.Size, settings, device, period) -> torch.Tensor:
            return song_noise(shape, settings.seed, device)

        images = img2img(
            self,
            [encoding.latents] * len(job.takes),
            first,
            frames,
            job.takes,
            report,
            song_start_s=job.song_start_s,
            keep=keep,
            noise=noise,
        )
        weight = torch.from_numpy(bounds.weight_at(np.arange(a_s, b_s) + 0.5)).to(model.device)
        frame_weight = torch.from_numpy(bounds.weight_at(a_s + np.arange(frames) * hop))
        source = torch.from_numpy(mono.samples[:, a_s:b_s])
        parent_wave = wave[:, a_s:b_s]
        news = self.waveforms(
            images,
            [max_value] * len(job.takes),
            [source] * len(job.takes),
            [settings.phase_settings for settings in job.takes],
            length,
            report,
        )
        results = []
        for settings, image, new in zip(job.takes, images, news, strict=True):
            new = limit_peak(new)  # as a take: never clips
            spliced = wave.clone()
            # Outside the region and its margins the weight is 0: the parent's samples, as
            # they were (x + 0 * y is x, exactly).
            spliced[:, a_s:b_s] = parent_wave + weight * (new - parent_wave)
            picture = parent_image.clone()
            cut = picture[..., first : first + frames]
            cut += frame_weight * (image.cpu() - cut)
            results.append(
                Render(
                    audio=Audio(spliced.cpu().numpy(), mono.sample_rate),
                    source=Audio(mono.samples.copy(), mono.sample_rate),
                    settings=settings,
                    input_image=encoding.image.cpu(),
                    output_image=picture.cpu(),
                    info={**self.info(), "reroll": bounds.describe(mono.sample_rate)},
                )
            )
        return results

    # Riffusion's own img2img on a picture, its mask's black kept (a PictureJob).
    render_picture = render_picture

    # -- the model's parts ----------------------------------------------------------------------

    def _region(self, job: RenderJob) -> tuple[int, int, int, int]:
        """(first picture column, columns, samples, context columns) a job renders."""
        hop = self.params.hop_length
        if job.repaint is not None:
            # The region, its margins, and as much again for the phase to settle in before
            # the crossfade reaches it; from a picture column, as every render's span is.
            a_s, b_s = job.repaint.bounds.rendered
            a_s -= a_s % hop
            return a_s // hop, self.params.num_frames(b_s - a_s), b_s - a_s, WINDOW_COLUMNS
        frames = self.params.num_frames(job.length)
        return job.start // hop, frames, job.length, job.quality.context_columns

    def prompt_embedding(self, prompt: str) -> torch.Tensor:
        """CLIP embedding of a prompt; the last few are kept (a slider change keeps them)."""
        embedding = self._prompts.get(prompt)
        if embedding is None:
            embedding = self.model.encode_prompt(prompt)
            self._prompts[prompt] = embedding
            while len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        self._prompts.move_to_end(prompt)
        return embedding

    def waveforms(
        self,
        images: Sequence[torch.Tensor],
        max_values: Sequence[float],
        sources: Sequence[torch.Tensor],
        phases: Sequence[PhaseSettings],
        length: int,
        report: StagedProgress,
    ) -> list[torch.Tensor]:
        """Each take's waveform (1, length) from its picture, its phase from its source.

        Takes with the same phase settings are reconstructed in one call, stacked as channels
        (on a GPU in one pass over large chunks; see :func:`waveform_from_amplitudes`);
        each equals its own reconstruction up to float rounding.
        """
        groups: dict[Any, list[int]] = {}
        for i, phase in enumerate(phases):
            # Random starts are seeded per take (the seed, not seed + channel): one at a time.
            key = phase if phase.mode == "source" else (phase, i)
            groups.setdefault(key, []).append(i)
        waveforms: list[torch.Tensor] = [torch.empty(0)] * len(images)
        done = 0
        report.stage("phase", 0.0, "phase")
        for members in groups.values():

            def phase_progress(f: float, done: int = done, n: int = len(members)) -> None:
                report.stage("phase", (done + f * n) / len(images), "phase")

            amplitudes = torch.cat(
                [
                    float_image_to_amplitudes(
                        images[i].mean(dim=0, keepdim=True).expand(3, -1, -1),
                        max_values[i],
                        stereo=False,
                    )
                    for i in members
                ]
            )
            together = waveform_from_amplitudes(
                amplitudes.to(self.device).float(),
                self.params,
                length,
                phases[members[0]],
                source=torch.cat([sources[i] for i in members]).to(self.device),
                progress=phase_progress,
            )
            for row, i in enumerate(members):
                waveforms[i] = together[row : row + 1]
            done += len(members)
        return waveforms

    def decode_many(
        self, latents: Sequence[torch.Tensor], report: StagedProgress, vae: Any = None
    ) -> list[torch.Tensor]:
        """Each take's latents (1, 4, 64, W') -> its float picture (3, 512, W' * 8).

        Takes are decoded together, as many in one batch as :meth:`decode_batch_size` allows
        (on a GPU one batch for a pair or a small grid; one at a time on the CPU, where a
        batch gains nothing and costs memory).
        """
        vae = vae if vae is not None else self.model.vae
        size = self.decode_batch_size(len(latents), latents[0].shape, vae)
        # Room left over by the takes of a batch goes to decoding several of their tiles at once.
        tiles = max(1, self.decode_batch_size(1 << 20, latents[0].shape, vae) // size)
        images: list[torch.Tensor] = []
        for first in range(0, len(latents), size):
            report.stage("decode", first / len(latents), "decode")
            batch = torch.cat(list(latents[first : first + size]))
            images.extend(decode(self.model, batch, vae, tiles).unbind(0))
        return images

    def decode_batch_size(self, takes: int, latent_shape: torch.Size, vae: Any) -> int:
        """Takes (or tiles) ``vae`` decodes in one batch: ``decode_batch`` if set; on a GPU as
        many as fit the memory share (one tile's activations measured by a probe); one else."""
        from neurochip.engine.device import MEMORY_SHARE

        if self.decode_batch is not None:
            return max(1, min(takes, self.decode_batch))
        model = self.model
        if model.device.type != "cuda" or takes == 1:
            return 1
        height, width = latent_shape[-2], min(latent_shape[-1], VAE_TILE // model.vae_scale)
        channels = int(getattr(model.vae.config, "latent_channels", 4))

        def probe() -> None:
            vae.decode(
                torch.zeros(1, channels, height, width, device=model.device, dtype=model.dtype)
            )

        item = self.memory.bytes_of(("decode", id(vae), height, width), probe)
        return max(1, min(takes, int(self.memory.free_bytes() * MEMORY_SHARE // item)))

    def unet_batch(self, latent_shape: torch.Size, per_window: int) -> int:
        """UNet items per call that fit the device's free memory (see :func:`batch_for_memory`)."""
        model = self.model
        if model.device.type != "cuda":
            return 2 * per_window  # CPU/MPS: bigger batches gain little and cost memory
        height = latent_shape[-2]
        width = min(latent_shape[-1], WINDOW_COLUMNS // model.vae_scale)
        dim = model.unet.config.cross_attention_dim

        def probe() -> None:  # two items, halved below
            model.unet(
                torch.zeros(2, 4, height, width, device=model.device, dtype=model.dtype),
                torch.tensor([500, 500], device=model.device),
                encoder_hidden_states=torch.zeros(
                    2, 77, dim, device=model.device, dtype=model.dtype
                ),
            )

        item = max(1, self.memory.bytes_of(("unet", height, width), probe) // 2)
        return batch_for_memory(self.memory.free_bytes(), item, per_window)
