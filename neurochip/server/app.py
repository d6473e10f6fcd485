"""The HTTP API: FastAPI routes over :class:`~neurochip.server.renders.Renders` and the take
library. A thin front end, as the CLI and the app are: every render is the library's
workflow, every take is the library's.

Routes (OpenAPI docs at ``/docs``):

* ``POST /v1/renders``: a sketch (an upload, or a path under the allowed folder) and its
  settings as JSON -> ``{"id": ...}`` (202).
* ``GET /v1/renders/{id}``: state, stage, progress, time left; the takes once done.
* ``GET /v1/renders/{id}/events``: the same as server-sent events, until it ends.
* ``DELETE /v1/renders/{id}``: cancel (the takes already kept stay).
* ``GET /v1/takes``, ``GET /v1/takes/{id}``, ``GET /v1/takes/{id}/audio?format=wav|flac|mp3``.
* ``POST /v1/faithfulness``: a sketch and a take (uploads) -> how well the take keeps its notes
  (notes kept, and the chroma score).
* ``POST /run_inference/``: Riffusion's own endpoint and JSON (:mod:`neurochip.server.riffusion`).
* ``POST /run_vst/``: RiffusionVST's: a base64 WAV in, a base64 WAV of its length out
  (:mod:`neurochip.server.vst`).

Every error is JSON, ``{"error": "what happened and what to do"}``, with a 4xx status for a
bad request. Beyond localhost a token is required (``Authorization: Bearer ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from neurochip import __version__
from neurochip.errors import NeuroChipError, TooLongError
from neurochip.faithfulness import note_faithfulness, sketch_bar_times
from neurochip.io.decode import DEFAULT_MAX_DURATION_S
from neurochip.jobs import Job, JobQueue, QueueFull
from neurochip.server.gate import Gate, Policy
from neurochip.server.renders import Renders, SketchFile, parse_render_request
from neurochip.server.riffusion import (
    CLAMPED_HEADER,
    IGNORED_HEADER,
    InferenceInput,
    InferenceOutput,
    clamped_headers,
    parse_body,
    request_schema,
    run_inference,
    within_neurochip,
    without_negative_prompts,
)
from neurochip.server.schema import read_settings, said
from neurochip.server.vst import VstInput, VstOutput, run_vst
from neurochip.sketch import load_sketch, outline_sketch
from neurochip.transcription import reference_notes

#: The largest upload taken, in bytes (a 10-minute 16-bit stereo WAV is ~106 MB).
DEFAULT_MAX_UPLOAD_BYTES = 128 * 1024 * 1024

#: How often the events stream looks at a render for news (seconds).
EVENT_POLL_S = 0.25

#: A Riffusion request is a few hundred bytes of JSON; anything else a few kB.
JSON_BODY_BYTES = 1 << 20
#: RiffusionVST's carries its clip, a base64 WAV: 5 s of 16-bit mono (~0.6 MB) at 44.1 kHz, more
#: where the DAW runs faster; this takes ~90 s of 16-bit stereo at 48 kHz.
VST_BODY_BYTES = 24 << 20

#: The Riffusion-compatible routes: JSON whatever the Content-Type said.
RIFFUSION_ROUTES = ("/run_inference/", "/run_vst/")
SMALL_BODY_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 1 << 20  # the settings field and the multipart framing

#: A path in a request: a file name in the allowed folder, never a novel.
MAX_PATH_CHARS = 1024

AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server, and how much it takes on at once."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    allowed_folder: Path | None = None  # sketches by path come from here only; None: uploads
    seed_images: Path | None = None  # Riffusion's seed images (<id>.png) for /run_inference/
    body_timeout_s: float = 30.0  # an upload that sends nothing this long is cut off
    cpu_workers: int = 2  # note faithfulness, downloads in other formats, reading sketches
    cpu_depth: int = 8  # such work that may wait beyond those
    max_event_streams: int = 64  # clients following renders' progress at once


class ApiError(Exception):
    """A request the server refuses: its HTTP status and the message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def create_app(
    renders: Renders,
    limits: ServerLimits = ServerLimits(),
    token: str | None = None,
    *,
    allowed_hosts: tuple[str, ...] = (),
    cors_origins: tuple[str, ...] = (),
    riffusion_open: tuple[str, ...] = (),
) -> FastAPI:
    """The API over ``renders`` (and its take library).

    Args:
        token: Required of every request to the API when set.
        allowed_hosts: Names the server answers to besides its addresses and localhost.
        cors_origins: Web pages' origins allowed to call it (none by default).
        riffusion_open: Client networks (``192.168.0.0/16``) that use Riffusion's routes
            without the token (its clients cannot send one); ``/v1`` still needs it.
    """
    library = renders.library
    cpu = JobQueue(limits.cpu_workers, limits.cpu_depth, name="jobs")
    streams = threading.BoundedSemaphore(limits.max_event_streams)

    @contextlib.asynccontextmanager
    async def lifespan(api: FastAPI) -> AsyncIterator[None]:
        yield
        # Stopping: whatever runs is cancelled; the takes kept so far stay in the library.
        await asyncio.to_thread(renders.close, 3.0)
        await asyncio.to_thread(cpu.close, 1.0)

    api = FastAPI(
        title="NeuroChip",
        version=__version__,
        description="Chip and MIDI sketches -> live arrangement mockups with Riffusion.",
        lifespan=lifespan,
    )
    api.state.renders = renders
    api.state.cpu = cpu

    def body_limit(method: str, path: str) -> int:
        if path == "/v1/renders":
            return limits.max_upload_bytes + FORM_OVERHEAD_BYTES
        if path == "/v1/faithfulness":
            return 2 * limits.max_upload_bytes + FORM_OVERHEAD_BYTES
        if path == "/run_inference/":
            return JSON_BODY_BYTES
        if path == "/run_vst/":
            return VST_BODY_BYTES
        return SMALL_BODY_BYTES

    policy = Policy(
        allowed_hosts=allowed_hosts,
        cors_origins=cors_origins,
        token=token,
        body_limit=body_limit,
        json_routes=RIFFUSION_ROUTES,
        body_timeout_s=limits.body_timeout_s,
        open_networks=riffusion_open,
        open_paths=RIFFUSION_ROUTES,
    )
    api.add_middleware(Gate, policy=policy)
    if cors_origins:  # outermost: it answers the preflights of the pages named
        api.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[CLAMPED_HEADER, IGNORED_HEADER],
        )

    @api.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error(err.status, str(err), err.headers)

    @api.exception_handler(QueueFull)
    async def queue_full(request: Request, err: QueueFull):
        return _error(429, str(err), {"Retry-After": str(round(err.retry_after_s))})

    @api.exception_handler(NeuroChipError)
    async def neurochip_error(request: Request, err: NeuroChipError):
        return _error(413 if isinstance(err, TooLongError) else 422, str(err))

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return _error(422, f"Bad request: {said(err)}.")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    async def on_cpu(work, *args):
        """Run ``work(*args)`` in the bounded pool; a full pool is a 429."""
        job = cpu.submit(Job(lambda progress, cancel: work(*args), name="request"))
        await _finished(job)
        if job.state == "failed" and isinstance(job.exception, NeuroChipError):
            raise job.exception
        if job.state != "done":
            raise ApiError(503 if job.state == "cancelled" else 500, _unfinished(job))
        return job.result

    # Health, status and cancel are coroutines: they never wait for a thread, so they
    # answer however busy the render and request pools are.
    @api.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "renders": renders.queue.counts()}

    @api.post("/v1/renders", status_code=202)
    async def submit_render(
        settings: Annotated[str, Form(description="The render's settings as JSON.")],
        file: Annotated[UploadFile | None, File(description="The sketch: WAV, MIDI...")] = None,
        path: Annotated[str | None, Form(description="Or its path in the allowed folder.")] = None,
    ) -> dict[str, str]:
        data = read_settings(settings)
        if (file is None) == (path is None):
            raise ApiError(422, "Give the sketch as an upload ('file') or a 'path', one of them.")
        if file is not None:
            name = _upload_name(file, "sketch")
            spooled = renders.spool_path(name)
            await _spool(file, spooled, limits.max_upload_bytes)
            sketch = SketchFile(spooled, name, owned=True)
        else:
            found = _allowed_path(path or "", limits.allowed_folder)
            sketch = SketchFile(found, found.name)
        try:
            outline = await on_cpu(_outline, sketch, limits.max_duration_s)
            request = parse_render_request(sketch, outline, data)
            return {"id": renders.submit(request)}
        except BaseException:
            if sketch.owned:
                sketch.path.unlink(missing_ok=True)
            raise

    @api.get("/v1/renders/{render_id}")
    async def render_status(render_id: str) -> dict[str, Any]:
        return renders.status(_known(renders, render_id))

    @api.get("/v1/renders/{render_id}/events")
    async def render_events(render_id: str, request: Request) -> EventSourceResponse:
        _known(renders, render_id)
        if not streams.acquire(blocking=False):
            raise ApiError(
                429,
                f"{limits.max_event_streams} clients already follow renders here: poll "
                f"/v1/renders/{render_id} instead, or try again later.",
                {"Retry-After": "5"},
            )

        async def events():
            try:
                seen = -1
                while True:
                    status = renders.status(render_id)
                    if status["version"] != seen:
                        seen = status["version"]
                        finished = status["state"] in ("done", "failed", "cancelled")
                        yield {"event": status["state"] if finished else "progress",
                               "data": json.dumps(status)}  # fmt: skip
                        if finished:
                            return
                    # A client that hangs up: EventSourceResponse cancels this generator.
                    await asyncio.sleep(EVENT_POLL_S)
            finally:
                streams.release()

        return EventSourceResponse(events())

    @api.delete("/v1/renders/{render_id}", status_code=202)
    async def cancel_render(render_id: str) -> dict[str, Any]:
        renders.cancel(_known(renders, render_id))
        return renders.status(render_id)

    @api.post("/v1/faithfulness")
    async def faithfulness(
        sketch: Annotated[UploadFile, File(description="The sketch (the reference).")],
        take: Annotated[UploadFile, File(description="A take rendered from it.")],
    ) -> dict[str, Any]:
        """How well a take keeps the sketch's notes, as ``neurochip faithfulness --json``.

        ``notes``: notes kept, the sketch's notes (a MIDI file's own, an audio sketch's
        transcription) counted in the take's transcription: ``score`` (the share kept, i.e.
        recall), ``notes`` and ``pitch_classes`` (``precision``, ``recall``, ``f1``,
        ``matched``, ``sketch``, ``take``), ``strip`` per bar or second, ``lost`` and
        ``extra`` notes (``bar``, ``start_s``, ``pitch``, ``name``); absent where
        basic-pitch is not installed. ``score``, ``strip``, ``low_spots``: the chroma
        measure (0-1) per bar (per second where the sketch's bars are unknown)."""
        with tempfile.TemporaryDirectory(prefix="neurochip-faithfulness-") as folder:
            files = []
            for n, upload in enumerate((sketch, take)):
                name = _upload_name(upload, "audio.wav")
                where = Path(folder) / f"{n}{Path(name).suffix.lower()[:6]}"
                await _spool(upload, where, limits.max_upload_bytes)
                files.append((where, name))
            return await on_cpu(_faithfulness, files, limits.max_duration_s)

    async def riffusion_job(work, request: Request):
        """Run ``work(progress, cancel)`` queued with the renders; a client that hangs up
        cancels it; a request it refuses is a 400, as Riffusion's server answers."""
        job: Job[Any] = Job(work, name="riffusion")
        renders.run(job)
        finished = asyncio.ensure_future(_finished(job))
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not finished.done():
            renders.queue.cancel(job)  # nobody is waiting for it any more
            finished.cancel()
            raise ApiError(499, "The client went away: its render was cancelled.")
        gone.cancel()
        if job.state == "failed" and isinstance(job.exception, NeuroChipError):
            raise ApiError(400, str(job.exception))  # as Riffusion's server answers
        if job.state != "done":
            raise ApiError(503 if job.state == "cancelled" else 500, _unfinished(job))
        return job.result

    # Riffusion's routes read their bodies themselves: JSON whatever the Content-Type says
    # (Riffusion's clients post it as text/plain, or with no type at all).
    @api.post(
        "/run_inference/",
        response_model=InferenceOutput,
        openapi_extra=request_schema(InferenceInput),
    )
    async def riffusion_inference(request: Request) -> JSONResponse:
        """Riffusion's own endpoint and JSON (the web app, scripts written for Riffusion):
        a seed image rendered from the ``start`` prompt toward ``end`` by ``alpha``.
        Queued with the renders; a client that hangs up cancels its render. Values outside
        NeuroChip's ranges are clamped, and listed in the ``X-NeuroChip-Clamped`` header;
        a negative prompt is not used (Riffusion's is not either: ``X-NeuroChip-Ignored``)."""
        inputs, clamped = within_neurochip(parse_body(await request.body(), InferenceInput))
        inputs, ignored = without_negative_prompts(inputs)

        def work(progress, cancel) -> InferenceOutput:
            return run_inference(renders.engine(), inputs, limits.seed_images, cancel, progress)

        output = await riffusion_job(work, request)
        return JSONResponse(output.model_dump(), headers=clamped_headers(clamped, ignored))

    @api.post("/run_vst/", response_model=VstOutput, openapi_extra=request_schema(VstInput))
    async def riffusion_vst(request: Request) -> JSONResponse:
        """RiffusionVST's endpoint: its clip (``"audio"``, a base64 WAV) rendered whole
        from the ``start`` prompt toward ``end`` by ``alpha``, as a base64 WAV of the clip's
        length; the take is kept in the library (source "RiffusionVST clip"). Queued with
        the renders; a plugin that hangs up cancels its render; clamping as on
        ``/run_inference/``, and negative prompts unused as there."""
        inputs, clamped = within_neurochip(parse_body(await request.body(), VstInput))
        inputs, ignored = without_negative_prompts(inputs)

        def work(progress, cancel) -> VstOutput:
            engine = renders.engine()
            return run_vst(engine, inputs, library, renders.max_work, cancel, progress)

        output = await riffusion_job(work, request)
        return JSONResponse(output.model_dump(), headers=clamped_headers(clamped, ignored))

    @api.get("/v1/takes")
    def list_takes(
        text: Annotated[str | None, Query(max_length=200, description="Search text.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> list[dict[str, Any]]:
        return [_take_summary(t) for t in library.list(text=text, limit=limit, offset=offset)]

    @api.get("/v1/takes/{take_id}")
    def get_take(take_id: str) -> dict[str, Any]:
        take = _take(library, take_id)
        return {**_take_summary(take), "metadata": take.metadata}

    @api.get("/v1/takes/{take_id}/audio")
    async def take_audio(take_id: str, format: Annotated[str, Query()] = "wav") -> FileResponse:
        """The take's file, streamed from disk (another format is made in the pool first)."""
        kind = format.lower().lstrip(".")
        if kind not in AUDIO_TYPES:
            raise ApiError(422, f"Ask for format wav, flac, mp3 or ogg, not {format!r}.")
        _take(library, take_id)
        folder = Path(tempfile.mkdtemp(prefix="neurochip-download-"))
        try:
            path, name = await on_cpu(library.export_file, take_id, f".{kind}", folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(
            path,
            media_type=AUDIO_TYPES[kind],
            filename=name,
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    return api


def _unfinished(job: Job) -> str:
    if job.state == "cancelled":
        return "The server is stopping: send it again once it is back."
    return job.error or "Something went wrong on the server."


def _outline(sketch: SketchFile, max_duration_s: float):
    return outline_sketch(sketch.path, name=sketch.name, max_duration_s=max_duration_s)


def _faithfulness(files: list[tuple[Path, str]], max_duration_s: float) -> dict[str, Any]:
    song, heard = (load_sketch(p, name=n, max_duration_s=max_duration_s) for p, n in files)
    result = note_faithfulness(
        song.audio,
        heard.audio,
        sketch_bar_times(song),
        reference=reference_notes(song, 0.0, heard.audio.duration_s),  # the sketch's own
    )
    return {"sketch": song.name, "take": heard.name, **result.to_dict()}


async def _finished(job: Job) -> None:
    """Wait, without a thread, for ``job`` to end."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()

    def done(_: Job) -> None:
        loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))

    job.add_done_callback(done)
    await ended


async def _disconnected(request: Request) -> None:
    """Return when the client hangs up (its body was read: only a disconnect comes now)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _upload_name(upload: UploadFile, default: str) -> str:
    name = Path((upload.filename or "").replace("\x00", "")).name[:255]
    return name or default


async def _spool(upload: UploadFile, where: Path, most: int) -> None:
    """Copy an upload to ``where`` in chunks, refused as soon as it passes ``most``."""
    size = 0
    with where.open("wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > most:
                out.close()
                where.unlink(missing_ok=True)
                limit = f"{most / (1 << 20):g} MB"
                raise ApiError(413, f"The upload is over {limit}: send a shorter sketch.")
            out.write(chunk)
    if not size:
        where.unlink(missing_ok=True)
        raise ApiError(422, "The upload is empty.")


def _allowed_path(path: str, folder: Path | None) -> Path:
    """A sketch path from a request: only inside the allowed folder, however it is spelled."""
    if folder is None:
        raise ApiError(
            403, "This server takes sketches as uploads only (start it with --allow-folder DIR)."
        )
    if "\x00" in path or len(path) > MAX_PATH_CHARS:
        raise ApiError(422, f"That is not a file name (at most {MAX_PATH_CHARS} characters).")
    root = folder.resolve()
    try:
        candidate = (root / path).resolve()  # absolute paths and ../ resolve outside: refused
    except (OSError, RuntimeError, ValueError):
        raise ApiError(422, "That is not a file name in the allowed folder.") from None
    if not candidate.is_relative_to(root):
        raise ApiError(403, f"{path!r} is outside the folder this server reads sketches from.")
    try:
        found = candidate.is_file()
    except OSError:
        found = False
    if not found:
        raise ApiError(404, f"There is no sketch {path!r} in the allowed folder.")
    return candidate


def _known(renders: Renders, render_id: str) -> str:
    try:
        renders.get(render_id)
    except KeyError:
        said = f"There is no render {render_id[:64]!r} (render ids last until a restart)."
        raise ApiError(404, said) from None
    return render_id


def _take(library, take_id: str):
    try:
        return library.get(take_id)
    except NeuroChipError:
        raise ApiError(404, f"There is no take {take_id[:64]!r}.") from None


def _take_summary(take) -> dict[str, Any]:
    return {
        "id": take.id,
        "name": take.name,
        "kind": take.kind,
        "source": take.source_name,
        "created": take.created,
        "duration_s": round(take.duration_s, 3),
        "channels": take.channels,
        "faithfulness": take.faithfulness,
        "notes_kept": take.notes_kept,
        "starred": take.starred,
        "note": take.note,
    }
