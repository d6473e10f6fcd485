"""One type for the model choice (neurochip.model_spec): as data, from takes, checked, loaded."""

from __future__ import annotations

import argparse
import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch

from neurochip.cli.common import add_device_option, add_model_options, model_spec
from neurochip.errors import NeuroChipError
from neurochip.library.metadata import take_metadata
from neurochip.model import DEFAULT_MODEL_ID
from neurochip.model_spec import KINDS, ModelSpec
from neurochip.settings import RenderSettings, describe

A_SPEC = ModelSpec(
    source="/models/tiny",
    device="cpu",
    dtype="fp32",
    lora="/loras/style.safetensors",
    lora_scale=0.8,
    compile="reduce-overhead",
    channels_last=True,
    preview_vae="madebyollin/taesd",
)


def test_a_spec_comes_back_whole_from_its_json():
    data = json.loads(json.dumps(A_SPEC.to_dict()))
    assert ModelSpec.from_dict(data) == A_SPEC
    assert ModelSpec.from_dict({}) == ModelSpec() and ModelSpec().kind == "riffusion"
    assert ModelSpec().source == DEFAULT_MODEL_ID
    # A newer NeuroChip's field is left out; a whole number is a strength all the same.
    assert ModelSpec.from_dict({**data, "quantize": "int8", "lora_scale": 1}).lora_scale == 1.0
    assert hash(ModelSpec.from_dict(data)) == hash(A_SPEC)  # it keys the engines kept


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("riffusion", "must be a table"),
        ({"source": 3}, "model (source) must be text"),
        ({"lora_scale": "strong"}, "lora strength (lora_scale) must be a number"),
        ({"lora_scale": True}, "must be a number"),
        ({"lora_scale": float("nan")}, "finite"),
        ({"channels_last": "yes"}, "must be true or false"),
    ],
)
def test_a_field_of_the_wrong_type_is_said_clearly(data, message):
    with pytest.raises(
        NeuroChipError, match="(?i)" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        ModelSpec.from_dict(data)


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(NeuroChipError) as err:
        ModelSpec(kind="musicgen")
    assert "'musicgen'" in str(err.value) and all(kind in str(err.value) for kind in KINDS)
    with pytest.raises(NeuroChipError, match="riffusion"):
        ModelSpec.from_dict({"kind": "musicgen"})


def test_every_field_has_a_label_and_help_written_once():
    for f in dataclasses.fields(ModelSpec):
        about = describe(ModelSpec, f.name)
        assert about.label and about.help.endswith("."), f.name


def test_a_new_take_gives_back_the_spec_that_made_it():
    info = {"model": "/models/tiny", "device": "cpu", "spec": A_SPEC.to_dict()}
    metadata = take_metadata("take", {"A": RenderSettings(prompt="funk")}, "a.wav", info)
    assert metadata["model_spec"] == A_SPEC.to_dict() and "spec" not in metadata
    assert metadata["model"] == "/models/tiny"  # what older readers read
    assert ModelSpec.of_take(json.loads(json.dumps(metadata))) == A_SPEC
    # Until the engine says its spec, a take carries none (and reads as an old one).
    plain = take_metadata("take", {"A": RenderSettings()}, "a.wav", {"model": "/models/tiny"})
    assert "model_spec" not in plain


def test_an_old_take_reads_as_riffusion_with_its_model():
    assert ModelSpec.of_take({"model": "/models/tiny", "device": "cuda:0"}) == ModelSpec(
        source="/models/tiny"
    )
    old = ModelSpec.of_take({"model": "riffusion/riffusion-model-v1 + LoRA style x0.8"})
    assert (old.kind, old.source, old.lora, old.lora_scale) == (
        "riffusion",
        "riffusion/riffusion-model-v1",
        "style",
        0.8,
    )
    assert ModelSpec.of_take({}) == ModelSpec() and ModelSpec.of_take(None) == ModelSpec()
    assert ModelSpec.of_take({"model": 7}) == ModelSpec()
    assert ModelSpec.of_take_if_known({"kind": "take"}) is None  # says nothing of its model
    assert ModelSpec.of_take_if_known({"model": "x"}) == ModelSpec(source="x")


def test_a_damaged_spec_in_a_take_is_said():
    with pytest.raises(NeuroChipError, match="model spec is damaged.*text"):
        ModelSpec.of_take({"model_spec": {"source": ["no"]}})
    assert ModelSpec.of_take_if_known({"model_spec": "junk"}) is None


def test_same_model_looks_at_the_weights_alone():
    assert A_SPEC.same_model(dataclasses.replace(A_SPEC, device="cuda", compile="", dtype="fp16"))
    assert A_SPEC.same_model(dataclasses.replace(A_SPEC, source="/models/tiny/"))
    assert not A_SPEC.same_model(dataclasses.replace(A_SPEC, lora_scale=0.5))
    assert not A_SPEC.same_model(dataclasses.replace(A_SPEC, source="/models/other"))
    # An old take names its LoRA by file name.
    old = ModelSpec.of_take({"model": "/models/tiny + LoRA style.safetensors x0.8"})
    assert old.same_model(A_SPEC)
    # Without a LoRA its strength is nothing.
    assert ModelSpec(lora_scale=0.5).same_model(ModelSpec())


def test_describe_says_what_is_not_the_default():
    assert ModelSpec().describe() == DEFAULT_MODEL_ID
    text = A_SPEC.describe()
    for part in ("/models/tiny", "on cpu", "fp32", "LoRA style.safetensors x0.8"):
        assert part in text
    assert "compiled (reduce-overhead)" in text and "channels last" in text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lora": "/no/such/lora.safetensors", "lora_scale": 3.0}, "lora strength.*at most 2"),
        ({"lora": "/no/such/lora.safetensors", "lora_scale": 0.0}, "lora strength"),
        ({"lora": "/no/such/lora.safetensors"}, "no lora at"),
        ({"compile": "fastest"}, "unknown compile mode 'fastest'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"device": "cpu:1"}, "unknown device"),
        ({"dtype": "fp8"}, "unknown number format 'fp8'"),
    ],
)
def test_check_finds_what_it_can_before_the_slow_load(changes, message):
    spec = ModelSpec(**changes)
    with pytest.raises(NeuroChipError, match="(?i)" + message):
        spec.check()


