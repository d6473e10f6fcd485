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
* ``POST /v1/faithfulness``: a sketch and a take (uploads) -> how well the take keeps its notes.
* ``POST /run_inference/``: Riffusion's own endpoint and JSON (:mod:`neurochip.server.riffusion`).

Every error is JSON, ``{"error": "what happened and what to do"}``, with a 4xx status for a
bad request. Beyond localhost a token is required (``Authorization: Bearer ...``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neurochip import __version__
from neurochip.errors import NeuroChipError, TooLongError
from neurochip.faithfulness import note_faithfulness, sketch_bar_times
from neurochip.io.decode import DEFAULT_MAX_DURATION_S
from neurochip.server.renders import Renders, parse_render_request
from neurochip.server.riffusion import (
    InferenceInput,
    InferenceOutput,
    RiffusionRequestError,
    run_inference,
)
from neurochip.sketch import load_sketch

#: The largest upload taken, in bytes (a 10-minute 16-bit stereo WAV is ~106 MB).
DEFAULT_MAX_UPLOAD_BYTES = 128 * 1024 * 1024

#: How often the events stream looks at a render for news (seconds).
EVENT_POLL_S = 0.1

AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    allowed_folder: Path | None = None  # sketches by path come from here only; None: uploads
    seed_images: Path | None = None  # Riffusion's seed images (<id>.png) for /run_inference/


class ApiError(Exception):
    """A request the server refuses: its HTTP status and the message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def create_app(
    renders: Renders, limits: ServerLimits = ServerLimits(), token: str | None = None
) -> FastAPI:
    """The API over ``renders`` (and its take library); ``token``: required of every
    request to ``/v1`` when set."""
    api = FastAPI(
        title="NeuroChip",
        version=__version__,
        description="Chip and MIDI sketches -> live arrangement mockups with Riffusion.",
    )
    library = renders.library

    @api.middleware("http")
    async def require_token(request: Request, call_next):
        if token and request.url.path.startswith(("/v1", "/run_inference")):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "Give the API token: an 'Authorization: Bearer ...' header.")
        return await call_next(request)

    @api.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error(err.status, str(err))

    @api.exception_handler(NeuroChipError)
    async def neurochip_error(request: Request, err: NeuroChipError):
        return _error(413 if isinstance(err, TooLongError) else 422, str(err))

    @api.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        said = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in err.errors()
        )
        return _error(422, f"Bad request: {said}.")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail))

    @api.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @api.post("/v1/renders", status_code=202)
    async def submit_render(
        settings: Annotated[str, Form(description="The render's settings as JSON.")],
        file: Annotated[UploadFile | None, File(description="The sketch: WAV, MIDI...")] = None,
        path: Annotated[str | None, Form(description="Or its path in the allowed folder.")] = None,
    ) -> dict[str, str]:
        try:
            data = json.loads(settings)
        except json.JSONDecodeError as err:
            raise ApiError(422, f"The settings are not valid JSON: {err}.") from None
        if (file is None) == (path is None):
            raise ApiError(422, "Give the sketch as an upload ('file') or a 'path', one of them.")
        if file is not None:
            content = await _read_upload(file, limits.max_upload_bytes)
            name = Path(file.filename or "").name or "sketch"
            sketch = await asyncio.to_thread(
                load_sketch, content, name=name, max_duration_s=limits.max_duration_s
            )
        else:
            sketch_path = _allowed_path(path or "", limits.allowed_folder)
            sketch = await asyncio.to_thread(
                load_sketch, sketch_path, max_duration_s=limits.max_duration_s
            )
        request = parse_render_request(sketch, data)
        return {"id": renders.submit(request)}

    @api.get("/v1/renders/{render_id}")
    def render_status(render_id: str) -> dict[str, Any]:
        return renders.status(_known(renders, render_id))

    @api.get("/v1/renders/{render_id}/events")
    async def render_events(render_id: str, request: Request) -> EventSourceResponse:
        _known(renders, render_id)

        async def events():
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
                if await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_POLL_S)

        return EventSourceResponse(events())

    @api.delete("/v1/renders/{render_id}", status_code=202)
    def cancel_render(render_id: str) -> dict[str, Any]:
        renders.cancel(_known(renders, render_id))
        return renders.status(render_id)

    @api.post("/v1/faithfulness")
    async def faithfulness(
        sketch: Annotated[UploadFile, File(description="The sketch (the reference).")],
        take: Annotated[UploadFile, File(description="A take rendered from it.")],
    ) -> dict[str, Any]:
        """How well a take keeps the sketch's notes: the score (0-1) and a strip per bar
        (per second where the sketch's bars are unknown), as ``neurochip faithfulness``."""
        loaded = []
        for upload in (sketch, take):
            content = await _read_upload(upload, limits.max_upload_bytes)
            name = Path(upload.filename or "").name or "audio.wav"
            loaded.append(
                await asyncio.to_thread(
                    load_sketch, content, name=name, max_duration_s=limits.max_duration_s
                )
            )
        song, heard = loaded
        result = await asyncio.to_thread(
            note_faithfulness, song.audio, heard.audio, sketch_bar_times(song)
        )
        return {"sketch": song.name, "take": heard.name, **result.to_dict()}

    @api.post("/run_inference/", response_model=InferenceOutput)
    def riffusion_inference(inputs: InferenceInput) -> InferenceOutput:
        """Riffusion's own endpoint and JSON (RiffusionVST, scripts written for Riffusion):
        a seed image rendered from the ``start`` prompt toward ``end`` by ``alpha``."""
        try:
            return run_inference(renders.engine(), inputs, limits.seed_images)
        except RiffusionRequestError as err:
            raise ApiError(400, str(err)) from None

    @api.get("/v1/takes")
    def list_takes(
        text: Annotated[str | None, Query(description="Search names, prompts, notes.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        return [_take_summary(t) for t in library.list(text=text, limit=limit, offset=offset)]

    @api.get("/v1/takes/{take_id}")
    def get_take(take_id: str) -> dict[str, Any]:
        take = _take(library, take_id)
        return {**_take_summary(take), "metadata": take.metadata}

    @api.get("/v1/takes/{take_id}/audio")
    def take_audio(take_id: str, format: Annotated[str, Query()] = "wav") -> Response:
        kind = format.lower().lstrip(".")
        if kind not in AUDIO_TYPES:
            raise ApiError(422, f"Ask for format wav, flac, mp3 or ogg, not {format!r}.")
        _take(library, take_id)
        data, name = library.export(take_id, f".{kind}")
        ascii_name = name.encode("ascii", "replace").decode().replace('"', "'")
        return Response(
            data,
            media_type=AUDIO_TYPES[kind],
            headers={"Content-Disposition": f'attachment; filename="{ascii_name}"'},
        )

    return api


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_upload(file: UploadFile, most: int) -> bytes:
    """The upload's bytes, refused as soon as it passes ``most`` (never all read first)."""
    chunks, size = [], 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
        if size > most:
            limit = f"{most / (1 << 20):g} MB"
            raise ApiError(413, f"The upload is over {limit}: send a shorter sketch.")
        chunks.append(chunk)
    if not size:
        raise ApiError(422, "The upload is empty.")
    return b"".join(chunks)


def _allowed_path(path: str, folder: Path | None) -> Path:
    """A sketch path from a request: only inside the allowed folder, however it is spelled."""
    if folder is None:
        raise ApiError(
            403, "This server takes sketches as uploads only (start it with --allow-folder DIR)."
        )
    root = folder.resolve()
    candidate = (root / path).resolve()  # absolute paths and ../ resolve outside: refused
    if not candidate.is_relative_to(root):
        raise ApiError(403, f"{path!r} is outside the folder this server reads sketches from.")
    if not candidate.is_file():
        raise ApiError(404, f"There is no sketch {path!r} in the allowed folder.")
    return candidate


def _known(renders: Renders, render_id: str) -> str:
    try:
        renders.get(render_id)
    except KeyError:
        said = f"There is no render {render_id!r} (render ids last until a restart)."
        raise ApiError(404, said) from None
    return render_id


def _take(library, take_id: str):
    try:
        return library.get(take_id)
    except NeuroChipError:
        raise ApiError(404, f"There is no take {take_id!r}.") from None


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
        "starred": take.starred,
        "note": take.note,
    }
