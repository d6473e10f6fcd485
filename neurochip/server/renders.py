"""The server's renders: each a :class:`~neurochip.jobs.Job` running the library's one
entry (:func:`~neurochip.arrangement.render`: a take set, or stems), on one engine loaded
once, its takes kept in the take library as they come.

Renders wait in a bounded :class:`~neurochip.jobs.JobQueue` run by a fixed number of workers;
a waiting render holds its sketch as a file, never as audio (a MIDI file of a few bytes can be
minutes of it), and is played when its turn comes. Nothing here knows HTTP:
:mod:`neurochip.server.app` turns these into routes.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurochip.arrangement import render
from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.io.decode import DEFAULT_MAX_DURATION_S
from neurochip.jobs import Job, JobQueue
from neurochip.library.store import TakeLibrary
from neurochip.settings import RenderSettings, TakeSetOptions
from neurochip.sketch import SketchOutline, load_sketch
from neurochip.stems import apply_overrides, check_stems, default_stems, parse_stem
from neurochip.takeset import check_take_set

#: How many finished renders the server remembers (their takes stay in the library).
KEPT_RENDERS = 200

#: Keys of a render request's settings that are not :class:`RenderSettings` fields.
OPTION_KEYS = {f.name for f in dataclasses.fields(TakeSetOptions)}
STEM_KEYS = {"stems", "stem"}

#: The most work one request may ask for, in seconds of song x denoising steps x takes: a
#: 20-minute stereo pair at 50 steps, fully denoised.
DEFAULT_MAX_WORK = DEFAULT_MAX_DURATION_S * 50 * 2


@dataclass(frozen=True)
class SketchFile:
    """Where a queued render's sketch waits: a file, and the name the composer gave it."""

    path: Path
    name: str
    owned: bool = False  # an upload the server spooled: deleted once the render ends


@dataclass(frozen=True)
class RenderRequest:
    """One render, checked: what :meth:`Renders.submit` runs."""

    sketch: SketchFile
    outline: SketchOutline
    settings: RenderSettings
    options: TakeSetOptions
    stems: list | None = None  # the instrument map, when the request asked for stems

    def work(self) -> float:
        """What it asks of the model: seconds of song x denoising steps x takes."""
        settings = self.settings
        span = min(settings.duration_s or math.inf, self.outline.duration_s - settings.start_s)
        steps = max(1, math.ceil(settings.steps * settings.denoise))
        takes = len(self.stems) if self.stems is not None else 1
        return max(0.0, span) * steps * takes * (2 if self.options.stereo_pair else 1)