def test_check_reads_a_lora_file_only_when_asked(tmp_path):
    pickle = tmp_path / "style.ckpt"
    pickle.write_bytes(b"not safetensors")
    with pytest.raises(NeuroChipError, match="safetensors"):
        ModelSpec(lora=str(pickle)).check()
    ModelSpec(lora=str(tmp_path / "elsewhere.safetensors")).check(files=False)
    ModelSpec(device="cuda:1", compile="default", dtype="bf16").check()
    ModelSpec(lora_scale=9.0).check()  # no LoRA: its strength is not used


def test_from_pretrained_checks_a_spec_first_and_loads_its_kinds_backend(monkeypatch):
    """``Engine.from_pretrained`` is the one door: a spec is checked before the slow load,
    its kind picks the backend, and the old keyword form makes the same spec."""
    from neurochip.engine import Engine, registry

    asked = []

    class Backend:
        capabilities = SimpleNamespace(sample_rate=44100)
        device = torch.device("cpu")
        prior_rates = {"encode": 1.0}
        estimate_needs = frozenset()

        @classmethod
        def from_spec(cls, spec, local_files_only=None, **options):
            asked.append((spec, local_files_only))
            backend = cls()
            backend.spec = spec
            return backend

    monkeypatch.setattr(registry, "backend_class", lambda kind: Backend)
    with pytest.raises(NeuroChipError, match="compile mode"):
        Engine.from_pretrained(ModelSpec(compile="fastest"))
    assert asked == []
    spec = dataclasses.replace(A_SPEC, preview_vae="")
    engine = Engine.from_pretrained(spec, local_files_only=True)
    assert engine.spec is spec and asked == [(spec, True)]
    again = Engine.from_pretrained(
        spec.source,
        device=spec.device,
        dtype=spec.dtype,
        lora=spec.lora,
        lora_scale=spec.lora_scale,
        compile=spec.compile,
        channels_last=spec.channels_last,
    )
    assert again.spec == spec
    assert Engine.from_pretrained().spec == ModelSpec()


