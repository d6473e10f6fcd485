"""From mel amplitudes back to a waveform: the inverse mel scale and Griffin-Lim.

A spectrogram image has magnitudes only. Riffusion guesses the phase from random noise with 32
Griffin-Lim iterations, which smears transients and sounds "phasey". For audio-to-audio we know
much better: the render stays sample-aligned with the input, so the input's own STFT phase is an
excellent starting point (``mode="source"``). ``mode="random"`` keeps Riffusion's method as the
baseline we compare against.

Long songs are reconstructed in overlapping time chunks (each with enough context that its
edges never reach the part kept), so memory stays bounded however long the song is.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio, limit_peak
from neurochip.spectrogram import (
    INT16_SCALE,
    DecodedImage,
    SpectrogramParams,
    amplitudes_from_image,
    as_waveform,
    image_from_amplitudes,
    mel_amplitudes,
    mel_filterbank,
    padded_signal,
    stft_frames,
    stft_window,
)

PhaseMode = Literal["source", "random"]
PHASE_MODES: tuple[str, ...] = ("source", "random")

#: Griffin-Lim iterations when none are asked for. Starting from the source's phase, a few
#: iterations only tidy up what the new magnitudes changed; Riffusion's random start needs 32.
DEFAULT_ITERATIONS: dict[str, int] = {"source": 8, "random": 32}

#: Griffin-Lim iterations of a :func:`roundtrip` from source phase when none are asked for.
#: There the magnitudes are the source's own, so its phase already fits them: on chip music
#: 0 iterations measure ~3 dB closer to the input than 8 (which drift towards what the 8-bit
#: picture lost). Changed magnitudes (a render) still want :data:`DEFAULT_ITERATIONS`.
ROUNDTRIP_SOURCE_ITERATIONS = 0

#: Most Griffin-Lim (and inverse-mel refinement) iterations accepted. Past a few hundred the
#: gain is small and the time keeps growing linearly: on the test chip tune (random phase,
#: one CPU core) 32, 128 and 512 iterations measured -17.5, -19.1 and -20.9 dB spectral
#: convergence, at ~0.1 s per iteration per 3 s of mono audio, so 1000 iterations of a
#: 20-minute stereo song would take the CPU most of a day. 1000 leaves room to experiment;
#: 1e8 is a typo that would never finish.
MAX_ITERATIONS = 1000

#: Most STFT columns reconstructed at once (11 minutes; ~540 MB of complex spectra).
MAX_CHUNK_FRAMES = 1 << 16

#: Off the CPU, channels (a render's takes) are reconstructed together, in chunks of this many
#: STFT columns over all of them (e.g. 4,096 columns of a stereo pair, 512 of a 16-cell grid):
#: a GPU's time goes to launching kernels when chunks are small (a 30 s take in 256-column
#: chunks is ~12,700 launches), and ~650 MB of complex spectra a tensor stays well within
#: an 8 GB card once the UNet's activations are freed.
DEVICE_CHUNK_COLUMNS = 8192

Progress = Callable[[float], None]


@dataclass(frozen=True)
class PhaseSettings:
    """How phase is reconstructed."""

    mode: PhaseMode = "source"
    iterations: int | None = None  # None: DEFAULT_ITERATIONS[mode]
    momentum: float = 0.99  # "fast Griffin-Lim" (Perraudin et al. 2013), as Riffusion uses
    seed: int = 0  # the random initial phase of mode "random"
    nnls_iterations: int = 32  # refinement steps of the inverse mel scale
    # STFT columns reconstructed at once, per channel; None: the mode's default. Source mode
    # uses 256 (2.56 s): a chunk's complex spectra (~20 MB) then stay under glibc's 32 MB mmap
    # threshold, so Griffin-Lim's per-iteration tensors reuse heap memory instead of faulting
    # in fresh pages (2048 columns spent half the CPU time in the kernel, 1.7x slower). Random
    # mode keeps 2048 (20 s): chunks start from unrelated random phases, and short ones would
    # make Riffusion's baseline worse than it is (-1.2 dB measured).
    chunk_frames: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in PHASE_MODES:
            raise NeuroChipError(
                f"Unknown phase mode {self.mode!r}: use 'source' (phase from the input audio) "
                "or 'random' (Riffusion's Griffin-Lim from random phase)."
            )
        _check_count("Griffin-Lim iterations", self.iterations, 0, MAX_ITERATIONS, optional=True)
        _check_count("Inverse mel iterations", self.nnls_iterations, 0, MAX_ITERATIONS)
        _check_count("The phase seed", self.seed, 0, 2**63 - 1)
        _check_count("Chunk frames", self.chunk_frames, 1, MAX_CHUNK_FRAMES, optional=True)
        if not isinstance(self.momentum, numbers.Real) or not 0 <= self.momentum < 1:
            raise NeuroChipError(
                f"Griffin-Lim momentum must be a number from 0 to below 1, not {self.momentum}."
            )

    @property
    def frames_per_chunk(self) -> int:
        """STFT columns per chunk on the CPU, one channel at a time."""
        if self.chunk_frames is not None:
            return self.chunk_frames
        return 256 if self.mode == "source" else 2048

    def frames_per_chunk_together(self, channels: int) -> int:
        """STFT columns per chunk when ``channels`` are reconstructed together (off the CPU):
        :data:`DEVICE_CHUNK_COLUMNS` shared among them, never fewer than on the CPU."""
        if self.chunk_frames is not None:
            return self.chunk_frames
        return max(self.frames_per_chunk, DEVICE_CHUNK_COLUMNS // max(1, channels))

    @property
    def griffin_lim_iterations(self) -> int:
        return DEFAULT_ITERATIONS[self.mode] if self.iterations is None else self.iterations


def _check_count(what: str, value: object, low: int, high: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or not low <= value <= high:  # type: ignore[operator]
        raise NeuroChipError(f"{what} must be a whole number from {low} to {high}, not {value!r}.")


# --- inverse mel scale --------------------------------------------------------------------------


@dataclass(frozen=True)
class _BandPair:
    """The mel filter bank in the form its shape allows.

    Every STFT bin lies under at most two triangles (the falling edge of one band and the rising
    edge of the next), so the bank is two (band index, weight) pairs per bin. Products with it
    become a gather or a scatter-add: O(bins x frames) instead of O(bins x mels x frames), fast
    on CPU and GPU without sparse kernels.
    """

    bins: int  # bins under at least one filter: 0 .. bins-1 (the rest, above f_max, stay 0)
    index: torch.Tensor  # (2, bins) band indices
    weight: torch.Tensor  # (2, bins, 1) filter values, 0 where a bin has one band only
    band_sums: torch.Tensor  # (n_mels, 1) sum of each filter

    def forward(self, linear: torch.Tensor) -> torch.Tensor:
        """(bins, n) -> (n_mels, n): the mel filter bank applied."""
        out = torch.zeros(self.band_sums.shape[0], linear.shape[1], device=linear.device)
        out.index_add_(0, self.index[0], linear * self.weight[0])
        out.index_add_(0, self.index[1], linear * self.weight[1])
        return out

    def transpose(self, mel: torch.Tensor) -> torch.Tensor:
        """(n_mels, n) -> (bins, n): the filter bank's transpose applied."""
        return mel[self.index[0]] * self.weight[0] + mel[self.index[1]] * self.weight[1]