def parse_render_request(
    sketch: SketchFile, outline: SketchOutline, data: Mapping[str, Any]
) -> RenderRequest:
    """A request's settings JSON -> a checked :class:`RenderRequest`.

    The keys are :class:`RenderSettings`' (prompt, denoise, guidance, steps, seed,
    scheduler, start_s, duration_s, sections, loop...) and :class:`TakeSetOptions`'
    (stereo_pair, seed_b, width, compare...), as the CLI's options; ``"stems": true``
    renders a MIDI sketch's parts as stems, ``"stem": ["Bass=slap bass:0.25", ...]`` changes
    instruments (and implies stems). ``outline`` is what is known of the sketch before it
    is played (:func:`~neurochip.sketch.outline_sketch`).

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
        stems = apply_overrides(default_stems(outline), dict(map(parse_stem, overrides)))
        check_stems(outline, stems)
    check_take_set(outline.duration_s, settings, options)
    return RenderRequest(sketch, outline, settings, options, stems)


class Renders:
    """The server's render jobs by id, on one engine (loaded at the first render).

    Args:
        load_engine: Makes the engine (called once, on the first render's thread).
        library: Where every take is kept.
        workers: Renders run at once (one engine: more only wait for its device lock).
        depth: Renders that may wait beyond those; a full queue refuses with
            :class:`~neurochip.jobs.QueueFull`.
        max_work: The most one request may ask (:meth:`RenderRequest.work`).
    """

    def __init__(
        self,
        load_engine: Callable[[], Engine],
        library: TakeLibrary,
        *,
        workers: int = 1,
        depth: int = 8,
        max_work: float = DEFAULT_MAX_WORK,
    ) -> None:
        self._load_engine = load_engine
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self.library = library
        self.max_work = max_work
        self.queue = JobQueue(workers, depth, name="renders")
        self._jobs: OrderedDict[str, Job[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._spool = Path(tempfile.mkdtemp(prefix="neurochip-serve-"))

    def engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                self._engine = self._load_engine()
            return self._engine

    def spool_path(self, name: str) -> Path:
        """A new private file for an upload to wait in (the name's suffix kept)."""
        suffix = Path(name).suffix.lower()
        suffix = suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""
        return self._spool / f"{secrets.token_hex(8)}{suffix}"

    def check_work(self, request: RenderRequest) -> None:
        """Refuse a request that asks more of the model than this server gives one."""
        work = request.work()
        if work > self.max_work:
            raise NeuroChipError(
                f"This render asks for {work:,.0f} song-seconds x denoising steps x takes, "
                f"over this server's limit of {self.max_work:,.0f}: render a shorter span, "
                "fewer steps, a lower denoise or fewer takes."
            )

    def submit(self, request: RenderRequest) -> str:
        """Queue a render; returns its id.

        Raises:
            NeuroChipError: It asks too much (:meth:`check_work`).
            QueueFull: As many renders wait as may.
        """
        self.check_work(request)

        def work(progress, cancel) -> dict[str, str]:
            progress(0.0, "reading the sketch")
            sketch = load_sketch(
                request.sketch.path,
                name=request.sketch.name,
                max_duration_s=request.outline.duration_s + 1.0,  # checked when it came
                cancel=cancel,
            )
            check_take_set(sketch.audio, request.settings, request.options)
            progress(0.0, "loading the model" if self._engine is None else "starting")
            engine = self.engine()
            made = render(
                engine,
                sketch,
                request.settings,
                request.options,
                request.stems,
                library=self.library,
                progress=progress,
                cancel=cancel,
            )
            return dict(made.saved)

        job: Job[dict[str, str]] = Job(work, name="render")
        if request.sketch.owned:
            job.add_done_callback(lambda _: request.sketch.path.unlink(missing_ok=True))
        return self.run(job)

    def run(self, job: Job[Any]) -> str:
        """Queue any job on the renders' workers (Riffusion's requests); returns its id.

        Raises:
            QueueFull: As many renders wait as may.
        """
        render_id = secrets.token_hex(8)
        try:
            self.queue.submit(job)
        except NeuroChipError:
            job.cancel()
            job.run()  # ends it cancelled, with its callbacks (an upload's file goes)
            raise
        with self._lock:
            self._jobs[render_id] = job
            self._forget_old()
        return render_id

    def ids(self) -> list[str]:
        """The renders the server remembers, oldest first."""
        with self._lock:
            return list(self._jobs)

    def spooled(self) -> list[Path]:
        """The uploads waiting for their renders."""
        return sorted(self._spool.iterdir())

    def get(self, render_id: str) -> Job[Any]:
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
        self.queue.cancel(self.get(render_id))

    def close(self, wait_s: float = 5.0) -> bool:
        """Cancel every render, waiting or running (takes already kept stay), and wait up to
        ``wait_s`` for them to stop; the spooled uploads go. True if all stopped in time."""
        stopped = self.queue.close(wait_s)
        shutil.rmtree(self._spool, ignore_errors=True)
        return stopped

    def _forget_old(self) -> None:
        while len(self._jobs) > KEPT_RENDERS:
            oldest = next(iter(self._jobs))
            if not self._jobs[oldest].finished:
                break  # never forget work under way
            del self._jobs[oldest]
