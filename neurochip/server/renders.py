"""The server's renders: each a :class:`~neurochip.jobs.Job` running the library's one
workflow (:func:`~neurochip.takeset.render_take_set`, or :func:`~neurochip.stems.render_stems`),
on one engine loaded once, its takes kept in the take library as they come.

Nothing here knows HTTP: :mod:`neurochip.server.app` turns these into routes.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.jobs import Job
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import Sketch
from neurochip.stems import apply_overrides, check_stems, default_stems, parse_stem, render_stems
from neurochip.takeset import check_take_set, render_take_set

#: How many finished renders the server remembers (their takes stay in the library).
KEPT_RENDERS = 200

#: Keys of a render request's settings that are not :class:`RenderSettings` fields.
OPTION_KEYS = {f.name for f in dataclasses.fields(TakeSetOptions)}
STEM_KEYS = {"stems", "stem"}


@dataclass(frozen=True)
class RenderRequest:
    """One render, checked: what :meth:`Renders.submit` runs."""

    sketch: Sketch
    settings: RenderSettings
    options: TakeSetOptions
    stems: list | None = None  # the instrument map, when the request asked for stems


def parse_render_request(sketch: Sketch, data: Mapping[str, Any]) -> RenderRequest:
    """A request's settings JSON -> a checked :class:`RenderRequest`.

    The keys are :class:`RenderSettings`' (prompt, denoise, guidance, steps, seed,
    scheduler, start_s, duration_s, sections, loop...) and :class:`TakeSetOptions`'
    (stereo_pair, seed_b, width, compare...), as the CLI's options; ``"stems": true``
    renders a MIDI sketch's parts as stems, ``"stem": ["Bass=slap bass:0.25", ...]`` changes
    instruments (and implies stems).

    Raises:
        NeuroChipError: For an unknown key or a bad value, saying which.
    """
    if not isinstance(data, Mapping):
        raise NeuroChipError('The settings must be a JSON object, e.g. {"prompt": "funk"}.')
    fields = {f.name for f in dataclasses.fields(RenderSettings)}
    unknown = set(data) - fields - OPTION_KEYS - STEM_KEYS
    if unknown:
        raise NeuroChipError(f"Unknown settings: {', '.join(sorted(unknown))}.")
    settings = RenderSettings.from_dict({k: v for k, v in data.items() if k in fields})
    options = TakeSetOptions(**{k: v for k, v in data.items() if k in OPTION_KEYS})
    overrides = data.get("stem") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise NeuroChipError('"stem" must be a list like ["Bass=slap bass:0.25"].')
    stems = None
    if data.get("stems") or overrides:
        stems = apply_overrides(default_stems(sketch), dict(map(parse_stem, overrides)))
        check_stems(sketch, stems)
    check_take_set(sketch.audio, settings, options)
    return RenderRequest(sketch, settings, options, stems)


class Renders:
    """The server's render jobs by id, on one engine (loaded at the first render).

    Args:
        load_engine: Makes the engine (called once, on the first render's thread).
        library: Where every take is kept.
    """

    def __init__(self, load_engine: Callable[[], Engine], library: TakeLibrary) -> None:
        self._load_engine = load_engine
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self.library = library
        self._jobs: OrderedDict[str, Job[dict[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._load_engine()
            return self._engine

    def submit(self, request: RenderRequest) -> str:
        """Start a render; returns its id. Renders wait for each other on the engine's
        device lock, in the order they came."""

        def work(progress, cancel) -> dict[str, str]:
            progress(0.0, "loading the model" if self._engine is None else "waiting")
            engine = self.engine()
            if request.stems is not None:
                pair = request.options.width if request.options.stereo_pair else None
                made = render_stems(
                    engine,
                    request.sketch,
                    request.settings,
                    request.stems,
                    library=self.library,
                    progress=progress,
                    cancel=cancel,
                    pair_width=pair,
                )
                return dict(made.saved)
            takes = render_take_set(
                engine,
                request.sketch,
                request.settings,
                request.options,
                library=self.library,
                progress=progress,
                cancel=cancel,
            )
            return dict(takes.saved)

        render_id = secrets.token_hex(8)
        job = Job(work, name="render")
        with self._lock:
            self._jobs[render_id] = job
            self._forget_old()
        job.start()
        return render_id

    def get(self, render_id: str) -> Job[dict[str, str]]:
        with self._lock:
            job = self._jobs.get(render_id)
        if job is None:
            raise KeyError(render_id)
        return job

    def status(self, render_id: str) -> dict[str, Any]:
        """What a client polls: state, stage, progress, time, and the takes once done."""
        job = self.get(render_id)
        snapshot = job.snapshot()
        status = {
            "id": render_id,
            "state": snapshot["state"],
            "stage": snapshot["stage"],
            "progress": round(float(snapshot["fraction"]), 4),
            "elapsed_s": round(float(snapshot["elapsed_s"]), 3),
            "eta_s": snapshot["eta_s"],
            "version": snapshot["version"],
        }
        if snapshot["state"] == "done":
            status["takes"] = job.result
        if snapshot["error"]:
            status["error"] = snapshot["error"]
        return status

    def cancel(self, render_id: str) -> None:
        self.get(render_id).cancel()

    def _forget_old(self) -> None:
        while len(self._jobs) > KEPT_RENDERS:
            oldest = next(iter(self._jobs))
            if not self._jobs[oldest].finished:
                break  # never forget work under way
            del self._jobs[oldest]