@functools.lru_cache(maxsize=8)
def _band_pair(params: SpectrogramParams, device: str) -> _BandPair:
    fb = mel_filterbank(params, "cpu")
    covered = (fb > 0).sum(dim=0)
    if int(covered.max()) > 2:
        raise NeuroChipError("These spectrogram parameters give overlapping mel bands.")
    bins = int(torch.nonzero(covered).max()) + 1
    fb = fb[:, :bins]
    # For each bin, its (up to) two bands in ascending order; a missing one gets weight 0.
    weights, index = fb.topk(2, dim=0)
    order = index.argsort(dim=0)
    index, weights = index.gather(0, order), weights.gather(0, order)
    return _BandPair(
        bins=bins,
        index=index.to(device),
        weight=weights[:, :, None].to(device),
        band_sums=fb.sum(dim=1, keepdim=True).to(device),
    )


def mel_to_linear(
    mel: torch.Tensor, params: SpectrogramParams, iterations: int = 32
) -> torch.Tensor:
    """Non-negative least-squares inverse of the mel filter bank.

    Starts from the filters' transpose applied to band averages (exact for spectra that are
    piecewise linear between band centres), then refines with multiplicative updates
    (Lee & Seung), which keep every magnitude non-negative and need only products with the
    filter bank and its transpose.

    Args:
        mel: (..., n_mels, frames) amplitudes.
        iterations: refinement steps (0 gives the interpolated start).

    Returns:
        (..., n_stft_bins, frames) linear magnitudes, zero above ``max_frequency``.
    """
    bank = _band_pair(params, str(mel.device))
    lead, (n_mels, frames) = mel.shape[:-2], mel.shape[-2:]
    target = mel.reshape(-1, n_mels, frames).transpose(0, 1).reshape(n_mels, -1).clamp_min(0)
    linear = bank.transpose(target / bank.band_sums.clamp_min(1e-8))
    numerator = bank.transpose(target)
    for _ in range(iterations):
        linear = linear * numerator / bank.transpose(bank.forward(linear)).clamp_min(1e-12)
    batch = target.shape[1] // frames
    full = torch.zeros(batch, params.num_stft_bins, frames, device=mel.device)
    full[:, : bank.bins] = linear.reshape(bank.bins, batch, frames).transpose(0, 1)
    return full.reshape(*lead, params.num_stft_bins, frames)


