"""``neurochip serve``: the HTTP API over the library's workflow (the tiny model)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from neurochip.engine import Engine
from neurochip.library.store import TakeLibrary
from neurochip.server import Renders, ServerLimits, create_app
from tests.chiptune import make_chiptune

SR = 44100
FAST = {"prompt": "a funk band", "steps": 2, "denoise": 0.5, "phase_iterations": 0}
TIMEOUT = 300
LOCAL = "http://127.0.0.1"  # the server answers to its own addresses and localhost only


def wav_bytes(seconds: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, make_chiptune(seconds).T, SR, format="WAV", subtype="PCM_16")
    return out.getvalue()


@pytest.fixture
def library(tmp_path):
    return TakeLibrary(tmp_path / "home")


@pytest.fixture
def client(tiny_model, library, tmp_path):
    (tmp_path / "sketches").mkdir()
    limits = ServerLimits(max_upload_bytes=2_000_000, allowed_folder=tmp_path / "sketches")
    renders = Renders(lambda: Engine(tiny_model), library)
    with TestClient(create_app(renders, limits), base_url=LOCAL) as test_client:
        test_client.renders = renders
        yield test_client


def submit(client, settings: dict, data: bytes | None = None, name="sketch.wav", path=None):
    files = {"file": (name, data, "application/octet-stream")} if data is not None else None
    form = {"settings": json.dumps(settings), **({"path": path} if path else {})}
    return client.post("/v1/renders", data=form, files=files)


def events(client, render_id: str) -> list[tuple[str, dict]]:
    """The render's server-sent events, to its end."""
    seen, event = [], "message"
    with client.stream("GET", f"/v1/renders/{render_id}/events") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                seen.append((event, json.loads(line.split(":", 1)[1])))
                event = "message"
    return seen


def test_a_render_is_followed_to_its_takes_which_download_as_wav_and_mp3(client, library):
    reply = submit(client, {**FAST, "duration_s": 2.0, "stereo_pair": True}, wav_bytes(3.0))
    assert reply.status_code == 202, reply.text
    render_id = reply.json()["id"]

    stream = events(client, render_id)
    assert stream[-1][0] == "done"
    progress = [status["progress"] for event, status in stream if event == "progress"]
    assert progress == sorted(progress) and len(stream) > 2  # it moved on, in order
    status = client.get(f"/v1/renders/{render_id}").json()
    assert status["state"] == "done" and set(status["takes"]) == {"A", "B", "pair"}

    listed = client.get("/v1/takes").json()
    assert {t["id"] for t in listed} == set(status["takes"].values())
    pair = client.get(f"/v1/takes/{status['takes']['pair']}").json()
    assert (
        pair["kind"] == "stereo pair" and pair["metadata"]["takes"]["A"]["prompt"] == "a funk band"
    )
    wav = client.get(f"/v1/takes/{status['takes']['pair']}/audio?format=wav")
    assert wav.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(wav.content), always_2d=True)
    assert rate == SR and samples.shape == (2 * SR, 2)  # the span asked for
    mp3 = client.get(f"/v1/takes/{status['takes']['A']}/audio?format=mp3")
    assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"
    decoded, _ = sf.read(io.BytesIO(mp3.content), always_2d=True)
    assert abs(len(decoded) - 2 * SR) < 0.05 * SR  # MP3 pads a little


def test_a_cancelled_render_ends_cancelled_and_keeps_nothing_half_made(tiny_model, library):
    gate = threading.Event()

    def held_engine():
        gate.wait(TIMEOUT)  # the render is under way (loading the model) until released
        return Engine(tiny_model)

    renders = Renders(held_engine, library)
    with TestClient(create_app(renders), base_url=LOCAL) as client:
        render_id = submit(client, FAST, wav_bytes(2.0)).json()["id"]
        assert client.get(f"/v1/renders/{render_id}").json()["state"] in ("pending", "running")
        assert client.delete(f"/v1/renders/{render_id}").status_code == 202
        gate.set()
        assert renders.get(render_id).wait(TIMEOUT)
        assert events(client, render_id)[-1][0] == "cancelled"
        assert client.get(f"/v1/renders/{render_id}").json()["state"] == "cancelled"
    assert library.list() == []


