"""A song's render, for every front end: a take set, or stems.

The app, the server and the CLI each say what the composer asked for (a sketch, its
settings, the take set's options and, for stems, the instrument map); this module decides
what that makes:

* :func:`render`: the render itself, :func:`~neurochip.takeset.render_take_set` or
  :func:`~neurochip.stems.render_stems` (each stem a stereo pair where the options ask for
  one);
* :func:`planned`: what it will render, without rendering: each denoising loop's songs and
  takes' settings (take B, each stem's settings, the intro before a loop), from the very
  functions the render uses, so :func:`estimate_s` speaks for the render that will run.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

from neurochip.engine import Engine, ProgressCallback
from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import Sketch
from neurochip.stems import Stem, StemMix, StemTakes, render_stems, stem_settings
from neurochip.takeset import (
    TakeSet,
    intro_settings,
    render_take_set,
    take_set_settings,
    wants_intro,
)


class Pass(NamedTuple):
    """One denoising loop of a render: what :meth:`Engine.render_many` gets (one song per
    take)."""

    songs: list[Audio]
    takes: list[RenderSettings]


def pair_width(options: TakeSetOptions) -> float | None:
    """How wide each stem's stereo pair is, ``None`` for mono stems (no stereo pair asked)."""
    return options.width if options.stereo_pair else None


def planned(
    sketch: Sketch | Audio,
    settings: RenderSettings,
    options: TakeSetOptions = TakeSetOptions(),
    stems: Sequence[Stem] | None = None,
) -> list[Pass]:
    """What :func:`render` with these arguments renders: its denoising loops, in order (the
    takes, then the intro before a loop where there is one).

    A stem's song is its parts played alone, which is only played when the render starts;
    here the sketch's audio (of the same length) stands in for it, one object per stem as the
    render has (take B of a stem hears take A's).
    """
    audio = sketch.audio if isinstance(sketch, Sketch) else sketch
    if stems is not None:
        width = pair_width(options)
        parts = [Audio(audio.samples, audio.sample_rate) for _ in stems]
        songs = parts * 2 if width is not None else parts
        return [Pass(songs, stem_settings(settings, stems, width))]
    takes = take_set_settings(settings, options)
    passes = [Pass([audio] * len(takes), list(takes.values()))]
    if wants_intro(settings, options):
        intro = list(intro_settings(takes).values())
        passes.append(Pass([audio] * len(intro), intro))
    return passes


def estimate_s(
    engine: Engine,
    sketch: Sketch | Audio,
    settings: RenderSettings,
    options: TakeSetOptions = TakeSetOptions(),
    stems: Sequence[Stem] | None = None,
) -> float | None:
    """Seconds :func:`render` would take on ``engine``'s device (:meth:`Engine.estimate_s`
    of each of its loops); None before the engine has measured its stages."""
    first, *rest = planned(sketch, settings, options, stems)
    seconds = engine.estimate_s(*first)
    if seconds is None:
        return None
    return seconds + sum(engine.estimate_s(*loop) or 0.0 for loop in rest)


def render(
    engine: Engine,
    sketch: Sketch | Audio,
    settings: RenderSettings,
    options: TakeSetOptions = TakeSetOptions(),
    stems: Sequence[Stem] | None = None,
    mixes: Sequence[StemMix] | None = None,
    *,
    library: TakeLibrary | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> TakeSet | StemTakes:
    """Render a sketch's span: the take set ``options`` asks for, or, given an instrument
    map (``stems``), a stem per line of it and their mix (``mixes``: the faders), each stem a
    stereo pair where ``options.stereo_pair``. Every file is kept in ``library`` as it comes;
    ``.saved`` of the result says where.

    Raises:
        NeuroChipError: For a bad setting or map, or stems of plain audio (stems need the
            sketch: its parts are played alone).
        RenderCancelled: When ``cancel`` was set.
    """
    if stems is None:
        return render_take_set(
            engine, sketch, settings, options, library=library, progress=progress, cancel=cancel
        )
    if not isinstance(sketch, Sketch):
        raise NeuroChipError("Stems are rendered from a loaded sketch, not from plain audio.")
    return render_stems(
        engine,
        sketch,
        settings,
        stems,
        mixes,
        library=library,
        progress=progress,
        cancel=cancel,
        pair_width=pair_width(options),
    )


__all__ = ["Pass", "estimate_s", "pair_width", "planned", "render"]