def test_a_preview_vae_that_fails_is_said_where_asked(tiny_model_dir, tmp_path):
    from neurochip.engine import Engine

    spec = ModelSpec(source=str(tiny_model_dir), device="cpu", preview_vae=str(tmp_path / "no"))
    with pytest.raises(NeuroChipError):
        Engine.from_pretrained(spec, local_files_only=True)
    problems = []
    engine = Engine.from_pretrained(
        spec, local_files_only=True, on_preview_vae_error=problems.append
    )
    assert isinstance(engine, Engine) and engine.model.preview_vae is None
    assert len(problems) == 1 and isinstance(problems[0], NeuroChipError)
    assert engine.spec == spec


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    add_device_option(parser)
    return parser.parse_args(list(argv))


def test_the_cli_options_make_a_spec():
    assert model_spec(cli_args()) == ModelSpec()
    spec = model_spec(
        cli_args(
            "--model",
            "/models/tiny",
            "--device",
            "cpu",
            "--dtype",
            "fp32",
            "--lora",
            "/loras/style.safetensors",
            "--lora-scale",
            "0.8",
            "--compile",
            "reduce-overhead",
            "--channels-last",
        )
    )
    assert spec == dataclasses.replace(A_SPEC, preview_vae="")
    assert model_spec(cli_args("--compile")).compile == "default"


def test_the_cli_help_comes_from_the_spec():
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    add_device_option(parser)
    help_text = " ".join(parser.format_help().split())
    for name in ("source", "lora", "channels_last"):
        first_words = " ".join(describe(ModelSpec, name).help.split()[:6])
        assert first_words in help_text, name


def test_a_reroll_says_when_its_take_was_made_with_other_weights(capsys):
    from neurochip.cli.reroll import _note_other_model

    _note_other_model("take.wav", {"model": "/models/tiny"}, ModelSpec(source="/models/tiny/"))
    _note_other_model("take.wav", {"kind": "take"}, ModelSpec())  # the take does not say
    assert capsys.readouterr().err == ""
    _note_other_model("take.wav", {"model_spec": A_SPEC.to_dict()}, ModelSpec())
    said = capsys.readouterr().err
    assert f"take.wav was rendered with {A_SPEC.describe()}, not {DEFAULT_MODEL_ID}" in said


def test_a_rendered_take_records_the_spec_that_loaded_its_model(tiny_model_dir):
    """End to end: the spec the engine was loaded from rides in every render's info into the
    take's metadata, and reads back as that spec."""
    from neurochip.engine import Engine
    from neurochip.io.audio import Audio
    from neurochip.settings import RenderSettings, TakeSetOptions
    from neurochip.takeset import render_take_set
    from tests.chiptune import make_chiptune

    spec = ModelSpec(source=str(tiny_model_dir), device="cpu", dtype="fp32")
    engine = Engine.from_pretrained(spec, local_files_only=True)
    song = Audio(make_chiptune(2.0, seed=1), 44100)
    settings = RenderSettings(prompt="a string quartet", steps=2, denoise=0.5, phase_iterations=0)
    made = render_take_set(engine, song, settings, TakeSetOptions(stereo_pair=True))
    for role in ("A", "B", "pair"):
        metadata = made.files[role].metadata
        assert metadata["model_spec"] == spec.to_dict()
        assert ModelSpec.of_take(metadata) == spec