def test_a_sketch_by_path_comes_from_the_allowed_folder_only(client, tmp_path):
    (tmp_path / "sketches" / "tune.wav").write_bytes(wav_bytes(1.5))
    (tmp_path / "secret.wav").write_bytes(wav_bytes(1.5))
    ok = submit(client, FAST, path="tune.wav")
    assert ok.status_code == 202
    assert client.renders.get(ok.json()["id"]).wait(TIMEOUT)
    for outside in ("../secret.wav", str(tmp_path / "secret.wav"), "/etc/passwd"):
        reply = submit(client, FAST, path=outside)
        assert reply.status_code == 403 and "outside the folder" in reply.json()["error"]
    assert submit(client, FAST, path="missing.wav").status_code == 404


@pytest.mark.parametrize(
    ("settings", "upload", "status", "said"),
    [
        ("{not json", b"x", 422, "not valid JSON"),
        ({**FAST, "scheduler": "warp"}, None, 422, "scheduler"),
        ({**FAST, "denoise": 7}, None, 422, "Denoise must be between 0 and 1"),
        ({**FAST, "volume": 11}, None, 422, "Unknown settings: volume"),
        (FAST, b"", 422, "empty"),
        (FAST, b"RIFF\x00\x00\x00\x00WAVEjunk", 422, "sketch.wav"),
        (FAST, b"\x00" * 2_000_001, 413, "over 1.90735 MB"),
        ({**FAST, "stem": ["Bass=slap bass"]}, None, 422, "no stem or part 'Bass'"),
    ],
)
def test_bad_requests_get_a_4xx_json_error_that_says_what_to_change(
    client, settings, upload, status, said
):
    body = settings if isinstance(settings, str) else json.dumps(settings)
    data = wav_bytes(1.5) if upload is None else upload
    files = {"file": ("sketch.wav", data, "audio/wav")}
    reply = client.post("/v1/renders", data={"settings": body}, files=files)
    assert reply.status_code == status, reply.text
    assert said in reply.json()["error"]


def test_unknown_ids_and_missing_sketches_are_json_404s_and_422s(client):
    assert client.get("/v1/renders/nope").status_code == 404
    assert "no render" in client.get("/v1/renders/nope").json()["error"]
    assert client.get("/v1/takes/../../etc").status_code == 404
    assert client.get("/v1/takes/0123456789ab/audio").status_code == 404
    assert client.post("/v1/renders", data={"settings": "{}"}).status_code == 422
    no_settings = client.post("/v1/renders", files={"file": ("a.wav", b"x", "audio/wav")})
    assert no_settings.status_code == 422 and "settings" in no_settings.json()["error"]
    assert (
        client.get("/docs").status_code == 200 and "/v1/renders" in client.get("/openapi.json").text
    )


