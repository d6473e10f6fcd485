"""Riffusion's real clients against NeuroChip (issue 28, parts 1, 2 and 6): RiffusionVST's
``/run_vst/`` request as the JUCE plugin builds it, the web app's requests through its proxy,
and plain Python clients that post JSON without saying so; Riffusion's leniency (seeds of
any integer, values clamped and reported) where it costs nothing."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from PIL import Image

from neurochip.engine import Engine
from neurochip.library.store import TakeLibrary
from neurochip.server import Renders, ServerLimits, create_app
from neurochip.server.riffusion import (
    CLAMPED_HEADER,
    InferenceInput,
    neurochip_seed,
    parse_body,
    within_neurochip,
)
from neurochip.server.vst import VST_CLIENT, VST_SOURCE
from tests.test_server import LOCAL, TIMEOUT, riffusion_request, seed_images

SR = 44100
FAST_END = {"denoising": 0.5, "guidance": 7.0}


def tone_wav(seconds: float, rate: int = SR, channels: int = 1) -> bytes:
    """A short tone as a 16-bit WAV, as the plugin records one (mono, 16-bit)."""
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * 220.0 * t) * np.minimum(1.0, 20 * t)
    out = io.BytesIO()
    sf.write(out, np.repeat(tone[:, None], channels, 1), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def cpp_hash_seed(text: str) -> int:
    """A seed as RiffusionVST makes one: ``static_cast<int>(std::hash<std::string>()(text))``,
    the hash's low 32 bits as a signed int (negative about half the time). The hash itself
    differs between standard libraries; any 64-bit value shows the cast."""
    digest = int.from_bytes(text.encode().ljust(8, b"\0")[:8], "little") * 0x9E3779B97F4A7C15
    low = digest & 0xFFFFFFFF
    return low - (1 << 32) if low >= 1 << 31 else low


def juce_number(value: float) -> str:
    """A JUCE ``var`` double as ``JSON::toString(..., maximumDecimalPlaces=3)`` writes it."""
    value = float(np.float32(value))  # the plugin's sliders are floats
    if value == int(value):
        return f"{value:.1f}"
    return f"{round(value, 3):.3f}".rstrip("0")


def juce_vst_body(
    clip: bytes,
    seed: int,
    *,
    prompt_a: str = "prompt 1",
    prompt_b: str = "prompt 2",
    alpha: float = 0.5,
    denoising: float = 0.5,
    guidance: float = 7.0,
    steps: int = 2,
) -> bytes:
    """The body RiffusionVST posts (PluginProcessor::buildURL): a JUCE DynamicObject, its
    properties in the order it sets them, ``JSON::toString(var, true, 3)`` on one line, the
    clip a base64 WAV (``juce::Base64::toBase64``: plain base64, no data URL)."""

    def prompt(text: str) -> str:
        return (
            f'{{"prompt": {json.dumps(text)}, "seed": {seed}, '
            f'"denoising": {juce_number(denoising)}, "guidance": {juce_number(guidance)}}}'
        )

    return (
        f'{{"alpha": {juce_number(alpha)}, "num_inference_steps": {steps}, '
        f'"start": {prompt(prompt_a)}, "end": {prompt(prompt_b)}, '
        f'"audio": "{base64.b64encode(clip).decode()}"}}'
    ).encode()


#: The headers the plugin sends with it (PluginProcessor::getHttpRequest).
JUCE_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "Sec-Fetch-Mode": "cors",
}


def fast_request(**changes) -> dict:
    """A /run_inference/ request that renders quickly with the tiny model."""
    request = riffusion_request(num_inference_steps=2)
    request["start"] = {**request["start"], **FAST_END}
    request["end"] = {**request["end"], **FAST_END}
    return {**request, **changes}


# --- A real `neurochip serve` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """``neurochip serve`` on a free local port with the tiny model and seed images."""
    from tests.test_browser import free_port

    folder = tmp_path_factory.mktemp("served")
    port = free_port()
    command = [sys.executable, "-m", "neurochip", "serve", "--port", str(port)]
    command += ["--model", str(tiny_model_dir), "--home", str(folder / "home")]
    seeds = seed_images(folder)
    top_third = np.zeros((512, 512, 3), np.uint8)
    top_third[: 512 // 3] = 255  # as Riffusion's mask_top_third_75: the highs rendered anew
    Image.fromarray(top_third).save(seeds / "mask_top_third_75.png")
    command += ["--seed-images", str(seeds)]
    log_path = folder / "serve.log"
    log = log_path.open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
            for _ in range(240):  # until it listens (a wait for the server, not a verdict)
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/v1/health").status_code == 200:
                        break
                assert process.poll() is None, log_path.read_text()
                threading.Event().wait(0.5)
        yield url, log_path
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_riffusion_vst_gets_a_wav_of_its_clip_length_and_the_take_is_kept(served):
    url, log = served
    clip = tone_wav(1.5)
    seed = cpp_hash_seed("seed")  # the text field's default
    assert seed < 0  # the plugin's seeds are C++ ints
    body = juce_vst_body(clip, seed)
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        reply = http.post("/run_vst/", content=body, headers=JUCE_HEADERS)
        assert reply.status_code == 200, reply.text + log.read_text()
        answer = reply.json()
        assert set(answer) == {"audio"}
        wav = base64.b64decode(answer["audio"], validate=True)  # plain base64, as JUCE reads it
        heard = sf.info(io.BytesIO(wav))
        sent = sf.info(io.BytesIO(clip))
        assert (heard.format, heard.subtype) == ("WAV", "PCM_16")
        assert (heard.frames, heard.samplerate, heard.channels) == (
            sent.frames,
            sent.samplerate,
            sent.channels,
        )
        samples, _ = sf.read(io.BytesIO(wav))
        assert np.abs(samples).max() > 0.01  # a take, not silence

        takes = http.get("/v1/takes").json()
        assert [t["source"] for t in takes] == [VST_SOURCE]
        take = http.get(f"/v1/takes/{takes[0]['id']}").json()
        assert take["metadata"]["client"] == VST_CLIENT
        (settings,) = take["metadata"]["takes"].values()
        assert settings["seed"] == seed % 2**32 == neurochip_seed(seed)
        assert settings["prompt"] == "prompt 1" and settings["prompt_end"] == "prompt 2"
        assert settings["phase"] == "source"


def test_a_json_body_without_content_type_renders(served):
    url, log = served
    body = json.dumps(fast_request()).encode()
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        request = http.build_request("POST", "/run_inference/", content=body)
        assert "content-type" not in request.headers
        reply = http.send(request)
        assert reply.status_code == 200, reply.text + log.read_text()
        assert reply.json()["audio"].startswith("data:audio/mpeg;base64,")


def test_the_web_app_with_a_mask_through_a_real_server(served):
    url, log = served
    # pages/api/server.js forwards the page's JSON.stringify(inferenceInput) with these headers.
    headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
    request = fast_request(mask_image_id="mask_top_third_75")
    request["start"]["negative_prompt"] = "noise"
    with httpx.Client(base_url=url, timeout=TIMEOUT) as http:
        reply = http.post("/run_inference/", content=json.dumps(request), headers=headers)
        assert reply.status_code == 200, reply.text + log.read_text()
        assert reply.headers["X-NeuroChip-Ignored"] == "start.negative_prompt"
        unknown = http.post("/run_inference/", json=fast_request(mask_image_id="mask_nope"))
        assert unknown.status_code == 400 and "Invalid mask image" in unknown.json()["error"]
    # The server said at start who may come in.
    assert "Open to this machine only." in log.read_text()


# --- The same app in a test client --------------------------------------------------------------


@pytest.fixture
def client(tiny_model, tmp_path):
    library = TakeLibrary(tmp_path / "home")
    renders = Renders(lambda: Engine(tiny_model), library)
    limits = ServerLimits(seed_images=seed_images(tmp_path))
    with TestClient(create_app(renders, limits), base_url=LOCAL) as test_client:
        test_client.library = library
        yield test_client


def test_a_text_plain_body_renders(client):
    reply = client.post(
        "/run_inference/",
        content=json.dumps(fast_request()),
        headers={"Content-Type": "text/plain;charset=UTF-8"},  # a browser's plain post
    )
    assert reply.status_code == 200, reply.text
    assert CLAMPED_HEADER not in reply.headers  # nothing was out of range


def test_a_plain_python_client_posting_data_works(client):
    # requests.post(url, data=json.dumps(...)): a body, and no Content-Type.
    reply = client.post("/run_inference/", data=json.dumps(fast_request()))
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("seed", "mapped"), [(-5, 2**32 - 5), (2**40, 0)])
def test_any_integer_seed_maps_into_range_and_repeats(client, seed, mapped):
    assert neurochip_seed(seed) == mapped == seed % 2**32  # as README documents

    def render(start_seed: int) -> str:
        request = fast_request()
        request["start"]["seed"] = start_seed
        reply = client.post("/run_inference/", json=request)
        assert reply.status_code == 200, reply.text
        return reply.json()["audio"]

    first = render(seed)
    assert render(seed) == first  # the same request, the same take
    assert render(mapped) == first  # the seed it maps to


def test_out_of_range_values_are_clamped_and_said_in_a_header(client):
    request = fast_request(num_inference_steps=0)
    request["start"] = {**request["start"], "denoising": 1.2, "guidance": 60}
    reply = client.post("/run_inference/", json=request)
    assert reply.status_code == 200, reply.text
    said = reply.headers[CLAMPED_HEADER]
    assert "start.denoising=1.2->1.0" in said
    assert "start.guidance=60.0->50.0" in said
    assert "num_inference_steps=0->1" in said
    assert "end." not in said  # what was in range is not listed


def test_an_alpha_a_hair_past_one_works(client):
    reply = client.post("/run_inference/", json=fast_request(alpha=1.0000000000000002))
    assert reply.status_code == 200, reply.text


def web_app_alphas(velocity: float, count: int) -> list[float]:
    """The alphas riffusion-app sends (pages/index.tsx): from 0.25, ``alpha + alphaVelocity``
    after each result, less 1 once past 1 + 1e-3, in JavaScript's doubles (Python's)."""
    alpha, sent = 0.25, []
    for _ in range(count):
        sent.append(alpha)
        alpha += velocity
        if alpha > 1 + 1e-3:
            alpha -= 1
    return sent


@pytest.mark.parametrize("velocity", [0.05, 0.1, 0.15, 0.2, 0.25, 1 / 3, 0.5])
def test_every_alpha_the_web_app_sends_is_taken(velocity):
    for alpha in web_app_alphas(velocity, 200):
        body = json.dumps(fast_request(alpha=alpha)).encode()
        inputs, clamped = within_neurochip(parse_body(body, InferenceInput))
        assert 0.0 <= inputs.alpha <= 1.0 and abs(inputs.alpha - alpha) < 1e-6 and not clamped


def test_the_web_app_through_its_proxy_renders_at_its_alphas(client):
    # pages/api/server.js forwards the page's JSON.stringify(inferenceInput) with these headers.
    headers = {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
    drifted = max(web_app_alphas(0.15, 200))
    assert drifted > 1.0
    for alpha in (0.25, drifted):
        request = fast_request(alpha=alpha, mask_image_id=None)
        reply = client.post("/run_inference/", content=json.dumps(request), headers=headers)
        assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"not json", "not JSON"),
        (json.dumps({"alpha": 0.5}).encode(), "start"),
        (json.dumps(fast_request(alpha="half")).encode(), "alpha"),
        (json.dumps(fast_request(alpha=1.5)).encode(), "alpha"),
    ],
)
def test_what_riffusion_refuses_is_still_a_readable_json_error(client, body, said):
    reply = client.post("/run_inference/", content=body, headers={"Content-Type": "text/plain"})
    assert reply.status_code == 422 and said in reply.json()["error"]


def test_an_unknown_seed_image_is_a_400(client):
    reply = client.post("/run_inference/", content=json.dumps(fast_request(seed_image_id="no")))
    assert reply.status_code == 400 and "Invalid seed image" in reply.json()["error"]


def test_the_vst_route_at_another_rate_in_stereo_keeps_the_clip_shape(client):
    clip = tone_wav(0.7, rate=48000, channels=2)
    reply = client.post("/run_vst/", content=juce_vst_body(clip, seed=-123456789))
    assert reply.status_code == 200, reply.text
    heard = sf.info(io.BytesIO(base64.b64decode(reply.json()["audio"])))
    assert (heard.frames, heard.samplerate, heard.channels) == (round(0.7 * 48000), 48000, 2)


@pytest.mark.parametrize(
    ("change", "status", "said"),
    [
        ({"audio": ""}, 400, "no clip"),
        ({"audio": base64.b64encode(b"not a wav").decode()}, 400, "not a WAV"),
        ({"mask_image_id": "mask_beat_lines_80"}, 400, "Mask images apply to seed images"),
        ({"start": None}, 422, "start"),
    ],
)
def test_the_vst_route_refuses_what_it_cannot_render_readably(client, change, status, said):
    request = json.loads(juce_vst_body(tone_wav(0.5), seed=1))
    reply = client.post("/run_vst/", json={**request, **change})
    assert reply.status_code == status and said in reply.json()["error"], reply.text


def test_a_vst_clip_has_room_beyond_riffusions_json_limit(client):
    # ~1.4 MB of base64: over Riffusion's 1 MB JSON limit, well inside the VST route's.
    body = json.loads(juce_vst_body(tone_wav(16.0), seed=3))
    body["mask_image_id"] = "mask"  # refused once read: the body itself was taken
    data = json.dumps(body).encode()
    assert len(data) > 1 << 20
    assert client.post("/run_inference/", content=data).status_code == 413
    reply = client.post("/run_vst/", content=data)
    assert reply.status_code == 400 and "Mask" in reply.json()["error"]
