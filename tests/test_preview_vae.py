"""The tiny preview VAE (TAESD): loaded, checked against the model, used by quick previews only."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from neurochip.engine import FAITHFUL_PREVIEW, QUICK_PREVIEW, Engine
from neurochip.errors import ModelLoadError, ModelNotFoundError
from neurochip.io.audio import Audio
from neurochip.model import load_model
from neurochip.preview_vae import attach_preview_vae, load_preview_vae
from neurochip.settings import RenderSettings
from tests.chiptune import make_chiptune
from tests.tiny_model import build_tiny_preview_vae

SR = 44100
FAST = RenderSettings(prompt="a string quartet", steps=6, denoise=0.5, phase_iterations=0)


@pytest.fixture(scope="module")
def preview_vae_dir(tmp_path_factory):
    return build_tiny_preview_vae(tmp_path_factory.mktemp("taesd") / "tiny-taesd")


@pytest.fixture
def engine_with_preview_vae(tiny_model_dir, preview_vae_dir):
    return Engine.from_pretrained(tiny_model_dir, device="cpu", preview_vae=preview_vae_dir)


def calls(module) -> list[int]:
    seen: list[int] = []
    module.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    return seen


def test_quick_previews_decode_with_the_preview_vae_and_takes_never_do(engine_with_preview_vae):
    engine = engine_with_preview_vae
    model = engine.model
    tiny, full = calls(model.preview_vae.decoder), calls(model.vae.decoder)
    audio = Audio(make_chiptune(8.0, seed=1), SR)
    quick = engine.preview(audio, FAST, 2.0, 3.0, quality=QUICK_PREVIEW)
    assert tiny and not full
    tiles = len(tiny)
    assert quick.info["preview_vae"] == model.preview_vae_source
    faithful = engine.preview(audio, FAST, 2.0, 3.0, quality=FAITHFUL_PREVIEW)
    take = engine.render(audio, dataclasses.replace(FAST, duration_s=4.0))
    assert len(tiny) == tiles and full  # the faithful preview and the take: the model's own VAE
    assert "preview_vae" not in faithful.info and "preview_vae" not in take.info
    # The same region and length either way; the picture is the tiny VAE's own.
    assert quick.output_image.shape == faithful.output_image.shape
    assert quick.audio.frames == faithful.audio.frames
    assert not np.allclose(quick.output_image, faithful.output_image)
    assert float(quick.output_image.min()) >= 0.0 and float(quick.output_image.max()) <= 1.0


def test_without_a_preview_vae_quick_previews_use_the_models_own(tiny_model):
    full = calls(tiny_model.vae.decoder)
    Engine(tiny_model).preview(Audio(make_chiptune(6.0), SR), FAST, 1.0, 2.0, quality=QUICK_PREVIEW)
    assert full


def test_a_preview_vae_for_other_latents_is_refused(tiny_model_dir, tmp_path):
    other = build_tiny_preview_vae(tmp_path / "taesd-8ch", latent_channels=8)
    model = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ModelLoadError, match="8-channel latents.*madebyollin/taesd"):
        attach_preview_vae(model, load_preview_vae(other), str(other))
    assert model.preview_vae is None


def test_a_missing_or_damaged_preview_vae_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download someone/taesd"):
        load_preview_vae("someone/taesd")
    with pytest.raises(ModelNotFoundError, match="no such file or folder"):
        load_preview_vae(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot be used"):
        load_preview_vae(broken)