def test_a_token_is_asked_of_every_api_request_when_set(tiny_model, library):
    renders = Renders(lambda: Engine(tiny_model), library)
    with TestClient(create_app(renders, token="s3cret"), base_url=LOCAL) as client:
        assert client.get("/v1/takes").status_code == 401
        assert "token" in client.get("/v1/takes").json()["error"]
        wrong = {"Authorization": "Bearer guess"}
        assert client.get("/v1/takes", headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        assert client.get("/v1/takes", headers=right).status_code == 200


def test_serve_refuses_to_listen_beyond_this_machine_without_a_token(tiny_model_dir):
    env = {k: v for k, v in os.environ.items() if k != "NEUROCHIP_API_TOKEN"}
    command = [sys.executable, "-m", "neurochip", "serve", "--host", "0.0.0.0"]
    done = subprocess.run(
        [*command, "--model", str(tiny_model_dir)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "NEUROCHIP_API_TOKEN" in done.stderr and "Traceback" not in done.stderr


def test_stems_render_through_the_api(client, tmp_path):
    from tests.test_stems import four_part_midi

    settings = {**FAST, "duration_s": 2.0, "stem": ["Bass=slap bass:0.3"]}
    reply = submit(client, settings, four_part_midi(3.0), name="four.mid")
    assert reply.status_code == 202, reply.text
    stream = events(client, reply.json()["id"])
    assert stream[-1][0] == "done", stream[-1]
    takes = stream[-1][1]["takes"]
    assert set(takes) == {"Lead", "Harmony", "Bass", "Drums", "mix"}
    bass = client.get(f"/v1/takes/{takes['Bass']}").json()
    assert bass["kind"] == "stem" and bass["metadata"]["takes"]["Bass"]["denoise"] == 0.3
    assert np.isfinite(bass["duration_s"])


def test_the_faithfulness_of_an_uploaded_take_to_its_sketch(client):
    sketch = wav_bytes(3.0)
    same = client.post(
        "/v1/faithfulness",
        files={
            "sketch": ("tune.wav", sketch, "audio/wav"),
            "take": ("take.wav", sketch, "audio/wav"),
        },
    )
    assert same.status_code == 200, same.text
    assert same.json()["score"] > 0.99 and same.json()["segment"] == "second"
    notes = same.json()["notes"]  # counted: the take's notes are the sketch's own
    assert notes["score"] > 0.9 and notes["notes"]["precision"] > 0.9
    assert {"pitch_classes", "lost", "extra", "strip"} <= set(notes)
    noise = io.BytesIO()
    sf.write(noise, np.random.default_rng(1).standard_normal(3 * SR) * 0.1, SR, format="WAV")
    other = client.post(
        "/v1/faithfulness",
        files={
            "sketch": ("tune.wav", sketch, "audio/wav"),
            "take": ("n.wav", noise.getvalue(), "audio/wav"),
        },
    )
    assert other.json()["score"] < same.json()["score"] - 0.2
    assert other.json()["notes"]["score"] < 0.5  # noise keeps no note
    missing = client.post("/v1/faithfulness", files={"sketch": ("tune.wav", sketch, "audio/wav")})
    assert missing.status_code == 422 and "take" in missing.json()["error"]


# --- Riffusion's /run_inference/ --------------------------------------------------------------


def riffusion_request(**changes) -> dict:
    """A request as Riffusion's playground and RiffusionVST send it."""
    request = {
        "alpha": 0.25,
        "num_inference_steps": 2,
        "seed_image_id": "og_beat",
        "start": {"prompt": "church bells", "seed": 42, "denoising": 0.75, "guidance": 7.0},
        "end": {"prompt": "jazz", "seed": 123, "denoising": 0.75, "guidance": 7.0},
    }
    return {**request, **changes}


def seed_images(folder) -> Path:
    """A Riffusion seed images folder in ``folder``: ``og_beat.png``, a chip tune's picture."""
    from neurochip.spectrogram import save_image, spectrogram_image

    seeds = Path(folder) / "seed_images"
    seeds.mkdir()
    clip = make_chiptune(5.2)[:, : 511 * 441]  # 512 columns, as Riffusion's seed images
    save_image(
        spectrogram_image(torch.from_numpy(clip).mean(0, keepdim=True)), seeds / "og_beat.png"
    )
    return seeds


@pytest.fixture
def riffusion_client(tiny_model, library, tmp_path):
    seeds = seed_images(tmp_path)
    renders = Renders(lambda: Engine(tiny_model), library)
    with TestClient(
        create_app(renders, ServerLimits(seed_images=seeds)), base_url=LOCAL
    ) as test_client:
        yield test_client


def test_run_inference_answers_a_riffusion_request_as_riffusion_does(riffusion_client):
    from PIL import Image

    from neurochip.spectrogram import amplitudes_from_image

    reply = riffusion_client.post("/run_inference/", json=riffusion_request())
    assert reply.status_code == 200, reply.text
    output = reply.json()
    assert set(output) == {"image", "audio", "duration_s"}
    assert output["image"].startswith("data:image/jpeg;base64,")
    assert output["audio"].startswith("data:audio/mpeg;base64,")
    picture = Image.open(io.BytesIO(base64.b64decode(output["image"].split(",", 1)[1])))
    assert picture.format == "JPEG" and picture.size == (512, 512)  # 5.12 s, Riffusion's size
    assert amplitudes_from_image(picture).params.sample_rate == SR  # its EXIF says how to read it
    sound, rate = sf.read(io.BytesIO(base64.b64decode(output["audio"].split(",", 1)[1])))
    assert rate == SR and abs(len(sound) / rate - output["duration_s"]) < 0.06
    assert abs(output["duration_s"] - 5.11) < 0.02


@pytest.mark.parametrize(
    ("request_changes", "said"),
    [
        ({"seed_image_id": "nope"}, "Invalid seed image: nope"),
        ({"seed_image_id": "../etc/passwd"}, "Invalid seed image"),
        # No such mask in the folder (Riffusion answers the same), and no paths as ids.
        ({"mask_image_id": "mask_beat_lines_80"}, "Invalid mask image: mask_beat_lines_80"),
        ({"mask_image_id": "../seed_images/og_beat"}, "Invalid mask image"),
    ],
)
def test_run_inference_refuses_what_riffusion_would(riffusion_client, request_changes, said):
    reply = riffusion_client.post("/run_inference/", json=riffusion_request(**request_changes))
    assert reply.status_code == 400 and said in reply.json()["error"]


def test_run_inference_checks_the_shape_of_its_json(riffusion_client):
    missing = riffusion_request()
    del missing["alpha"]
    assert riffusion_client.post("/run_inference/", json=missing).status_code == 422
    wrong = riffusion_request(alpha=3)
    reply = riffusion_client.post("/run_inference/", json=wrong)
    assert reply.status_code == 422 and "alpha" in reply.json()["error"]


def test_alpha_moves_a_take_from_the_start_prompt_and_seed_to_the_end(engine_for_alpha):
    engine, song = engine_for_alpha
    from neurochip.settings import RenderSettings

    start = RenderSettings(prompt="bells", seed=1, steps=3, denoise=0.6, phase_iterations=0)
    end = RenderSettings(prompt="jazz", seed=2, steps=3, denoise=0.6, phase_iterations=0)
    at = [
        engine.render(song, start.replace(prompt_end="jazz", seed_end=2, alpha=a)).audio.samples
        for a in (0.0, 0.5, 1.0)
    ]
    np.testing.assert_allclose(at[0], engine.render(song, start).audio.samples, atol=1e-5)
    np.testing.assert_allclose(at[2], engine.render(song, end).audio.samples, atol=1e-4)
    assert not np.allclose(at[1], at[0], atol=1e-3) and not np.allclose(at[1], at[2], atol=1e-3)


@pytest.fixture
def engine_for_alpha(tiny_model):
    from neurochip.io.audio import Audio

    return Engine(tiny_model), Audio(make_chiptune(2.0), SR)


def test_slerp_keeps_a_noise_a_noise():
    from neurochip.engine import slerp

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 64, 64, generator=generator), torch.randn(4, 64, 64, generator=generator)
    middle = slerp(0.5, a, b)
    assert abs(float(middle.std()) - 1.0) < 0.05  # a straight mix would be ~0.71
    torch.testing.assert_close(slerp(0.0, a, b), a)
    torch.testing.assert_close(slerp(1.0, a, b), b, atol=1e-5, rtol=1e-5)


def test_neurochip_serve_renders_over_real_http(tiny_model_dir, tmp_path):
    """The command itself, on a free local port: model options, the library, uvicorn."""
    import httpx

    from tests.test_browser import free_port

    port = free_port()
    command = [sys.executable, "-m", "neurochip", "serve", "--port", str(port)]
    command += ["--model", str(tiny_model_dir), "--home", str(tmp_path / "home")]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            for _ in range(240):  # until it listens (a wait for the server, not a verdict)
                try:
                    if http.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                threading.Event().wait(0.5)
            files = {"file": ("tune.wav", wav_bytes(1.5), "audio/wav")}
            reply = http.post("/v1/renders", data={"settings": json.dumps(FAST)}, files=files)
            assert reply.status_code == 202, reply.text
            render_id = reply.json()["id"]
            with http.stream("GET", f"/v1/renders/{render_id}/events") as stream:
                last = [line for line in stream.iter_lines() if line.startswith("event:")][-1]
            assert last == "event: done", (tmp_path / "serve.log").read_text()
            take = http.get(f"/v1/renders/{render_id}").json()["takes"]["A"]
            audio = http.get(f"/v1/takes/{take}/audio")
            assert sf.info(io.BytesIO(audio.content)).frames == round(1.5 * SR)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
