"""The arrangement workflow: a sketch and settings in, the finished set of takes out.

This is the one place that decides what a render makes, for every front end (the CLI, the
app, Python):

1. **take A**: the engine renders the span with the settings;
2. **take B** (stereo pair): seed + 1, or the seed asked for (:meth:`TakeSetOptions.take_b`);
3. **stereo pair**: A panned left, B right (:func:`~neurochip.mix.stereo_pair`);
4. **comparison**: the sketch span as the composer hears it (stereo where the sketch or the
   mix is) crossfading into the result;
5. each file gets its metadata (:func:`~neurochip.library.metadata.take_metadata`), and is
   kept in the take library the moment it exists, so a later cancel or crash loses nothing.

Each take's note faithfulness (:func:`~neurochip.faithfulness.note_faithfulness`: how well it
keeps the notes of the span the engine heard; per bar of a MIDI sketch, else per second) is
measured before it is kept, and goes in its metadata as ``"faithfulness"``: the meter's
:meth:`~neurochip.faithfulness.Faithfulness.to_dict` for a file of one take; for a file of
takes A and B (the stereo pair, and its comparison) ``{"score": the mean of A's and B's,
"takes": {"A": ..., "B": ...}}``, since the pair is heard as both, and a comparison's own
audio starts as the sketch itself. A comparison of take A alone carries A's. ``None`` where
the meter failed: a measurement is never worth losing a take over.

:func:`pair_takes` makes a stereo pair of any two takes already in the library.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from neurochip.engine import Engine, ProgressCallback, Render
from neurochip.errors import NeuroChipError
from neurochip.faithfulness import bars_of_span, sketch_bar_times, span_faithfulness
from neurochip.io.audio import Audio, fade_ramp, span_frames
from neurochip.library.metadata import combined_faithfulness as _combined_faithfulness
from neurochip.library.metadata import save_take, take_metadata
from neurochip.library.store import Take, TakeLibrary
from neurochip.library.thumbnails import read_png, spectrogram_thumbnail
from neurochip.mix import check_crossfade, crossfade_compare, stereo_pair
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import Sketch
from neurochip.spectrogram import SpectrogramParams

log = logging.getLogger(__name__)

#: The files of a take set, in the order they are made, and what each is called.
ROLES: dict[str, str] = {
    "A": "Take A",
    "B": "Take B",
    "pair": "Stereo pair mix",
    "compare": "Crossfade comparison",
    "intro": "Intro before the loop",
}

#: The intro's last moments crossfade into the loop's last ones: the loop's end flows into
#: its start, so the intro's end then does too.
INTRO_JOIN_S = 0.25

#: The share of a take set's progress that measuring the takes' note faithfulness gets.
METER_SHARE = 0.03


@dataclass(frozen=True)
class TakeFile:
    """One file of a take set: its audio and the metadata it carries."""

    role: str  # "A", "B", "pair" or "compare"
    audio: Audio
    metadata: dict[str, Any]
    # Its picture in take lists (a take's own spectrogram; the pair and the files made from
    # it show take A's); None where none could be made.
    thumbnail: Image.Image | None = None


@dataclass
class TakeSet:
    """What one render made: the engine's renders and the files made from them.

    Attributes:
        renders: ``"A"`` (and ``"B"`` for a stereo pair): the engine's results, with pictures.
        files: Role -> file, in :data:`ROLES` order.
        saved: Role -> take id in the library, for the files kept there.
    """

    renders: dict[str, Render]
    files: dict[str, TakeFile] = field(default_factory=dict)
    saved: dict[str, str] = field(default_factory=dict)

    @property
    def main(self) -> TakeFile:
        """The result to listen to first: the stereo pair where there is one, else take A."""
        return self.files.get("pair") or self.files["A"]

    def write(self, path: str | Path, bit_depth: str = "16") -> list[Path]:
        """Write every file: the main result at ``path``, the others beside it.

        ``song.wav`` gets the main result; ``song-A.wav`` and ``song-B.wav`` the takes of a
        stereo pair; ``song-compare.wav`` the comparison (see :func:`output_paths`).
        """
        targets = output_paths(path, list(self.files))
        return [
            save_take(targets[role], take.audio, take.metadata, bit_depth)
            for role, take in self.files.items()
        ]


def roles(options: TakeSetOptions, settings: RenderSettings | None = None) -> list[str]:
    """The files a take set with these options (and take A's settings) is made of, in
    :data:`ROLES` order."""
    made = ["A", "B", "pair"] if options.stereo_pair else ["A"]
    made += ["compare"] if options.compare else []
    return made + (["intro"] if wants_intro(settings, options) else [])


def wants_intro(settings: RenderSettings | None, options: TakeSetOptions) -> bool:
    """A loop that starts after the song's start gets an intro, unless asked not to."""
    return bool(settings and settings.loop and settings.start_s > 0 and options.loop_intro)


def take_set_settings(
    settings: RenderSettings, options: TakeSetOptions
) -> dict[str, RenderSettings]:
    """Each take's settings by role, as :func:`render_take_set` renders them in one loop:
    ``"A"``, and for a stereo pair ``"B"`` (:meth:`TakeSetOptions.take_b`)."""
    takes = {"A": settings}
    if options.stereo_pair:
        takes["B"] = options.take_b(settings)
    return takes


def intro_settings(takes: dict[str, RenderSettings]) -> dict[str, RenderSettings]:
    """The intro's takes before a loop (:func:`wants_intro`), by role: each loop take's
    settings from the song's start up to the loop, not looped."""
    start = next(iter(takes.values())).start_s
    return {
        name: replace(s, start_s=0.0, duration_s=start, loop=False) for name, s in takes.items()
    }


def output_paths(path: str | Path, made: list[str]) -> dict[str, Path]:
    """Where :meth:`TakeSet.write` puts each file: the main one (the pair, else A) at ``path``."""
    path = Path(path)
    main = "pair" if "pair" in made else "A"
    return {
        role: path if role == main else path.with_name(f"{path.stem}-{role}{path.suffix}")
        for role in made
    }


def render_take_set(
    engine: Engine,
    sketch: Sketch | Audio,
    settings: RenderSettings,
    options: TakeSetOptions = TakeSetOptions(),
    *,
    source_name: str | None = None,
    library: TakeLibrary | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> TakeSet:
    """Render a sketch's span with ``settings`` and make every file ``options`` asks for.

    Args:
        engine: The engine to render with.
        sketch: A loaded sketch (or plain audio, then name it with ``source_name``).
        settings: Take A's settings; the span is ``settings.start_s`` + ``duration_s``.
        options: Take B and the stereo pair, the comparison.
        source_name: The song's name in metadata and titles (default: the sketch's name).
        library: Keep each file here as soon as it exists.
        progress: ``progress(fraction, stage)`` over the whole set.
        cancel: Set it to stop; the takes already kept stay in the library.

    Raises:
        RenderCancelled: When ``cancel`` was set.
        NeuroChipError: For a span outside the song, or a comparison time past its end.
    """
    if isinstance(sketch, Sketch):
        audio, source_name = sketch.audio, source_name or sketch.name
    else:
        audio = sketch
    check_take_set(audio, settings, options)
    bars = sketch_bar_times(sketch) if isinstance(sketch, Sketch) else None
    # Which sketch the takes come from: opening one brings it back (the library keeps a copy).
    provenance = song_provenance(sketch) if isinstance(sketch, Sketch) else {}
    if library is not None and isinstance(sketch, Sketch):
        try:
            library.keep_source(sketch)
        except OSError as err:  # the takes matter more than reopening their song
            log.warning("Could not keep a copy of %s: %s", sketch.name, err)
    takes = take_set_settings(settings, options)

    result = TakeSet(renders={})

    def keep(role: str, take_audio: Audio, metadata: dict[str, Any], thumbnail) -> None:
        result.files[role] = TakeFile(role, take_audio, metadata, thumbnail)
        if library is not None:
            result.saved[role] = library.add(take_audio, metadata, thumbnail=thumbnail).id

    def rendering(fraction: float, stage: str) -> None:
        # The engine's share of the set; its "done" is the meter's start.
        if progress is not None:
            meter = "measuring note faithfulness"
            progress(fraction * (1 - METER_SHARE), meter if stage == "done" else stage)

    # Take A and take B in one denoising loop: their windows share the UNet's calls.
    renders = engine.render_many(audio, list(takes.values()), rendering, cancel)
    thumbnails: dict[str, Any] = {}
    measured: dict[str, dict[str, Any] | None] = {}
    for i, ((name, take_settings), render) in enumerate(zip(takes.items(), renders, strict=True)):
        result.renders[name] = render
        measured[name] = measure_take(render, bars, sketch)
        if progress is not None:
            done = 1 - METER_SHARE * (1 - (i + 1) / len(takes))
            progress(done, "measuring note faithfulness" if done < 1 else "done")
        meta = take_metadata(
            "take",
            {name: take_settings},
            source_name,
            {**render.info, **provenance},
            faithfulness=measured[name],
        )
        thumbnails[name] = take_thumbnail(render)
        keep(name, render.audio, meta, thumbnails[name])
    both = combined_faithfulness(measured)

    info = {**result.renders["A"].info, **provenance}
    cover = thumbnails["A"]  # the pair and the comparison show take A's picture
    mix = result.renders["A"].audio
    if options.stereo_pair:
        mix = stereo_pair(mix, result.renders["B"].audio, options.width)
        meta = take_metadata(
            "stereo pair", takes, source_name, info, width=options.width, faithfulness=both
        )
        keep("pair", mix, meta, cover)
    if options.compare:
        # The sketch as the composer hears it, over the rendered span, at the render's rate.
        span = audio.span(settings.start_s, settings.duration_s).resample(mix.sample_rate)
        original = span.to_stereo() if 2 in (span.channels, mix.channels) else span
        fade_at = _fade_at(options, original.duration_s)
        faded = crossfade_compare(
            original, mix, fade_at, options.compare_fade_s, options.compare_back_s
        )
        meta = take_metadata(
            "crossfade comparison",
            takes,
            source_name,
            info,
            fade_at_s=fade_at,
            fade_s=options.compare_fade_s,
            back_at_s=options.compare_back_s,
            faithfulness=both,
        )
        keep("compare", faded, meta, cover)
    if wants_intro(settings, options):
        if progress is not None:
            progress(1.0 - METER_SHARE / 2, "rendering the intro before the loop")
        intro_mix, intro_takes = _render_intro(engine, audio, takes, mix, options, cancel)
        paired = {"width": options.width} if options.stereo_pair else {}
        meta = take_metadata("intro", intro_takes, source_name, info, join_s=INTRO_JOIN_S, **paired)
        keep("intro", intro_mix, meta, cover)
    return result


def _render_intro(
    engine: Engine,
    audio: Audio,
    takes: dict[str, RenderSettings],
    loop_mix: Audio,
    options: TakeSetOptions,
    cancel: threading.Event | None,
) -> tuple[Audio, dict[str, RenderSettings]]:
    """The song from its start up to the loop, rendered as the loop's takes are, its last
    :data:`INTRO_JOIN_S` crossfading into the loop's last moments (which flow into the
    loop's first): intro, then loop on repeat, with no seam at either join."""
    intro_takes = intro_settings(takes)
    renders = engine.render_many(audio, list(intro_takes.values()), cancel=cancel)
    intro = renders[0].audio
    if options.stereo_pair and len(renders) > 1:
        intro = stereo_pair(intro, renders[1].audio, options.width)
    fade = min(round(INTRO_JOIN_S * intro.sample_rate), intro.frames, loop_mix.frames)
    samples = intro.samples.copy()
    tail = loop_mix.samples[:, loop_mix.frames - fade :]
    samples[:, -fade:] += fade_ramp(fade, samples.dtype) * (tail - samples[:, -fade:])
    return Audio(samples, intro.sample_rate), intro_takes


def song_provenance(sketch: Sketch) -> dict[str, Any]:
    """What a take's metadata says of its song: which sketch (Open brings it back) and, for
    audio, the bar grid its bars were counted on."""
    provenance: dict[str, Any] = {"sketch_key": sketch.key}
    if sketch.bar_grid is not None:
        provenance["bar_grid"] = sketch.bar_grid.to_dict()
    return provenance


def check_take_set(audio: Audio | float, settings: RenderSettings, options: TakeSetOptions) -> None:
    """Raise now, before a model loads, for anything that would stop the set half-way.

    The span must lie in the song and be long enough for one picture column group, and the
    comparison's fades must fit the span. ``audio`` may be the song's length in seconds
    alone (a server checks a request before the song is played).

    Raises:
        NeuroChipError: Saying what to change.
    """
    params = SpectrogramParams()
    rate = audio.sample_rate if isinstance(audio, Audio) else params.sample_rate
    frames = audio.frames if isinstance(audio, Audio) else round(audio * rate)
    start, stop = span_frames(frames, rate, settings.start_s, settings.duration_s)
    span_s = (stop - start) / rate
    shortest = params.min_samples / params.sample_rate
    if span_s < shortest:
        raise NeuroChipError(
            f"The span to render is {span_s:.2f} s: it must be at least "
            f"{shortest:.2f} s. Choose an earlier start or a longer duration."
        )
    if options.compare:
        fade_at = _fade_at(options, span_s)
        check_crossfade(span_s, fade_at, options.compare_fade_s, options.compare_back_s)


def _fade_at(options: TakeSetOptions, duration_s: float) -> float:
    """When the comparison fades into the render: as asked, else a third of the way in."""
    return duration_s / 3 if options.compare_at_s is None else options.compare_at_s


def measure_take(
    render: Render, bars: list[float] | None, song: Sketch | Audio | None = None
) -> dict[str, Any] | None:
    """A take's note faithfulness to the span the engine heard, for its metadata.

    Per bar where ``bars`` (the song's, in seconds) are known: those of the span, shifted to
    start at it, the bar it starts in (cut short) first; ``"first_bar"`` says which bar of
    the song that is (1 = the first). Notes are counted against ``song``'s own (a MIDI
    sketch's notes, an audio sketch's transcription); without it, against the span's
    transcription. ``None`` if the meter fails: logged, and the take kept.
    """
    try:
        _, first_bar = bars_of_span(bars, render.start_s)
        found = span_faithfulness(song, render.source, render.audio, render.start_s, bars)
        data = found.to_dict()
        if first_bar is not None and found.segment == "bar":
            data["first_bar"] = first_bar
        return data
    except Exception as err:  # noqa: BLE001 - a measurement is not worth losing a take over
        log.warning("Could not measure the note faithfulness of this take: %s", err)
        return None


def combined_faithfulness(
    measured: dict[str, dict[str, Any] | None],
) -> dict[str, Any] | None:
    """The ``"faithfulness"`` of a file holding several takes (``{"A": ..., "B": ...}``).

    One take: its own. Several: ``{"score": the mean of their scores, "takes": each's}``
    (the mean of those measured; ``None`` if none was), and ``"notes": {"score": the mean of
    their notes kept}`` where every take's notes were counted
    (:func:`neurochip.library.metadata.combined_faithfulness`, which the library's notes
    counted later use too).
    """
    return _combined_faithfulness(measured)


def take_thumbnail(render: Render):
    try:
        return spectrogram_thumbnail(render.output_image)
    except (NeuroChipError, RuntimeError) as err:
        # A preview picture is not worth losing the take over.
        log.warning("No thumbnail for this take: %s", err)
        return None


def pair_takes(library: TakeLibrary, take_a: str, take_b: str, width: float = 1.0) -> Take:
    """A new take in the library: take A panned left and take B right.

    Its metadata holds both takes' settings as "A" and "B", the width,
    ``"from_takes": [id_a, id_b]`` and their note faithfulness (see
    :func:`combined_faithfulness`); its thumbnail is take A's. (A take that is itself a pair
    or a comparison contributes its first settings and is mixed down to mono first.)

    Raises:
        NeuroChipError: For an unknown id, a width outside 0..1, or takes of different
            lengths or sample rates.
    """
    try:
        width = float(width)
    except (TypeError, ValueError):
        width = math.nan
    if not 0.0 <= width <= 1.0:  # NaN fails too
        raise NeuroChipError(f"Stereo width must be between 0 and 1, not {width}.")
    a, b = library.get(take_a), library.get(take_b)
    settings = {"A": a.settings(), "B": b.settings()}
    audio_a, audio_b = library.load_audio(a.id), library.load_audio(b.id)
    if audio_a.sample_rate != audio_b.sample_rate:
        raise NeuroChipError(
            f"“{a.name}” ({audio_a.sample_rate} Hz) and “{b.name}” "
            f"({audio_b.sample_rate} Hz) have different sample rates, so they cannot be "
            "paired."
        )
    if audio_a.frames != audio_b.frames:
        raise NeuroChipError(
            f"“{a.name}” is {audio_a.duration_s:.3f} s long and “{b.name}” "
            f"{audio_b.duration_s:.3f} s: a stereo pair needs two takes of the same length. "
            "Render both from the same start and duration of the song."
        )
    mix = stereo_pair(audio_a, audio_b, width)
    sources = [s for s in dict.fromkeys((a.source_name, b.source_name)) if s]
    provenance = {k: a.metadata[k] for k in ("model", "device", "model_spec") if k in a.metadata}
    faithfulness = combined_faithfulness(
        {"A": a.metadata.get("faithfulness"), "B": b.metadata.get("faithfulness")}
    )
    metadata = take_metadata(
        "stereo pair",
        settings,
        " + ".join(sources) or None,
        provenance,
        width=width,
        from_takes=[a.id, b.id],
        faithfulness=faithfulness,
    )
    return library.add(mix, metadata, thumbnail=read_png(a.thumbnail_path))
