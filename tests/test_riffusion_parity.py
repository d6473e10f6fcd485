"""Riffusion's behaviour where a client hears it, and its clients on a network (issue 28,
parts 3 to 6): mask images applied, the seed image rendered as a picture (img2img on its
pixels, as Riffusion does), negative prompts unused as in Riffusion, CORS for named pages,
and ``--riffusion-open`` letting a network use Riffusion's routes without the token while
``/v1`` keeps needing it (the client's address spoofed in the test client: no traffic leaves
this machine)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from neurochip.engine import Engine, PictureJob
from neurochip.errors import NeuroChipError
from neurochip.library.store import TakeLibrary
from neurochip.server import Renders, ServerLimits, create_app
from neurochip.server.riffusion import IGNORED_HEADER
from neurochip.settings import RenderSettings
from neurochip.spectrogram import image_pixels, load_image
from tests.test_riffusion_clients import fast_request, juce_vst_body, tone_wav
from tests.test_server import LOCAL, seed_images

#: Riffusion's seed images are 512 x 512; the top rows are the highest bands.
SIZE = 512
TOKEN = "s3cret-token"


def write_mask(folder: Path, name: str, white_rows: slice | None) -> Path:
    """A mask as Riffusion ships them: white (rendered anew) on ``white_rows``, black
    (kept) elsewhere; None: all black."""
    pixels = np.zeros((SIZE, SIZE), np.uint8)
    if white_rows is not None:
        pixels[white_rows] = 255
    path = folder / f"{name}.png"
    Image.fromarray(pixels, mode="L").convert("RGB").save(path)
    return path


@pytest.fixture
def folder(tmp_path):
    """Seed images (``og_beat``) and three masks: all black, all white, the top third white."""
    seeds = seed_images(tmp_path)
    write_mask(seeds, "mask_keep_all", None)
    write_mask(seeds, "mask_white", slice(None))
    write_mask(seeds, "mask_top_third", slice(0, SIZE // 3))
    return seeds


def picture_render(engine: Engine, folder: Path, seed: int, mask: str | None = None):
    """The seed image rendered as a picture, at ``seed``, under mask ``mask``."""
    pixels, max_value = image_pixels(load_image(folder / "og_beat.png"))
    mask_pixels = None
    if mask is not None:
        gray = np.asarray(Image.open(folder / f"{mask}.png").convert("L"), np.float32) / 255
        mask_pixels = torch.from_numpy(gray)
    settings = RenderSettings(prompt="jazz", seed=seed, steps=4, denoise=0.75)
    return engine.render_picture(PictureJob(pixels, max_value or 30e6, settings, mask_pixels))


# --- Masks, in the engine ------------------------------------------------------------------------


def test_an_all_black_mask_keeps_the_seed_image_whatever_the_seed(tiny_model, folder):
    engine = Engine(tiny_model)
    kept = [picture_render(engine, folder, seed, "mask_keep_all") for seed in (1, 2)]
    assert torch.equal(kept[0].output_image, kept[1].output_image)
    free = [picture_render(engine, folder, seed) for seed in (1, 2)]
    assert not torch.equal(free[0].output_image, free[1].output_image)


def test_an_all_white_mask_renders_all_of_it(tiny_model, folder):
    engine = Engine(tiny_model)
    white = picture_render(engine, folder, 5, "mask_white")
    alone = picture_render(engine, folder, 5)
    # The same picture, up to float rounding (the mask's blend is computed, not skipped).
    assert torch.allclose(white.output_image, alone.output_image, atol=1e-5)


def test_a_top_third_mask_renders_the_highs_and_keeps_the_rest(tiny_model, folder):
    engine = Engine(tiny_model)
    a, b = (picture_render(engine, folder, seed, "mask_top_third") for seed in (1, 2))
    moved = (a.output_image - b.output_image).abs()
    top, bottom = moved[:, : SIZE // 3].mean(), moved[:, SIZE // 2 :].mean()
    # Two seeds differ where the mask is white; where it is black, both keep the seed image
    # (only the decoder's reach across the edge differs).
    assert top > 0 and bottom < 0.1 * top


def test_a_model_that_renders_audio_refuses_pictures_readably(tiny_model, folder):
    engine = Engine(tiny_model)
    caps = engine.backend.capabilities
    engine.backend.capabilities = dataclasses.replace(caps, pictures=False)
    with pytest.raises(NeuroChipError, match="need a Riffusion model"):
        picture_render(engine, folder, 1)


# --- The seed image, masks and negative prompts over /run_inference/ -----------------------------


@pytest.fixture
def served(tiny_model, folder, tmp_path):
    """The API with the tiny model and ``folder``'s seed images; ``served.calls`` lists the
    engine's calls (``render`` for audio, ``render_picture`` for pictures) and
    ``served.renders`` what each returned."""
    engine = Engine(tiny_model)
    calls: list[tuple[str, object]] = []
    made: list = []
    for name in ("render", "render_picture"):
        method = getattr(engine, name)

        def spy(*args, name=name, method=method, **kwargs):
            calls.append((name, args[0]))
            made.append(method(*args, **kwargs))
            return made[-1]

        setattr(engine, name, spy)
    renders = Renders(lambda: engine, TakeLibrary(tmp_path / "home"))
    limits = ServerLimits(seed_images=folder)
    with TestClient(create_app(renders, limits), base_url=LOCAL) as client:
        client.calls, client.renders, client.engine = calls, made, engine
        yield client


def test_the_seed_image_is_rendered_as_a_picture_as_riffusion_does(served, folder):
    reply = served.post("/run_inference/", json=fast_request())
    assert reply.status_code == 200, reply.text
    # img2img on the image's own pixels: no audio made of it first.
    assert [name for name, _ in served.calls] == ["render_picture"]
    job = served.calls[0][1]
    pixels, _ = image_pixels(load_image(folder / "og_beat.png"))
    assert torch.equal(job.image, pixels) and job.mask is None


def test_a_mask_from_the_seed_images_folder_is_applied(served):
    def picture(seed: int, mask: str | None) -> torch.Tensor:
        request = fast_request(mask_image_id=mask)
        request["start"]["seed"] = request["end"]["seed"] = seed
        reply = served.post("/run_inference/", json=request)
        assert reply.status_code == 200, reply.text
        return served.renders[-1].output_image  # (the sound's random phase is the seed's)

    # All kept: the seed image, whatever the seed; a third anew: the seed is heard there.
    assert torch.equal(picture(1, "mask_keep_all"), picture(2, "mask_keep_all"))
    assert not torch.equal(picture(1, "mask_top_third"), picture(2, "mask_top_third"))
    masks = [job.mask for _, job in served.calls]
    assert masks[0] is not None and float(masks[0].max()) == 0.0  # black: kept
    assert float(masks[2][: SIZE // 3].min()) == 1.0 and float(masks[2][SIZE // 3 :].max()) == 0


def test_an_unknown_mask_is_a_400_as_in_riffusion(served):
    reply = served.post("/run_inference/", json=fast_request(mask_image_id="mask_nope"))
    assert reply.status_code == 400 and "Invalid mask image: mask_nope" in reply.json()["error"]
    assert served.calls == []  # refused before any render


def test_a_mask_on_a_model_that_renders_audio_is_a_readable_400(served):
    caps = served.engine.backend.capabilities
    served.engine.backend.capabilities = dataclasses.replace(caps, pictures=False)
    reply = served.post("/run_inference/", json=fast_request(mask_image_id="mask_top_third"))
    assert reply.status_code == 400 and "need a Riffusion model" in reply.json()["error"]
    reply = served.post("/run_inference/", json=fast_request())  # heard as audio instead
    assert reply.status_code == 200 and [n for n, _ in served.calls] == ["render"]


def test_a_negative_prompt_is_unused_as_in_riffusion_and_said(served):
    plain = served.post("/run_inference/", json=fast_request())
    request = fast_request()
    request["start"]["negative_prompt"] = "distorted, noisy"
    negative = served.post("/run_inference/", json=request)
    assert negative.status_code == 200, negative.text
    assert negative.json()["audio"] == plain.json()["audio"]
    assert negative.headers[IGNORED_HEADER] == "start.negative_prompt"
    assert IGNORED_HEADER not in plain.headers
    assert all(job.settings.negative_prompt == "" for _, job in served.calls)


# --- The network: --riffusion-open, CORS -------------------------------------------------------


@pytest.fixture
def network_api(tiny_model, tmp_path):
    """A server with a token, Riffusion's routes open to 192.168.0.0/16, and one web page's
    origin let in; ``connect(address)`` is a client from that address."""
    renders = Renders(lambda: Engine(tiny_model), TakeLibrary(tmp_path / "home"))
    limits = ServerLimits(seed_images=seed_images(tmp_path))
    app = create_app(
        renders,
        limits,
        TOKEN,
        cors_origins=("http://192.168.1.20:3000",),
        riffusion_open=("192.168.0.0/16",),
    )
    clients = []

    def connect(address: str) -> TestClient:
        client = TestClient(app, base_url="http://192.168.1.2:8000", client=(address, 50123))
        clients.append(client.__enter__())
        return client

    yield connect
    for client in clients:
        client.__exit__(None, None, None)


def test_an_open_network_uses_riffusions_routes_without_a_token(network_api):
    lan = network_api("192.168.4.7")
    reply = lan.post("/run_inference/", content=json.dumps(fast_request()))
    assert reply.status_code == 200, reply.text
    vst = lan.post("/run_vst/", content=juce_vst_body(tone_wav(0.5), seed=-42))
    assert vst.status_code == 200, vst.text
    # NeuroChip's own API still needs the token, from there too.
    assert lan.get("/v1/takes").status_code == 401
    assert lan.post("/v1/renders", files={"sketch": ("a.wav", tone_wav(0.5))}).status_code == 401
    assert lan.get("/v1/takes", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_other_networks_still_need_the_token(network_api):
    for address in ("10.0.0.5", "192.169.0.1", "127.0.0.1"):
        outside = network_api(address)
        reply = outside.post("/run_inference/", content=json.dumps(fast_request()))
        assert reply.status_code == 401, address
        assert "token" in reply.json()["error"]


def test_a_dual_stack_address_of_the_network_counts(network_api):
    lan = network_api("::ffff:192.168.4.7")
    assert lan.post("/run_inference/", json=fast_request()).status_code == 200


def test_the_web_page_named_calls_run_inference_from_the_browser(network_api):
    lan = network_api("192.168.1.20")
    page = "http://192.168.1.20:3000"
    preflight = lan.options(
        "/run_inference/",
        headers={
            "Origin": page,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == page
    request = fast_request(num_inference_steps=0)  # clamped: the header reaches the page
    reply = lan.post("/run_inference/", json=request, headers={"Origin": page})
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == page
    assert "x-neurochip-clamped" in reply.headers["access-control-expose-headers"].lower()
    other = lan.post("/run_inference/", json=request, headers={"Origin": "http://evil.test"})
    assert other.status_code == 403


# --- neurochip serve's options -------------------------------------------------------------------


def serve_args(*options: str):
    import argparse

    from neurochip.cli import serve

    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *options])


def test_serve_takes_cors_and_riffusion_open_repeatedly_and_says_who_may_come_in():
    from neurochip.cli.serve import _network, access_lines

    args = serve_args(
        "--host", "0.0.0.0",
        "--cors", "http://192.168.1.20:3000", "--cors-origin", "http://localhost:3000",
        "--riffusion-open", "192.168.0.0/16", "--riffusion-open", "10.1.2.3",
    )  # fmt: skip
    assert args.cors_origin == ["http://192.168.1.20:3000", "http://localhost:3000"]
    networks = [_network(cidr) for cidr in args.riffusion_open]
    said = "\n".join(access_lines(args.host, TOKEN, tuple(args.cors_origin), networks))
    assert "192.168.0.0/16, 10.1.2.3/32" in said and "/v1 still needs it" in said
    assert "http://192.168.1.20:3000, http://localhost:3000" in said
    local = "\n".join(access_lines("127.0.0.1", None, (), networks))
    assert "this machine only" in local and "--host 0.0.0.0" in local


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--riffusion-open", "0.0.0.0/0"], "every address"),
        (["--riffusion-open", "my-lan"], "not a network"),
        (["--cors", "*"], "name one web page's origin"),
    ],
)
def test_serve_refuses_openings_that_let_everyone_in(options, said):
    from neurochip.cli.serve import run

    with pytest.raises(NeuroChipError, match=said):
        run(serve_args(*options))
