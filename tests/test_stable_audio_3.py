"""Stable Audio 3 as a third engine (issue 26), on the tests' tiny random-weight pipeline: its
loop is diffusers' audio-to-audio pipeline's; what it cannot do is refused with the reason; the
CLI, a batch and the HTTP API render with it. What every latent-audio engine keeps (exact
spans, takes together equal takes alone, re-rolls, loops): tests/test_latent_engines.py. The
tiny model's output is noise: these check the workflow, never the sound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurochip.errors import NeuroChipError
from neurochip.io.audio import Audio
from neurochip.settings import RenderSettings, Section
from tests.chiptune import make_chiptune

RATE = 44100
BASE = RenderSettings(prompt="a funk band with slap bass", steps=4, denoise=0.7, seed=7)


@pytest.fixture(scope="module")
def song() -> Audio:
    return Audio(make_chiptune(6.3, seed=3), RATE)


def test_the_loop_is_diffusers_audio_to_audio_pipeline(sa3_engine):
    """One take of a whole song through NeuroChip's loop is what diffusers'
    StableAudio3AudioToAudioPipeline makes of it with a generator of the take's seed."""
    from neurochip.engine.progress import StagedProgress
    from neurochip.engine.stable_audio_3.pipeline import NoiseStream, generate

    backend = sa3_engine.backend
    pipe = backend.pipe
    frames = 30
    seconds = frames * backend.hop / RATE
    assert math.ceil(seconds * RATE / backend.hop) == frames  # the pipeline's own latent count
    wave = torch.from_numpy(make_chiptune(seconds, seed=2)[:1, : frames * backend.hop])
    stereo = wave.expand(2, -1)[None]
    for steps, level in ((4, 0.6), (3, 1.0)):
        theirs = pipe(
            "a brass band",
            duration=seconds,
            audio=stereo,
            init_noise_level=level,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(5),
        ).audios
        latents = backend.latents_of(Audio(wave.numpy(), RATE))
        take = BASE.replace(prompt="a brass band", steps=steps, denoise=level, seed=5)
        report = StagedProgress(None, sa3_engine._rates, {}, lambda: 0.0, lambda: None, None)
        ours = generate(
            pipe, latents, [take], [NoiseStream(5, frames, backend.dim)], (0, frames), report, {}
        )
        assert torch.allclose(ours[..., : theirs.shape[-1]], theirs, atol=1e-5)


def test_what_stable_audio_3_cannot_do_is_refused_with_the_reason(sa3_engine, song):
    timeline = BASE.replace(sections=(Section(0.0, "soft strings"), Section(3.0, "a band")))
    with pytest.raises(NeuroChipError, match="sections"):
        sa3_engine.render(song, timeline)
    with pytest.raises(NeuroChipError, match="Interpolate to"):
        sa3_engine.preview(song, BASE.replace(prompt_end="a brass band", alpha=0.5), 0.0)
    with pytest.raises(NeuroChipError, match="cannot add a part"):
        sa3_engine.render_many(song, [BASE], part="drums")
    caps = sa3_engine.backend.capabilities
    assert "denoise" in caps.knobs and "guidance" not in caps.knobs


def test_a_span_longer_than_the_model_takes_is_refused_with_the_limit_not_cut(sa3_engine):
    longest = sa3_engine.backend.capabilities.longest_s
    assert longest == 384.0  # the duration embedder's top, as the real checkpoint's
    long_song = Audio(np.zeros((1, round((longest + 6) * RATE)), np.float32), RATE)
    with pytest.raises(NeuroChipError, match=r"at most 384 s in one piece .* 390 s"):
        sa3_engine.render(long_song, BASE)


def test_the_model_spec_names_the_checkpoint_and_its_licence():
    from neurochip.model_spec import ABOUT_KINDS, DEFAULT_STABLE_AUDIO_3_ID, ModelSpec

    spec = ModelSpec.for_kind("stable-audio-3")
    assert spec.source == DEFAULT_STABLE_AUDIO_3_ID == "stabilityai/stable-audio-3-medium"
    assert "Stability AI Community License" in ABOUT_KINDS["stable-audio-3"]
    with pytest.raises(NeuroChipError, match="LoRA is a Riffusion option"):
        ModelSpec.for_kind("stable-audio-3", lora="style.safetensors").check(files=False)