# --- Griffin-Lim --------------------------------------------------------------------------------


def _istft(spec: torch.Tensor, params: SpectrogramParams, length: int) -> torch.Tensor:
    return torch.istft(
        spec,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        win_length=params.win_length,
        window=stft_window(params, spec.device),
        center=True,
        length=length,
    )


def _stft(waveform: torch.Tensor, params: SpectrogramParams) -> torch.Tensor:
    padded = padded_signal(waveform, params)
    return stft_frames(padded, params, 0, params.num_frames(waveform.shape[-1]))


def griffin_lim(
    magnitude: torch.Tensor,
    params: SpectrogramParams,
    length: int,
    init: torch.Tensor | None = None,
    iterations: int = 32,
    momentum: float = 0.99,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    on_iteration: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Griffin-Lim with momentum, the update rule torchaudio (and so Riffusion) uses.

    Args:
        magnitude: (channels, n_stft_bins, frames) linear magnitudes.
        length: samples to return; frames must equal ``1 + length // hop``.
        init: complex initial spectrum whose phase starts the iterations (e.g. the source's
            STFT). None: torchaudio's random start (uniform real and imaginary parts).
        generator: the random start's generator, or one per channel (each channel then
            starts as it would alone).

    Returns:
        (channels, length) waveform on the magnitudes' scale.
    """
    if init is None:
        generators = generator if isinstance(generator, Sequence) else [generator]
        shape = magnitude.shape if len(generators) == 1 else (1, *magnitude.shape[1:])
        angles = torch.cat(
            [
                torch.rand(shape, dtype=torch.complex64, device=magnitude.device, generator=g)
                for g in generators
            ]
        )
    else:
        angles = init / (init.abs() + 1e-16)
    # Bins whose magnitude is 0 in every frame (above a mel picture's top frequency: over half
    # the spectrum) stay 0 whatever their phase, so only the bins below them are iterated; the
    # result is the same, the per-iteration arithmetic ~2x less.
    bins = _live_bins(magnitude)
    magnitude, angles = magnitude[:, :bins], angles[:, :bins]
    spectrum = torch.zeros(
        *magnitude.shape[:-2],
        params.num_stft_bins,
        magnitude.shape[-1],
        dtype=torch.complex64,
        device=magnitude.device,
    )

    def rebuild(angles: torch.Tensor) -> torch.Tensor:
        spectrum[:, :bins] = magnitude * angles
        return _istft(spectrum, params, length)

    previous = torch.zeros_like(angles)
    factor = momentum / (1 + momentum)
    for _ in range(iterations):
        rebuilt = _stft(rebuild(angles), params)[:, :bins]
        angles = rebuilt - previous * factor
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
        if on_iteration is not None:
            on_iteration()
    return rebuild(angles)


def _live_bins(magnitude: torch.Tensor) -> int:
    """1 + the highest bin with a non-zero magnitude in any frame (at least 1)."""
    live = torch.nonzero(magnitude.amax(dim=tuple(d for d in range(magnitude.ndim) if d != 1)))
    return int(live.max()) + 1 if live.numel() else 1


# --- whole songs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chunk:
    core: tuple[int, int]  # frames this chunk is responsible for
    context: tuple[int, int]  # frames it reconstructs, core plus context on each side


def _plan_chunks(num_frames: int, chunk: int, context: int) -> list[_Chunk]:
    cores = [(a, min(a + chunk, num_frames)) for a in range(0, num_frames, chunk)]
    # A tiny last core would waste a whole chunk's context for a few frames: merge it.
    if len(cores) > 1 and cores[-1][1] - cores[-1][0] < context:
        cores[-2:] = [(cores[-2][0], cores[-1][1])]
    return [_Chunk(c, (max(0, c[0] - context), min(num_frames, c[1] + context))) for c in cores]


def _source_channels(source: torch.Tensor, channels: int, length: int) -> torch.Tensor:
    if source.shape[0] != channels:
        source = source.mean(dim=0, keepdim=True).expand(channels, -1)
    if source.shape[-1] < length:
        source = torch.nn.functional.pad(source, (0, length - source.shape[-1]))
    return source[:, :length].contiguous()


def waveform_from_amplitudes(
    amplitudes: torch.Tensor,
    params: SpectrogramParams = SpectrogramParams(),
    num_samples: int | None = None,
    settings: PhaseSettings = PhaseSettings(),
    source: torch.Tensor | Audio | None = None,
    progress: Progress | None = None,
    together: bool | None = None,
) -> torch.Tensor:
    """Mel amplitudes (int16 scale) -> float waveform, the inverse of ``mel_amplitudes``.

    Args:
        amplitudes: (channels, n_mels, frames).
        num_samples: output length; default the shortest clip with that many frames. Must give
            the same number of frames.
        settings: phase mode and iterations.
        source: (channels or 1, samples) float audio whose STFT phase starts Griffin-Lim
            (or an Audio, resampled to ``params.sample_rate``); required for mode "source",
            ignored for "random".
        progress: called with the fraction done, 0..1.
        together: reconstruct the channels (a stereo picture's, or many takes' stacked)
            in one pass, in larger chunks (:meth:`PhaseSettings.frames_per_chunk_together`),
            instead of one at a time. None: together off the CPU, where it saves kernel
            launches (a pair's chunk passes: 32x fewer); on the CPU one channel at a time,
            in small chunks, is faster (see ``chunk_frames``).
            Channel ``c`` gets the seed ``settings.seed + c`` either way, and the same
            result up to float rounding (at the chunks' crossfades, where chunk sizes differ).

    Returns:
        (channels, num_samples) float waveform on the amplitudes' scale divided by 32768, so a
        decoded spectrogram comes back at the level it was recorded at.
    """
    channels, _, num_frames = amplitudes.shape
    if isinstance(source, Audio):
        source = as_waveform(source, params)
    if num_samples is None:
        num_samples = params.num_samples(num_frames)
    if settings.mode == "source" and source is None:
        raise NeuroChipError(
            "Phase mode 'source' needs the source audio (e.g. --phase-from AUDIO); "
            "use phase mode 'random' when there is none."
        )
    if together is None:
        together = amplitudes.device.type != "cpu"
    if channels > 1 and not together:
        # Channels are independent here; one at a time keeps every tensor small (see
        # PhaseSettings.chunk_frames).
        sources = None
        if source is not None:
            sources = _source_channels(source.to(amplitudes.device).float(), channels, num_samples)
        return torch.cat(
            [
                waveform_from_amplitudes(
                    amplitudes[c : c + 1],
                    params,
                    num_samples,
                    replace(settings, seed=settings.seed + c),
                    source=None if sources is None else sources[c : c + 1],
                    progress=None
                    if progress is None
                    else (lambda f, c=c: progress((c + f) / channels)),
                )
                for c in range(channels)
            ]
        )
    if params.num_frames(num_samples) != num_frames:
        raise NeuroChipError(
            f"{num_samples} samples make {params.num_frames(num_samples)} spectrogram columns, "
            f"not {num_frames}."
        )
    device = amplitudes.device
    hop = params.hop_length
    # Context must cover half an FFT (where a chunk's own edges distort it) plus the crossfade.
    fade = 8 * hop
    context = -(-(params.n_fft // 2 + fade) // hop) + 1
    per_chunk = (
        settings.frames_per_chunk_together(channels) if together else settings.frames_per_chunk
    )
    chunks = _plan_chunks(num_frames, max(per_chunk, 2 * context), context)
    # One generator a channel, each seeded as that channel would be alone.
    generators = [
        torch.Generator(device=device).manual_seed(settings.seed + c) for c in range(channels)
    ]
    padded_source = None
    if settings.mode == "source":
        src = _source_channels(source.to(device).float(), channels, num_samples)
        padded_source = padded_signal(src * INT16_SCALE, params)

    iterations = settings.griffin_lim_iterations
    steps_total = len(chunks) * (iterations + 1)
    steps_done = 0

    def tick() -> None:
        nonlocal steps_done
        steps_done += 1
        if progress is not None:
            progress(steps_done / steps_total)

    output = torch.zeros(channels, num_samples, device=device)
    for chunk in chunks:
        c0, c1 = chunk.context
        magnitude = mel_to_linear(amplitudes[:, :, c0:c1], params, settings.nnls_iterations)
        init = None if padded_source is None else stft_frames(padded_source, params, c0, c1)
        # The chunk's own clip: frame j of it is centred on sample (c0 + j) * hop of the song.
        start = c0 * hop
        length = num_samples - start if c1 == num_frames else params.num_samples(c1 - c0)
        piece = griffin_lim(
            magnitude,
            params,
            length,
            init=init,
            iterations=iterations,
            momentum=settings.momentum,
            generator=generators,
            on_iteration=tick,
        )
        weight = _chunk_weight(chunk, num_frames, hop, fade, num_samples, device)
        k0, k1 = weight[0], weight[0] + weight[1].shape[0]
        output[:, k0:k1] += piece[:, k0 - start : k1 - start] * weight[1]
        tick()
    return output / INT16_SCALE


def _chunk_weight(
    chunk: _Chunk, num_frames: int, hop: int, fade: int, num_samples: int, device: torch.device
) -> tuple[int, torch.Tensor]:
    """Where a chunk's output goes, and its crossfade weight (neighbours' weights sum to 1)."""
    a, b = chunk.core
    first, last = a == 0, b == num_frames
    k0 = 0 if first else a * hop - fade // 2
    k1 = num_samples if last else b * hop + fade // 2
    weight = torch.ones(k1 - k0, device=device)
    ramp = (torch.arange(fade, device=device, dtype=torch.float32) + 0.5) / fade
    if not first:
        weight[:fade] = ramp
    if not last:
        weight[-fade:] = ramp.flip(0)
    return k0, weight


def roundtrip(
    waveform: torch.Tensor | Audio,
    params: SpectrogramParams = SpectrogramParams(),
    settings: PhaseSettings = PhaseSettings(),
    progress: Progress | None = None,
) -> torch.Tensor | Audio:
    """What the model "hears": audio -> 8-bit spectrogram image -> audio (the denoise-0 path).

    The result has exactly the input's shape and stays sample-aligned with it. An
    :class:`~neurochip.io.audio.Audio` comes back as one, at ``params.sample_rate``, with its
    channels kept (a stereo picture for stereo audio).
    """
    if isinstance(waveform, Audio):
        audio = waveform.resample(params.sample_rate)
        stereo = replace(params, stereo=audio.channels == 2)
        result = roundtrip(torch.from_numpy(audio.samples), stereo, settings, progress)
        return Audio(result.numpy(), params.sample_rate)
    if settings.mode == "source" and settings.iterations is None:
        settings = replace(settings, iterations=ROUNDTRIP_SOURCE_ITERATIONS)
    image = image_from_amplitudes(mel_amplitudes(waveform, params), params)
    decoded = amplitudes_from_image(image)
    return waveform_from_amplitudes(
        decoded.amplitudes.to(waveform.device),
        params,
        waveform.shape[-1],
        settings,
        source=waveform if settings.mode == "source" else None,
        progress=progress,
    )


def audio_from_image(
    decoded: DecodedImage,
    settings: PhaseSettings,
    source: torch.Tensor | None = None,
    progress: Progress | None = None,
    device: torch.device | str = "cpu",
) -> Audio:
    """A spectrogram image's audio (``neurochip invert``, Riffusion's seed images).

    ``source``, on ``device``: audio aligned with the image, for its phase (``settings.mode``
    "source"). An image without the level tag has no scale of its own: normalised, as
    Riffusion does. Never clips.
    """
    waveform = waveform_from_amplitudes(
        decoded.amplitudes.to(device),
        decoded.params,
        decoded.num_samples,
        settings,
        source=source,
        progress=progress,
    )
    if decoded.max_value is None:
        waveform = waveform / waveform.abs().max().clamp_min(1e-9) * 0.99
    return Audio(limit_peak(waveform).cpu().numpy(), decoded.params.sample_rate)
