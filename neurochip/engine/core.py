"""The engine front ends render with: one backend, and what every model needs done the same way.

It cuts spans and preview regions at the backend's rate, keys songs by content and keeps
their encodings (so previews of one song start at once), queues renders on the device's
lock, reports progress stage by stage with cancel, learns this device's rates for estimates,
wraps and crossfades loops, and checks re-roll regions. It knows no model internals: the
model's part of each call is the backend's (:mod:`neurochip.engine.backend`).
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neurochip.engine.backend import (
    FAITHFUL_PREVIEW,
    Backend,
    Capabilities,
    Encoding,
    PictureJob,
    PreviewQuality,
    Render,
    RenderJob,
    Repaint,
)
from neurochip.engine.device import device_lock, synchronize
from neurochip.engine.progress import ProgressCallback, StagedProgress, StageRates
from neurochip.engine.regions import (
    LOOP_INPUT_FADE_S,
    PREVIEW_SECONDS,
    REROLL_MARGIN_S,
    check_loop,
    check_parent,
    finish_loop,
    preview_region,
    reroll_bounds,
    snapped_s,
    wrap_loop,
)
from neurochip.engine.registry import backend_for_model, load_backend
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings
from neurochip.spectrogram import SpectrogramParams

if TYPE_CHECKING:
    from neurochip.model_spec import ModelSpec

#: Memory an engine keeps for the encodings of recent songs (pictures and latents), so that
#: previews of them start at once; the newest song is always kept, whatever its size.
DEFAULT_CACHE_BYTES = 1 << 30


class Engine:
    """Renders songs with one loaded model (a backend). Keeps the encodings of recent songs.

    Get one with :meth:`from_pretrained`, or hand it a backend you built. Its methods are safe
    to call from several threads: renders queue on the device's lock (:func:`device_lock`),
    shared by every engine on that device.
    """

    def __init__(
        self,
        backend: Backend | Any,
        params: SpectrogramParams = SpectrogramParams(),
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        clock: Callable[[], float] = time.perf_counter,
        memory_limit: int | None = None,
        decode_batch: int | None = None,
    ) -> None:
        if not hasattr(backend, "capabilities"):  # a model loaded by hand: its backend
            options = {"params": params, "memory_limit": memory_limit}
            backend = backend_for_model(backend, decode_batch=decode_batch, **options)
        self.backend = backend
        self.params = getattr(backend, "params", params)  # the pictures renders carry
        self._clock = clock
        self._rates = StageRates(backend.prior_rates, backend.estimate_needs)
        self._cache: OrderedDict[str, Encoding] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._lock = device_lock(backend.device)
        self._last_song: tuple[weakref.ref, int, Audio, str] | None = None

    @classmethod
    def from_pretrained(
        cls,
        source: ModelSpec | str | Path | None = None,
        device: str = "auto",
        dtype: str | None = None,
        local_files_only: bool | None = None,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        compile: bool | str = False,
        channels_last: bool = False,
        preview_vae: str | Path | None = None,
        on_preview_vae_error: Callable[[Exception], None] | None = None,
    ) -> Engine:
        """An engine with a model loaded: ``source`` is a :class:`~neurochip.model_spec.ModelSpec`
        (any engine kind), or a hub id, local diffusers folder or ``.safetensors`` file of a
        Riffusion (Stable Diffusion 1.x) model, the default, with the options below.

        Args:
            device: ``auto`` (the best found), ``cuda``, ``mps`` or ``cpu``.
            dtype: ``fp32``, ``fp16`` or ``bf16``; ``None`` is fp16 on CUDA, fp32 elsewhere.
            local_files_only: Never touch the network (default: ``HF_HUB_OFFLINE``).
            lora: A LoRA to fuse into the UNet (file, folder or hub id; see
                :mod:`neurochip.lora`), at strength ``lora_scale``.
            compile: ``torch.compile`` the UNet: True or a mode of
                :data:`~neurochip.model.COMPILE_MODES`.
            channels_last: weights in channels-last memory order.
            preview_vae: a tiny VAE (TAESD) for quick previews: folder or hub id.
            on_preview_vae_error: Where given, a preview VAE that cannot be loaded is said to
                it and the model loads without one; by default it fails the load.

        Raises:
            ModelNotFoundError: The weights are not here; the message says how to get them.
            ModelLoadError: They are here, but a part cannot be used; the message names it.
        """
        spec = _spec_of(
            source, device, dtype, lora, lora_scale, compile, channels_last, preview_vae
        )
        spec.check(local_files_only, files=False)  # what can be said before the slow load
        options = {"on_preview_vae_error": on_preview_vae_error} if on_preview_vae_error else {}
        return cls(load_backend(spec, local_files_only, **options))

    @property
    def model(self) -> Any:
        """The backend's loaded model (Riffusion's :class:`RiffusionModel`)."""
        return self.backend.model

    @property
    def spec(self) -> ModelSpec | None:
        """What the model was loaded from (None for a model built by hand)."""
        return self.backend.spec

    @property
    def device(self) -> Any:
        return self.backend.device

    def describe(self) -> str:
        return self.backend.describe()

    # -- public --------------------------------------------------------------------------------

    def render(
        self,
        song: Audio,
        settings: RenderSettings,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Render:
        """Render the span ``settings.start_s`` .. ``+duration_s`` of a song as one take."""
        return self.render_many(song, [settings], progress, cancel)[0]

    def render_many(
        self,
        song: Audio | Sequence[Audio],
        takes: Sequence[RenderSettings],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        part: str = "",
    ) -> list[Render]:
        """Render several takes of one span of a song together, in one denoising loop.

        The takes may differ in anything but the span (``start_s``, ``duration_s``): seed,
        denoise, guidance, prompt, steps, scheduler. Their windows share the model's calls
        (a GPU does two or sixteen windows in little more time than one) and the song is
        encoded once. Each take equals rendering it alone, up to float rounding.

        ``song`` may also be one song per take, all of one length: a sketch's stems (each
        part played alone, :mod:`neurochip.stems`), each rendered with its own prompt in the
        same shared calls. ``part`` (one of the backend's ``capabilities.parts``, e.g.
        "drums") makes that instrument alone, playing along with the song: a stem to add.
        """
        check_shared(takes, span=True)
        # Cut the span at the working rate: lengths in samples then mean the same on both sides
        # of the resampler (a 48 kHz span's sample count is not the take's).
        songs = self._songs_of(song, takes)
        spans = each_once(songs, lambda s: s.span(takes[0].start_s, takes[0].duration_s))
        check_capable(self.backend.capabilities, takes, part, spans[0].duration_s)
        span_start_s = snapped_s(takes[0].start_s, songs[0].sample_rate)
        monos = each_once(spans, Audio.to_mono)
        with self._lock:
            if takes[0].loop:
                results = _render_loop(self, monos, takes, progress, cancel, span_start_s)
            else:
                job = RenderJob(monos, takes, 0, monos[0].frames, span_start_s, part=part)
                results = self._run(job, progress, cancel)
        # The span is rendered as a song of its own; report where it sits in the whole song.
        return [replace(result, start_s=span_start_s) for result in results]

    def calibrate(self, settings: RenderSettings | None = None) -> None:
        """Measure this device's time per unit of each stage on a small probe render.

        One model window of quiet noise, one denoising step with ``settings``' guidance and
        phase: a few seconds on a CPU with the real model, so :meth:`estimate_s` can speak
        before a long render instead of after it.
        """
        settings = settings or RenderSettings()
        caps = self.backend.capabilities
        noise = np.random.default_rng(0).standard_normal((1, caps.probe_frames))
        probe = Audio((0.01 * noise).astype(np.float32), caps.sample_rate)
        steps = max(2, settings.steps)
        one_step = replace(settings, steps=steps, denoise=1.0 / steps, start_s=0.0, duration_s=None)
        self.render(probe, one_step)

    def estimate_s(
        self, song: Audio | Sequence[Audio], takes: Sequence[RenderSettings]
    ) -> float | None:
        """Seconds a :meth:`render_many` of ``takes`` would take on this engine's device.

        From the time per unit of each stage this engine measured on its own renders and
        previews (a preview measures them all), so it speaks for this machine and model;
        None before it has measured the model's stages.
        """
        if not self._rates.needed <= self._rates.measured:
            return None
        songs = len({id(s) for s in song}) if not isinstance(song, Audio) else 1
        song = self._at_working_rate(song if isinstance(song, Audio) else song[0])
        # The span is a song of its own to the engine: not in the cache (its picture is made).
        # Only its length counts, so no mono mix is made (the app asks on every page run).
        span = song.span(takes[0].start_s, takes[0].duration_s)
        start_s = snapped_s(takes[0].start_s, song.sample_rate)
        length = span.frames
        if takes[0].loop:  # rendered with its own ends wrapped round each side
            pad = self.backend.loop_pad(length)
            length += 2 * pad
            start_s -= pad / song.sample_rate  # its own end before its start
        job = RenderJob([span] * len(takes), takes, 0, length, song_start_s=start_s)
        work = self.backend.work(job, None)
        work["encode"] *= songs  # stems: each part's encoding is made
        return self._rates.seconds(work)

    def preview(
        self,
        song: Audio,
        settings: RenderSettings,
        start_s: float,
        duration_s: float = PREVIEW_SECONDS,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        quality: PreviewQuality = FAITHFUL_PREVIEW,
    ) -> Render:
        """Render a short region fast, reusing the cached encoding of the whole song.

        The region gets the same noise the full render puts there, so a preview sounds like
        that part of the full render (up to the windows' context: see :class:`PreviewQuality`).
        ``start_s`` snaps to 10 ms.
        """
        return self.preview_many(
            song, [settings], start_s, duration_s, progress, cancel, quality=quality
        )[0]

    def preview_many(
        self,
        song: Audio,
        takes: Sequence[RenderSettings],
        start_s: float,
        duration_s: float = PREVIEW_SECONDS,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        quality: PreviewQuality = FAITHFUL_PREVIEW,
    ) -> list[Render]:
        """Previews of one region with several settings (a variation grid), in one loop.

        As :meth:`preview` for each; their span settings are ignored (the region is given).
        """
        check_shared(takes, span=False)
        check_capable(self.backend.capabilities, takes)
        mono, key = self._prepared(song)
        start, length = preview_region(mono, start_s, duration_s, self.params)
        job = RenderJob([mono] * len(takes), takes, start, length, quality=quality)
        with self._lock:
            return self._run(job, progress, cancel, key)

    def reroll_many(
        self,
        song: Audio,
        parent: Audio,
        takes: Sequence[RenderSettings],
        region_s: tuple[float, float],
        margin_s: float = REROLL_MARGIN_S,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Render]:
        """Render one region of a take again, once per settings in ``takes``; the rest stays.

        The region's music is made anew as in any render and grows out of the music around
        it: the model keeps the parent take outside the region through a mask that ramps over
        ``margin_s`` on each side. The audio outside the region and its margins is the
        parent's, sample for sample; within the margins it crossfades into the new audio.
        The candidates share one loop (as :meth:`render_many`), each equal to re-rolling it
        alone.

        Args:
            song: The sketch the parent take was rendered from.
            parent: The take (mono; exactly its span's length, as renders are).
            takes: Settings of each candidate (new seeds, denoise, prompts...); the span
                (``start_s``, ``duration_s``) must be the parent's.
            region_s: (start, end) of the region in seconds from the span's start.
            margin_s: The blend on each side of the region, inside the take.

        Returns:
            Whole takes, the parent's length, each with the region rendered anew
            (``info["reroll"]`` says which region and margin).
        """
        check_shared(takes, span=True)
        if not self.backend.capabilities.repaint:
            raise NeuroChipError(
                "This model cannot render a region of a take anew: re-roll with Riffusion."
            )
        song = self._at_working_rate(song)
        span = song.span(takes[0].start_s, takes[0].duration_s)
        parent = self._at_working_rate(parent)
        check_parent(parent, span)
        bounds = reroll_bounds(span.frames, span.sample_rate, region_s, margin_s)
        bounds = replace(bounds, loop=bool(takes[0].loop))
        start_s = snapped_s(takes[0].start_s, song.sample_rate)
        mono = span.to_mono()
        job = RenderJob(
            [mono] * len(takes),
            takes,
            0,
            mono.frames,
            song_start_s=start_s,
            repaint=Repaint(parent, bounds),
        )
        with self._lock:
            results = self._run(job, progress, cancel)
        return [replace(result, start_s=start_s) for result in results]

    def render_picture(
        self,
        job: PictureJob,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> Render:
        """A spectrogram picture rendered as itself, its mask's black kept (Riffusion's seed
        and mask images), by a backend that renders pictures (:func:`check_pictures`)."""
        check_pictures(self.backend.capabilities)
        length = self.params.num_samples(job.image.shape[-1])
        # Silence of the picture's length stands for the song: the work is counted by it.
        silence = Audio(np.zeros((1, length), np.float32), self.params.sample_rate)
        with self._lock:
            job = RenderJob([silence], [job.settings], 0, length, picture=job)
            return self._run(job, progress, cancel)[0]

    def cache_size_bytes(self) -> int:
        """Memory the kept song encodings take (pictures and latents)."""
        return sum(entry.nbytes for entry in self._cache.values())

    def peak_memory_bytes(self) -> int | None:
        """The most GPU memory allocated since the backend's probe was last reset (CUDA)."""
        return self.backend.memory.peak_bytes() if self.device.type == "cuda" else None

    # -- one call ------------------------------------------------------------------------------

    def _run(
        self,
        job: RenderJob,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
        key: str | None = None,
    ) -> list[Render]:
        """One backend call over ``job``: its songs keyed and encoded once each (cached), its
        work counted for progress, timed. ``key`` is the song's content key when the caller
        has it (one song only)."""
        began = self._clock()
        distinct = list({id(m): m for m in job.songs}.values())
        keys = {id(m): key if key and len(distinct) == 1 else content_key(m) for m in distinct}
        work: dict[str, float] = {}
        for mono in distinct:
            own = [s for s, m in zip(job.takes, job.songs, strict=True) if m is mono]
            one = self.backend.work(
                replace(job, songs=[mono] * len(own), takes=own), self._cache.get(keys[id(mono)])
            )
            work = {stage: work.get(stage, 0.0) + units for stage, units in one.items()}
        report = StagedProgress(
            progress, self._rates, work, self._clock, lambda: synchronize(self.device), cancel
        )
        report.stage("encode", 0.0, "encode")
        if job.picture is not None:  # a picture rendered as itself: no song to encode
            results = [self.backend.render_picture(job.picture, report)]
        else:
            for_model = job.repaint is not None or any(s.denoise_steps > 0 for s in job.takes)
            encodings = {id(m): self._encoding(m, keys[id(m)], for_model) for m in distinct}
            if job.repaint is not None:
                results = self.backend.repaint(job, encodings[id(job.songs[0])], report)
            else:
                results = self.backend.render(job, [encodings[id(m)] for m in job.songs], report)
        report.finish()
        seconds = round(self._clock() - began, 3)
        return [replace(result, seconds=seconds) for result in results]

    def _encoding(self, mono: Audio, key: str, for_model: bool) -> Encoding:
        """The backend's encoding of a whole song, kept for the next call on it."""
        entry = self.backend.encode(mono, self._cache.get(key), for_model)
        self._cache[key] = entry
        self._cache.move_to_end(key)
        self._evict()
        return entry

    def _evict(self) -> None:
        """Forget the least recently used songs until the cache fits; the newest always stays."""
        total = self.cache_size_bytes()
        while total > self._cache_bytes and len(self._cache) > 1:
            _, entry = self._cache.popitem(last=False)
            total -= entry.nbytes

    def _songs_of(self, song: Audio | Sequence[Audio], takes: Sequence[RenderSettings]):
        """One song per take, at the working rate (the same object where it is one song)."""
        if isinstance(song, Audio):
            return [self._at_working_rate(song)] * len(takes)
        if len(song) != len(takes):
            raise ValueError(f"{len(song)} songs for {len(takes)} takes: give one per take")
        songs = each_once(list(song), self._at_working_rate)
        if len({s.frames for s in songs}) > 1:
            raise NeuroChipError(
                "Songs rendered together must be of one length (the stems of one sketch): "
                "render the others separately."
            )
        return songs

    def _at_working_rate(self, song: Audio) -> Audio:
        rate = self.backend.capabilities.sample_rate
        return song if song.sample_rate == rate else song.resample(rate)

    def _prepared(self, song: Audio) -> tuple[Audio, str]:
        """The song as the engine hears it (mono, working rate) and its content key.

        The last song's are kept while its samples array lives: previews of one song, one per
        slider change, then skip the resampling, the mix-down and hashing the whole song.
        (Audio is never changed in place in NeuroChip; the key is of the content.)
        """
        last = self._last_song
        if last is not None and last[0]() is song.samples and last[1] == song.sample_rate:
            return last[2], last[3]
        mono = self._at_working_rate(song).to_mono()
        key = content_key(mono)
        self._last_song = (weakref.ref(song.samples), song.sample_rate, mono, key)
        return mono, key


def _render_loop(
    engine: Engine,
    monos: Sequence[Audio],
    takes: Sequence[RenderSettings],
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    span_start_s: float,
) -> list[Render]:
    """Render a span as a seamless loop (``settings.loop``).

    The span is rendered with its own end wrapped round before its start and its start
    after its end (the backend says how much), with noise that repeats with the span's
    period, so the music on both sides of the loop point is what it is on repeat; then
    :func:`finish_loop` crossfades the loop point. ``monos[i]`` is the span of
    ``takes[i]`` (one span, repeated, but for stems).
    """
    if not engine.backend.capabilities.loops:
        raise NeuroChipError("This model cannot render seamless loops: use Riffusion.")
    check_loop(monos[0])
    rate, length = monos[0].sample_rate, monos[0].frames
    pad = engine.backend.loop_pad(length)
    fade_in = round(LOOP_INPUT_FADE_S * rate)
    wrapped = each_once(monos, lambda m: Audio(wrap_loop(m.samples, pad, fade_in), rate))
    start_s = span_start_s - pad / rate  # its own end wrapped round before its start
    job = RenderJob(wrapped, takes, 0, wrapped[0].frames, song_start_s=start_s, loop_pad=pad)
    results = engine._run(job, progress, cancel)
    return [
        finish_loop(result, mono, pad, engine.params)
        for mono, result in zip(monos, results, strict=True)
    ]


def _spec_of(source: Any, device, dtype, lora, lora_scale, compile, channels_last, preview_vae):
    """``Engine.from_pretrained``'s arguments as a :class:`ModelSpec` (Riffusion's, unless
    ``source`` is a spec already)."""
    from neurochip.model_spec import ModelSpec

    if isinstance(source, ModelSpec):
        return source
    return ModelSpec(
        device=device,
        dtype=dtype or "auto",
        lora=str(lora or ""),
        lora_scale=lora_scale,
        compile="default" if compile is True else (compile or ""),
        channels_last=channels_last,
        preview_vae=str(preview_vae or ""),
        **({"source": str(source)} if source is not None else {}),
    )


def content_key(mono: Audio) -> str:
    return hashlib.blake2b(mono.samples.tobytes(), digest_size=16).hexdigest()


def each_once(items: Sequence[Any], make: Callable[[Any], Any]) -> list[Any]:
    """``[make(x) for x in items]``, made once per distinct object (one song repeated per
    take is mixed down, cut and encoded once)."""
    made: dict[int, Any] = {}
    return [made[id(x)] if id(x) in made else made.setdefault(id(x), make(x)) for x in items]


def check_capable(
    caps: Capabilities, takes: Sequence[RenderSettings], part: str = "", seconds: float = 0.0
) -> None:
    """Refuse what the model cannot do, saying which model can, rather than ignore it (or,
    for a span of ``seconds`` longer than it takes, cut it)."""
    if caps.longest_s is not None and seconds > caps.longest_s:
        raise NeuroChipError(
            f"This model renders at most {caps.longest_s:.0f} s in one piece and the span is "
            f"{seconds:.0f} s: render the song in parts (Start and Duration), or with Riffusion."
        )
    if any(s.sections for s in takes) and not caps.sections:
        raise NeuroChipError(
            "This model does not follow a prompt timeline (sections): render with Riffusion, "
            "or clear the sections."
        )
    if any(s.prompt_end for s in takes) and caps.knobs is not None:
        raise NeuroChipError(
            "Prompt interpolation (Interpolate to) is Riffusion's: clear it for this model."
        )
    if part and part not in caps.parts:
        if not caps.parts:
            raise NeuroChipError("This model cannot add a part: choose ACE-Step to add one.")
        raise NeuroChipError(
            f"No instrument {part!r} to add: choose one of {', '.join(caps.parts)}."
        )


def check_pictures(capabilities: Capabilities) -> None:
    """Refuse a picture for a model that renders audio (ACE-Step, Stable Audio)."""
    if not capabilities.pictures:
        raise NeuroChipError(
            "This model renders audio, not spectrogram pictures: seed images and mask "
            "images need a Riffusion model (neurochip serve --model riffusion/...)."
        )


def check_shared(takes: Sequence[RenderSettings], span: bool) -> None:
    """Takes rendered together share their windows, and (but for previews) their span."""
    if not takes:
        raise ValueError("Rendering together needs at least one take's settings")
    if len({(s.overlap, s.windows, s.feature_reuse, s.loop) for s in takes}) > 1:
        raise NeuroChipError(
            "Takes rendered together must use the same windows (mode and overlap), feature "
            "reuse and loop setting: render the others separately."
        )
    if span and len({(s.start_s, s.duration_s) for s in takes}) > 1:
        raise NeuroChipError(
            "Takes rendered together must cover the same span (start and duration): render "
            "the others separately."
        )
