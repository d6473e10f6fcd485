"""The HTTP API under attack (issue 22): web pages of other sites, DNS rebinding, floods,
huge or stalled bodies, hostile JSON, abandoned requests and a stop mid-render.

Most cases run through FastAPI's TestClient; those that need a real socket (a body cut off
while it streams, a stalled upload, a client that hangs up) run uvicorn on a free local port
in this process. Renders are held at "loading the model" by an event where a test needs the
render queue busy: every wait here is on the server's state, never on time.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import mido
import pytest
import uvicorn
from fastapi.testclient import TestClient

from neurochip.engine import Engine
from neurochip.errors import NeuroChipError
from neurochip.library.store import TakeLibrary
from neurochip.server import Renders, ServerLimits, create_app
from tests.chiptune import make_chiptune
from tests.test_browser import free_port
from tests.test_server import FAST, TIMEOUT, seed_images, submit, wav_bytes

LOCAL = "http://127.0.0.1"
EVIL = "https://evil.example"


class HeldEngine:
    """The engine, handed out only once :attr:`release` is set: renders wait 'loading'."""

    def __init__(self, model) -> None:
        self.model = model
        self.release = threading.Event()

    def __call__(self) -> Engine:
        assert self.release.wait(TIMEOUT)
        return Engine(self.model)


def long_note_midi(minutes: float) -> bytes:
    """A few dozen bytes of MIDI holding one note for ``minutes``."""
    song = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    song.tracks.append(track)
    track.append(mido.Message("note_on", note=60, velocity=100, time=0))
    ticks = round(minutes * 60 * 2 * 480)  # 120 BPM: two beats a second
    track.append(mido.Message("note_off", note=60, velocity=0, time=ticks))
    out = io.BytesIO()
    song.save(file=out)
    return out.getvalue()


def wait_for(condition, what: str) -> None:
    """Wait until ``condition()`` holds (polling the server's state)."""
    ticks = threading.Event()
    for _ in range(int(TIMEOUT / 0.02)):
        if condition():
            return
        ticks.wait(0.02)
    pytest.fail(f"gave up waiting for {what}")


@pytest.fixture
def library(tmp_path):
    return TakeLibrary(tmp_path / "home")


@contextlib.contextmanager
def api(renders, limits: ServerLimits | None = None, **options):
    app = create_app(renders, limits or ServerLimits(), **options)
    with TestClient(app, base_url=LOCAL) as client:
        yield client


@contextlib.contextmanager
def live(app):
    """``app`` served by uvicorn on a free local port, in this process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the server to start")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


def raw_request(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return sock


def status_of(sock: socket.socket) -> int:
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return int(reply.split(b" ", 2)[1])


# --- 1. Web pages of other sites, DNS rebinding -----------------------------------------------


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_a_page_on_another_site_can_neither_render_nor_read(tiny_model, library, token):
    renders = Renders(lambda: Engine(tiny_model), library)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with api(renders, token=token) as client:
        files = {"file": ("tune.wav", wav_bytes(1.5), "audio/wav")}
        form = {"settings": json.dumps(FAST)}
        # A page's fetch (no-cors) or an HTML form: the browser says where it came from.
        posted = client.post(
            "/v1/renders", data=form, files=files, headers={**auth, "Origin": EVIL}
        )
        assert posted.status_code == 403 and "--cors-origin" in posted.json()["error"]
        urlencoded = client.post(
            "/v1/renders",
            content=b"settings=%7B%7D&path=ok.wav",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": EVIL},
        )
        assert urlencoded.status_code == 403
        sneaky = client.get("/v1/takes", headers={**auth, "Sec-Fetch-Site": "cross-site"})
        assert sneaky.status_code == 403
        # DNS rebinding: the page's own name, pointed at 127.0.0.1, reaches the server.
        for path in ("/v1/takes", "/v1/health", "/docs"):
            rebound = client.get(path, headers={**auth, "Host": "evil.example:8000"})
            assert rebound.status_code == 421 and "--allow-host" in rebound.json()["error"]
        assert renders.queue.jobs() == [] and library.list() == []

        # Scripts, curl and the API's own docs page come in as before.
        for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "192.168.1.20"):
            assert client.get("/v1/takes", headers={**auth, "Host": host}).status_code == 200
        same = {**auth, "Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}
        assert client.get("/v1/takes", headers=same).status_code == 200
        if token:
            assert client.get("/v1/takes").status_code == 401


def test_named_origins_and_hosts_are_let_in(tiny_model, library):
    renders = Renders(lambda: Engine(tiny_model), library)
    page = "http://localhost:3000"
    with api(renders, allowed_hosts=("studio.local",), cors_origins=(page,)) as client:
        preflight = client.options(
            "/v1/takes",
            headers={"Origin": page, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == page
        reply = client.get("/v1/takes", headers={"Origin": page, "Sec-Fetch-Site": "same-site"})
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == page
        evil = client.options(
            "/v1/takes", headers={"Origin": EVIL, "Access-Control-Request-Method": "GET"}
        )
        assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
        assert client.get("/v1/takes", headers={"Origin": EVIL}).status_code == 403
        assert client.get("/v1/takes", headers={"Host": "studio.local:8000"}).status_code == 200


def test_json_routes_take_no_forms(tiny_model, library):
    renders = Renders(lambda: Engine(tiny_model), library)
    with api(renders) as client:
        reply = client.post(
            "/run_inference/",
            content=b"alpha=0.5",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert reply.status_code == 415 and "JSON" in reply.json()["error"]


# --- 2, 3. Bounded work and memory --------------------------------------------------------------


def test_a_full_queue_answers_429_and_a_waiting_render_holds_a_file_not_audio(
    tiny_model, library, monkeypatch
):
    engine = HeldEngine(tiny_model)
    renders = Renders(engine, library, depth=1)
    played = []
    import neurochip.sketch

    real_render_midi = neurochip.sketch.render_midi
    monkeypatch.setattr(
        neurochip.sketch,
        "render_midi",
        lambda *a, **k: played.append(1) or real_render_midi(*a, **k),
    )
    midi = long_note_midi(0.05)
    try:
        with api(renders) as client:
            first = submit(client, FAST, midi, name="a.mid")
            assert first.status_code == 202, first.text
            running = renders.get(first.json()["id"])
            wait_for(lambda: running.state == "running", "the first render to start")
            second = submit(client, FAST, midi, name="b.mid")
            assert second.status_code == 202
            waiting = second.json()["id"]
            assert client.get(f"/v1/renders/{waiting}").json()["stage"] == "queued (1 ahead)"
            assert len(played) == 1  # the waiting one is a file, not audio yet
            assert len(renders.spooled()) == 2

            full = submit(client, FAST, midi, name="c.mid")
            assert full.status_code == 429, full.text
            assert int(full.headers["retry-after"]) >= 1
            assert "try again" in full.json()["error"]
            assert len(renders.spooled()) == 2  # the refused upload is gone

            cancelled = client.delete(f"/v1/renders/{waiting}").json()
            assert cancelled["state"] == "cancelled"  # at once: it never started
            assert submit(client, FAST, midi, name="d.mid").status_code == 202

            engine.release.set()
            for job in renders.queue.jobs():
                assert job.wait(TIMEOUT)
            assert running.state == "done"
    finally:
        engine.release.set()
        renders.close()


def test_work_past_the_limit_is_refused_before_the_sketch_is_played(
    tiny_model, library, monkeypatch
):
    import neurochip.sketch

    def no_synthesis(*args, **kwargs):
        raise AssertionError("synthesised before the request was checked")

    monkeypatch.setattr(neurochip.sketch, "render_midi", no_synthesis)
    renders = Renders(lambda: Engine(tiny_model), library, max_work=5_000)
    with api(renders) as client:
        reply = submit(client, {**FAST, "steps": 50, "denoise": 0.5}, long_note_midi(19), "n.mid")
        assert reply.status_code == 422, reply.text
        assert "over this server's limit" in reply.json()["error"]
        too_long = submit(client, FAST, long_note_midi(25), name="n.mid")
        assert too_long.status_code == 413 and "long" in too_long.json()["error"]
    assert renders.queue.jobs() == []


def test_bodies_are_cut_off_at_their_limit(tiny_model, library):
    renders = Renders(lambda: Engine(tiny_model), library)
    limits = ServerLimits(max_upload_bytes=1 << 20)
    with api(renders, limits) as client:
        big_json = b'{"alpha": 0.5, "pad": "' + b"x" * (2 << 20) + b'"}'
        reply = client.post(
            "/run_inference/", content=big_json, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 413 and "MB" in reply.json()["error"]
        declared = client.post(
            "/v1/renders",
            content=b"x",
            headers={"Content-Length": str(1 << 30), "Content-Type": "multipart/form-data"},
        )
        assert declared.status_code == 413

    # Streamed with no length said: the server stops reading at the limit and answers.
    app = create_app(renders, limits)
    with live(app) as port:
        head = (
            "POST /v1/renders HTTP/1.1\nHost: 127.0.0.1\nTransfer-Encoding: chunked\n"
            "Content-Type: multipart/form-data; boundary=b\n"
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        sock = raw_request(port, head, b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"x" * (256 << 10)
        sent = 0
        with contextlib.suppress(OSError):  # it may hang up on us mid-way: that is the point
            while sent < 64 << 20:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        assert status_of(sock) == 413
        assert sent < 64 << 20  # it did not read the 64 MB
        sock.close()


def test_a_stalled_upload_times_out(tiny_model, library):
    renders = Renders(lambda: Engine(tiny_model), library)
    app = create_app(renders, ServerLimits(body_timeout_s=0.5))
    with live(app) as port:
        head = (
            "POST /v1/renders HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 100000\n"
            "Content-Type: multipart/form-data; boundary=b\n"
        )
        sock = raw_request(port, head, b"--b\r\n")  # ...and nothing more
        assert status_of(sock) == 408
        sock.close()


def test_a_riffusion_client_that_hangs_up_cancels_its_render(riffusion_seeds, tiny_model, library):
    from tests.test_server import riffusion_request

    renders = Renders(lambda: Engine(tiny_model), library)
    app = create_app(renders, ServerLimits(seed_images=riffusion_seeds))
    with live(app) as port:
        body = json.dumps(riffusion_request(num_inference_steps=1000)).encode()
        head = (
            f"POST /run_inference/ HTTP/1.1\nHost: 127.0.0.1\nContent-Length: {len(body)}\n"
            "Content-Type: application/json\n"
        )
        sock = raw_request(port, head, body)
        wait_for(lambda: renders.queue.counts()["running"] == 1, "the render to start")
        job = renders.queue.jobs()[0]
        wait_for(lambda: job.fraction > 0, "the render to make progress")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            health = http.get("/v1/health").json()  # answers while the render runs
            assert health["renders"] == {"running": 1, "waiting": 0}
        sock.close()  # the client gives up
        assert job.wait(TIMEOUT) and job.state == "cancelled"


@pytest.fixture
def riffusion_seeds(tmp_path) -> Path:
    return seed_images(tmp_path)


def test_event_streams_are_capped(tiny_model, library):
    engine = HeldEngine(tiny_model)
    renders = Renders(engine, library)
    app = create_app(renders, ServerLimits(max_event_streams=1))
    try:
        with live(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            files = {"file": ("tune.wav", wav_bytes(1.5), "audio/wav")}
            render_id = http.post(
                "/v1/renders", data={"settings": json.dumps(FAST)}, files=files
            ).json()["id"]
            with http.stream("GET", f"/v1/renders/{render_id}/events") as first:
                lines = first.iter_lines()  # kept: a dropped iterator closes the stream
                assert next(lines) == "event: progress"  # the first stream is open and talking
                second = http.get(f"/v1/renders/{render_id}/events")
                assert second.status_code == 429 and "poll" in second.json()["error"]
                assert http.get("/v1/health").status_code == 200
            engine.release.set()
            assert renders.get(render_id).wait(TIMEOUT)
    finally:
        engine.release.set()
        renders.close()


# --- 6. Hostile JSON and paths: 4xx, never a 500 ---------------------------------------------


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ("[" * 5000, "nested too deeply"),
        ('{"sections": [{"start_s": 0}]}', "sections.0.prompt"),
        ('{"prompt": 5}', "prompt"),
        ('["a"]', "JSON object"),
        ("{}", "prompt"),
        ("null", "JSON object"),
        ('{"prompt": "x", "steps": 5.5}', "steps"),
        ('{"prompt": "x", "sections": "verse"}', "sections"),
        ('{"prompt": "' + "x" * 70_000 + '"}', "characters"),
    ],
)
def test_hostile_settings_get_a_422_that_says_which(tiny_model, library, settings, said):
    renders = Renders(lambda: Engine(tiny_model), library)
    with api(renders) as client:
        files = {"file": ("tune.wav", wav_bytes(1.5), "audio/wav")}
        reply = client.post("/v1/renders", data={"settings": settings}, files=files)
        assert reply.status_code == 422, reply.text
        assert said in reply.json()["error"]
    assert renders.queue.jobs() == []


def test_hostile_paths_and_numbers_get_a_4xx(tiny_model, library, tmp_path):
    (tmp_path / "sketches").mkdir()
    renders = Renders(lambda: Engine(tiny_model), library)
    with api(renders, ServerLimits(allowed_folder=tmp_path / "sketches")) as client:
        for path in ("a\x00b.wav", "x" * 5000, "/" * 3000 + "etc/passwd"):
            reply = submit(client, FAST, path=path)
            assert 400 <= reply.status_code < 500, reply.text
        huge = client.get("/v1/takes", params={"offset": "9223372036854775808"})
        assert huge.status_code == 422
        assert client.get("/v1/takes", params={"text": "x" * 10_000}).status_code == 422


# --- A clean stop -----------------------------------------------------------------------------


def test_sigterm_mid_render_stops_the_server_and_keeps_finished_takes(tiny_model_dir, tmp_path):
    port = free_port()
    home = tmp_path / "home"
    command = [sys.executable, "-m", "neurochip", "serve", "--port", str(port)]
    command += ["--model", str(tiny_model_dir), "--home", str(home)]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT) as http:

            def healthy() -> bool:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                with contextlib.suppress(httpx.TransportError):
                    return http.get("/v1/health").status_code == 200
                return False

            wait_for(healthy, "the server to listen")
            files = {"file": ("tune.wav", wav_bytes(1.5), "audio/wav")}
            done = http.post("/v1/renders", data={"settings": json.dumps(FAST)}, files=files)
            done_id = done.json()["id"]
            wait_for(lambda: http.get(f"/v1/renders/{done_id}").json()["state"] == "done", "done")
            kept = http.get(f"/v1/renders/{done_id}").json()["takes"]["A"]

            files = {"file": ("long.wav", wav_bytes(20.0), "audio/wav")}
            slow = {**FAST, "steps": 400, "denoise": 1.0}
            long_id = http.post(
                "/v1/renders", data={"settings": json.dumps(slow)}, files=files
            ).json()["id"]
            wait_for(
                lambda: http.get(f"/v1/renders/{long_id}").json()["progress"] > 0,
                "the long render to be under way",
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) is not None  # it stops (bench/server_load.py times it)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert [t.id for t in TakeLibrary(home).list()] == [kept]


@pytest.mark.parametrize("takes", ["a string", ["a", "list"], {"A": 5}, {"A": {"prompt": 5}}])
def test_takes_with_crafted_metadata_never_make_a_500(tiny_model, library, takes):
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import METADATA_FORMAT

    crafted = {"format": METADATA_FORMAT, "kind": "take", "source": "x.wav", "takes": takes}
    with contextlib.suppress(ValueError, NeuroChipError):  # refusing it at the door is fine
        library.add(Audio(make_chiptune(1.0), 44100), crafted)
    renders = Renders(lambda: Engine(tiny_model), library)
    with api(renders) as client:
        listed = client.get("/v1/takes")
        assert listed.status_code == 200, listed.text
        ids = [t["id"] for t in listed.json()] + [
            p.name for p in (library.root / "takes").iterdir()
        ]
        for take_id in ids:
            for path in (f"/v1/takes/{take_id}", f"/v1/takes/{take_id}/audio?format=mp3"):
                reply = client.get(path)
                assert reply.status_code < 500, reply.text