def test_a_missing_checkpoint_says_how_to_get_it(tmp_path):
    from neurochip.engine import Engine
    from neurochip.errors import ModelNotFoundError
    from neurochip.model_spec import ModelSpec

    spec = ModelSpec.for_kind("stable-audio-3", source=str(tmp_path / "nothing"), device="cpu")
    with pytest.raises(ModelNotFoundError, match="Community License"):
        Engine.from_pretrained(spec, local_files_only=True)


def test_the_cli_renders_with_stable_audio_3_and_rerolls_with_the_engine_that_made_it(
    tiny_sa3_dir, tmp_path
):
    import soundfile as sf

    from neurochip.cli import main
    from neurochip.library.metadata import read_take_metadata

    sketch, out, again = tmp_path / "sketch.wav", tmp_path / "take.wav", tmp_path / "reroll.wav"
    sf.write(sketch, make_chiptune(4.2, seed=4).T, RATE)
    common = ["--prompt", "a funk band", "--steps", "2", "--denoise", "0.5", "--no-library"]
    model = ["--engine", "stable-audio-3", "--model", str(tiny_sa3_dir), "--device", "cpu"]
    assert main(["render", str(sketch), "-o", str(out), *model, *common]) == 0
    take, rate = sf.read(out)
    assert rate == RATE and len(take) == round(4.2 * RATE)
    metadata = read_take_metadata(out)
    assert metadata["model_spec"]["kind"] == "stable-audio-3"
    assert metadata["engine"] == "stable-audio-3"
    assert main(["reroll", str(sketch), str(out), "--seconds", "1.5-2.5", "-o", str(again),
                 "--seed", "5", "--no-library"]) == 0  # fmt: skip
    new, _ = sf.read(again)
    before, after = round(1.25 * RATE), round(2.75 * RATE)
    assert np.array_equal(new[:before], take[:before]) and np.array_equal(new[after:], take[after:])
    assert not np.array_equal(new, take)


def test_a_batch_renders_with_stable_audio_3(tiny_sa3_dir, tmp_path, capsys, private_take_library):
    import soundfile as sf

    from neurochip.cli import main

    sf.write(tmp_path / "level1.wav", make_chiptune(1.5, seed=1).T, RATE)
    manifest = tmp_path / "soundtrack.toml"
    manifest.write_text(
        'output = "out"\n\n[defaults]\nsteps = 2\ndenoise = 0.5\n\n'
        '[[songs]]\npath = "level1.wav"\nprompts = ["a funk band"]\nseeds = [1, 2]\n'
    )
    model = ["--engine", "stable-audio-3", "--model", str(tiny_sa3_dir), "--device", "cpu"]
    assert main(["batch", str(manifest), *model]) == 0
    assert "Rendered 2, skipped 0" in capsys.readouterr().out
    takes = sorted((tmp_path / "out").rglob("*.wav"))
    assert len(takes) == 2 and all(sf.info(t).samplerate == RATE for t in takes)
    assert not np.array_equal(sf.read(takes[0])[0], sf.read(takes[1])[0])


def test_the_http_api_renders_a_stereo_pair_with_stable_audio_3(sa3_engine, tmp_path):
    """The server over a Stable Audio 3 engine: a pair of takes, each kept as that engine's."""
    import io

    import soundfile as sf
    from fastapi.testclient import TestClient

    from neurochip.library.store import TakeLibrary
    from neurochip.server import Renders, create_app
    from tests.test_server import LOCAL, events, submit, wav_bytes

    library = TakeLibrary(tmp_path / "home")
    renders = Renders(lambda: sa3_engine, library)
    settings = {"prompt": "a funk band", "steps": 2, "denoise": 0.5, "duration_s": 2.0}
    with TestClient(create_app(renders), base_url=LOCAL) as client:
        reply = submit(client, {**settings, "stereo_pair": True}, wav_bytes(3.0))
        assert reply.status_code == 202, reply.text
        assert events(client, reply.json()["id"])[-1][0] == "done"
        status = client.get(f"/v1/renders/{reply.json()['id']}").json()
        take_a = client.get(f"/v1/takes/{status['takes']['A']}").json()
        assert take_a["metadata"]["engine"] == "stable-audio-3"
        wav = client.get(f"/v1/takes/{status['takes']['pair']}/audio?format=wav")
        samples, rate = sf.read(io.BytesIO(wav.content), always_2d=True)
        assert rate == RATE and samples.shape == (2 * RATE, 2)
