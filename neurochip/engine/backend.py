"""What a model must provide to render for NeuroChip: the backend protocol.

The shared :class:`~neurochip.engine.Engine` does what every model needs the same way: the
song at the model's rate and its content key, the cache of songs' encodings, the device's
render lock, progress and cancel, time estimates from measured rates, spans, preview regions,
loops' wrapping and crossfade, re-roll bounds. A backend does the model's part of one engine
call, given a :class:`RenderJob`:

- :meth:`Backend.encode`: a song's encoding, made once and kept by the engine;
- :meth:`Backend.work`: units of work of each of its stages (for progress and estimates);
- :meth:`Backend.render`: several takes of one or more songs (stems) of one length, in one
  batch, for a region with context (a preview) or the whole song;
- :meth:`Backend.repaint`: a region of a take rendered anew, the rest kept;
- ``render_picture`` (Riffusion only): a spectrogram picture rendered as itself, with a mask
  (Riffusion's protocol: a seed image and a mask image, :class:`PictureJob`).

:class:`Capabilities` says what it renders and what it does natively. "Adding a model" in
``docs/ARCHITECTURE.md`` walks through a new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from neurochip.engine.device import MemoryProbe
from neurochip.engine.progress import StagedProgress
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings

if TYPE_CHECKING:
    from neurochip.model_spec import ModelSpec

#: Columns of the pictures renders carry (10 ms each, :class:`SpectrogramParams`) in one
#: Riffusion window: a preview's default context on each side.
WINDOW_COLUMNS = 512


@dataclass(frozen=True)
class PreviewQuality:
    """What a preview spends to sound like the same region of the full render.

    A preview renders its region plus some of the song on each side, so the windows at the
    region's edges see the music around it as they do in the full render; then it rebuilds
    the phase as the take would.
    """

    context_columns: int  # picture columns (10 ms each) rendered on each side of the region
    phase_iterations: int | None  # most Griffin-Lim iterations; None: the take's own
    # Decode with the model's tiny preview VAE where one is attached (neurochip.preview_vae).
    preview_vae: bool = False


#: The default: a whole window of the song on each side, the take's own phase.
FAITHFUL_PREVIEW = PreviewQuality(context_columns=WINDOW_COLUMNS, phase_iterations=None)

#: About twice as fast: a quarter window of context (the windows' overlap, 1.28 s) and at most
#: 2 Griffin-Lim iterations; where the model has a tiny preview VAE attached, it decodes too.
#: What it costs is measured by ``bench/preview.py --accuracy`` (README, "Previews"). An
#: option until heard on real weights.
QUICK_PREVIEW = PreviewQuality(
    context_columns=WINDOW_COLUMNS // 4, phase_iterations=2, preview_vae=True
)


@dataclass
class Render:
    """A finished take and what it was made from."""

    audio: Audio  # the take: mono, exactly the source span's length
    source: Audio  # the input span, as the engine heard it (mono mix)
    settings: RenderSettings
    input_image: torch.Tensor  # (3, 512, frames) float picture of the source, on the CPU
    output_image: torch.Tensor  # (3, 512, frames) float picture of the take, on the CPU
    start_s: float = 0.0  # where the span starts in the song
    info: dict[str, Any] = field(default_factory=dict)  # model, device (kept in take files)
    # Seconds the engine call took (shared by the takes made together); not in take files,
    # which stay the same bytes for the same settings.
    seconds: float | None = None


@dataclass(frozen=True)
class Repaint:
    """A re-roll: the take whose region is rendered anew, and where (see ``RerollBounds``)."""

    parent: Audio  # mono, the span's length, at the backend's rate
    bounds: Any  # neurochip.engine.regions.RerollBounds


@dataclass(frozen=True)
class PictureJob:
    """A spectrogram picture rendered as itself (Riffusion's img2img on a seed image, no
    audio in between), for a backend whose ``capabilities.pictures`` is True."""

    image: torch.Tensor  # (3, 512, W) float picture in [0, 1], loud = dark (the PNG's pixels)
    max_value: float  # the amplitude its white stands for (the image's EXIF, or Riffusion's)
    settings: RenderSettings
    # (512, W) in [0, 1]: 1 renders anew, 0 keeps the picture (a Riffusion mask's white and
    # black); None renders all of it.
    mask: torch.Tensor | None = None


@dataclass(frozen=True)
class RenderJob:
    """One engine call as a backend receives it.

    ``songs[i]`` is what ``takes[i]`` is rendered from: mono, at the backend's rate, all of
    one length (usually one song repeated; a sketch's stems are several). The region rendered
    is samples ``start`` .. ``start + length`` of them.
    """

    songs: Sequence[Audio]
    takes: Sequence[RenderSettings]
    start: int
    length: int
    song_start_s: float = 0.0  # where the songs' sample 0 is in the sketch (for sections)
    quality: PreviewQuality = FAITHFUL_PREVIEW
    loop_pad: int = 0  # a loop's own samples wrapped round each side (0: not a loop)
    repaint: Repaint | None = None
    part: str = ""  # an instrument made alone to play along with the songs (of `parts`)
    picture: PictureJob | None = None  # a picture rendered as itself (songs: its silence)


@dataclass(frozen=True)
class Capabilities:
    """What a backend renders, and what it does natively."""

    sample_rate: int
    channels: int
    probe_frames: int  # samples of one model window: what a calibration renders
    longest_s: float | None = None  # longest span it takes in one piece; None: any
    loops: bool = False  # seamless loops (it renders the wrapped span as one)
    sections: bool = False  # a prompt timeline within one take
    repaint: bool = False  # a region of a take anew, the rest kept
    batching: bool = False  # several takes in one loop, each as it would be alone
    parts: tuple[str, ...] = ()  # instruments it can add as a part of their own
    pictures: bool = False  # a spectrogram picture rendered as itself, masks kept (Riffusion)
    # The render settings it reads: front ends show these knobs; None: all of them.
    knobs: tuple[str, ...] | None = None


class Encoding(Protocol):
    """What a backend keeps of a song between calls (a picture, latents...)."""

    @property
    def nbytes(self) -> int: ...


class Backend(Protocol):
    """A model, loaded, that renders for the engine."""

    capabilities: Capabilities
    device: torch.device
    spec: ModelSpec | None  # what it was loaded from (None for a model built by hand)
    memory: MemoryProbe  # its model calls' GPU memory, measured once per shape
    #: Seconds per unit of each of its stages before this device's are measured, in order.
    prior_rates: dict[str, float]
    #: Stages that must be measured on this device before an estimate is given.
    estimate_needs: frozenset[str]

    def describe(self) -> str:
        """The model and device, in a line (front ends show it)."""
        ...

    def info(self) -> dict[str, Any]:
        """What every take it renders records of it (model, device, spec)."""
        ...

    def encode(self, song: Audio, kept: Encoding | None, for_model: bool) -> Encoding:
        """A song's encoding: ``kept`` (from an earlier call) completed, or a new one.
        ``for_model`` is False when no take of the call changes the song."""
        ...

    def work(self, job: RenderJob, kept: Encoding | None) -> dict[str, float]:
        """Units of work of each stage ``job`` will take (``kept``: the song's encoding now
        cached, or None). ``job.songs`` may be one song standing for several of its length."""
        ...

    def loop_pad(self, length: int) -> int:
        """Samples of a loop of ``length`` wrapped round each side before it is rendered."""
        ...

    def render(
        self, job: RenderJob, encodings: Sequence[Encoding], report: StagedProgress
    ) -> list[Render]:
        """Each take of ``job`` (``encodings[i]`` is ``job.songs[i]``'s)."""
        ...

    def repaint(self, job: RenderJob, encoding: Encoding, report: StagedProgress) -> list[Render]:
        """Each take of ``job`` rendered over ``job.repaint``'s region of its parent."""
        ...

    # Only where ``capabilities.pictures``:
    # def render_picture(self, job: PictureJob, report: StagedProgress) -> Render
