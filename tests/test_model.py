from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from neurochip.errors import ModelLoadError, ModelNotFoundError, NeuroChipError
from neurochip.model import SCHEDULERS, load_model, resolve_dtype


def test_tiny_model_loads_like_the_real_one(tiny_model):
    assert tiny_model.vae_scale == 8 and tiny_model.unet_multiple == 8
    assert tiny_model.dtype == torch.float32 and tiny_model.device.type == "cpu"
    embedding = tiny_model.encode_prompt("a string quartet")
    assert embedding.shape == (1, 77, tiny_model.text_encoder.config.hidden_size)
    assert not torch.equal(embedding, tiny_model.encode_prompt("a funk band"))
    assert "tiny-riffusion" in tiny_model.describe()
    params = sum(p.numel() for p in tiny_model.unet.parameters())
    assert params < 1e6 and f"UNet {params / 1e3:.0f}k parameters" in tiny_model.describe()


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_schedulers_by_name(tiny_model, name):
    scheduler = tiny_model.make_scheduler(name)
    assert type(scheduler).__name__ == SCHEDULERS[name][0]
    assert scheduler.config.num_train_timesteps == 1000


def test_unknown_scheduler(tiny_model):
    with pytest.raises(NeuroChipError, match="dpm\\+\\+"):
        tiny_model.make_scheduler("warp")


def test_missing_folder_says_how_to_get_weights(tmp_path):
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        load_model(tmp_path / "nowhere", device="cpu")


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        load_model(tmp_path, device="cpu")


def test_hub_id_offline_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_model("riffusion/riffusion-model-v1", device="cpu")
    message = str(info.value)
    assert "not in the Hugging Face cache" in message and "HF_HUB_OFFLINE" in message


def test_single_file_that_is_not_a_checkpoint(tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x00" * 64)
    # A local file that is there but broken: say so, never "download 4 GB" (issue 9, item 7).
    _assert_clear(_load_error(bogus), "model.safetensors", "damaged or incomplete")


class _Exploit:
    """A pickle that would create a file when unpickled with code execution allowed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _ShellExploit:
    """The same through a shell command, as a real attack would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_ckpt_pickles_never_run_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    with ckpt.open("wb") as handle:
        pickle.dump({"state_dict": _Exploit(str(marker))}, handle)
    _assert_clear(_load_error(ckpt), "evil.ckpt", "could run code")
    assert not marker.exists()


def test_dtype_choice():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(NeuroChipError, match="fp16"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(NeuroChipError):
        resolve_dtype("fp8", torch.device("cpu"))


# Broken model folders (issue 9): each is one clear line at load time naming the part and what
# is wrong; a local model is never answered with advice to download 4 GB; no code ever runs.


def _copy_of_tiny_model(tiny_model_dir, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def _load_error(source) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(source, device="cpu")
    return str(info.value)


def _assert_clear(message: str, *names: str) -> None:
    """One line, no traceback text, names what it must, and never says to download."""
    assert "\n" not in message and "Traceback" not in message, message
    for name in names:
        assert name in message, message
    assert "huggingface-cli" not in message and "download" not in message.lower(), message


_PICKLE_NAMES = {
    "text_encoder": ("text encoder", "pytorch_model.bin"),
    "unet": ("UNet", "diffusion_pytorch_model.bin"),
    "vae": ("VAE", "diffusion_pytorch_model.bin"),
}


@pytest.mark.parametrize("part", list(_PICKLE_NAMES))
def test_malicious_pickle_in_a_part_is_refused_and_never_runs(
    part, tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    label, name = _PICKLE_NAMES[part]
    for weights in (folder / part).glob("*.safetensors"):
        weights.unlink()
    marker = tmp_path / "pwned"
    with (folder / part / name).open("wb") as handle:
        pickle.dump({"weight": _Exploit(str(marker)), "shell": _ShellExploit(marker)}, handle)
    message = _load_error(folder)
    _assert_clear(message, label, f"{part}/{name}", "could run code")
    assert not marker.exists()


def test_vae_weights_in_the_unet_folder(tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    weights = "diffusion_pytorch_model.safetensors"
    shutil.copyfile(folder / "vae" / weights, folder / "unet" / weights)
    _assert_clear(_load_error(folder), "UNet", "unet/", "the VAE's weights")


def test_text_encoder_weights_that_belong_to_another_part(tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    shutil.copyfile(
        folder / "unet" / "diffusion_pytorch_model.safetensors",
        folder / "text_encoder" / "model.safetensors",
    )
    _assert_clear(_load_error(folder), "text encoder", "the UNet's weights")


def test_no_tokenizer_folder_is_an_error_at_load_time(tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    shutil.rmtree(folder / "tokenizer")
    _assert_clear(_load_error(folder), "tokenizer/")


@pytest.mark.parametrize("missing", [("vocab.json", "merges.txt"), ("tokenizer_config.json",)])
def test_tokenizer_that_cannot_tokenize_is_an_error_at_load_time(missing, tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    for name in missing:
        (folder / "tokenizer" / name).unlink()
    _assert_clear(_load_error(folder), "tokenizer")


@pytest.mark.parametrize("part", ["unet", "scheduler"])
def test_missing_part_folder(part, tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    shutil.rmtree(folder / part)
    (folder / "model_index.json").touch()
    _assert_clear(_load_error(folder), f"{part}/")


def test_part_without_weights_file(tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    (folder / "text_encoder" / "model.safetensors").unlink()
    _assert_clear(_load_error(folder), "text encoder", "no weights file")


@pytest.mark.parametrize(
    ("part", "label", "config"),
    [
        ("unet", "UNet", "config.json"),
        ("vae", "VAE", "config.json"),
        ("scheduler", "scheduler", "scheduler_config.json"),
        ("tokenizer", "tokenizer", "tokenizer_config.json"),
    ],
)
def test_config_that_is_not_json(part, label, config, tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    (folder / part / config).write_text('{"in_channels": 4,')
    _assert_clear(_load_error(folder), label, f"{part}/{config}", "not valid JSON")


def test_truncated_weights_in_a_folder(tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size * 9 // 10])
    _assert_clear(_load_error(folder), "VAE", "damaged or incomplete")


def test_git_lfs_pointer_instead_of_weights(tiny_model_dir, tmp_path):
    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 3438167536\n"
    )
    _assert_clear(_load_error(folder), "UNet", "git lfs pull")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header only"])
def test_damaged_single_file(damage, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = (tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    contents = {
        "garbage": b"\x00" * 64,
        "truncated": real[: len(real) * 9 // 10],
        "header only": real[:1000],
    }[damage]
    checkpoint = tmp_path / "riffusion.safetensors"
    checkpoint.write_bytes(contents)
    _assert_clear(_load_error(checkpoint), "riffusion.safetensors", "damaged or incomplete")


def test_vae_that_does_not_fit_the_unet(tiny_model_dir, tmp_path):
    from diffusers import AutoencoderKL

    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    config = dict(AutoencoderKL.load_config(folder / "vae"), latent_channels=8)
    AutoencoderKL.from_config(config).save_pretrained(folder / "vae")
    _assert_clear(_load_error(folder), "VAE", "UNet", "8", "4")


def test_text_encoder_that_does_not_fit_the_unet(tiny_model_dir, tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    config = CLIPTextConfig.from_pretrained(folder / "text_encoder")
    config.hidden_size = 48
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")
    _assert_clear(_load_error(folder), "text encoder", "UNet", "48", "32")


def test_weights_whose_shapes_do_not_fit_their_config(tiny_model_dir, tmp_path):
    from diffusers import AutoencoderKL

    folder = _copy_of_tiny_model(tiny_model_dir, tmp_path)
    config = dict(AutoencoderKL.load_config(folder / "vae"), latent_channels=8)
    other = tmp_path / "other-vae"
    AutoencoderKL.from_config(config).save_pretrained(other)
    weights = "diffusion_pytorch_model.safetensors"
    shutil.copyfile(other / weights, folder / "vae" / weights)
    _assert_clear(_load_error(folder), "VAE", "do not fit")


def test_healthy_copy_still_loads(tiny_model_dir, tmp_path):
    model = load_model(_copy_of_tiny_model(tiny_model_dir, tmp_path), device="cpu")
    assert model.encode_prompt("a funk band").shape == (1, 77, 32)


def test_single_file_offline_never_says_to_download_the_weights(tmp_path, monkeypatch):
    """A readable checkpoint needs only SD 1.x's small config files from the hub, not 4 GB."""
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoint = tmp_path / "riffusion.safetensors"
    save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, checkpoint
    )
    with pytest.raises(NeuroChipError) as info:
        load_model(checkpoint, device="cpu")
    message = str(info.value)
    assert "\n" not in message and "riffusion.safetensors" in message, message
    assert "huggingface-cli" not in message and "4 GB" not in message, message


def test_missing_hub_weights_name_the_id_asked_for(tmp_path, monkeypatch):
    from neurochip.model import _missing_weights

    message = str(_missing_weights("someone/nothing", "not in the cache"))
    assert "huggingface-cli download someone/nothing" in message
    local = str(_missing_weights(str(tmp_path), "no weights"))
    assert "huggingface-cli download riffusion/riffusion-model-v1" in local


# --- LoRA (issue 11: LCM-LoRA drafts, styles) ---------------------------------------------------


def make_lora(model, folder, rank: int = 4):
    """A random LoRA for the tiny UNet, saved as diffusers saves one; returns the adapted
    UNet's prediction for a fixed input (what fusing it must reproduce)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = model.unet
    unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=rank,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights=False,
        )
    )
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return predict(unet)


def predict(unet):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 64, 64, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


def test_a_lora_is_fused_into_the_unet(tiny_model_dir, tmp_path):
    from neurochip.lora import LORA_FILE, apply_lora

    adapted = make_lora(load_model(tiny_model_dir, device="cpu"), tmp_path / "style")
    model = load_model(tiny_model_dir, device="cpu")
    base = predict(model.unet)
    apply_lora(model, tmp_path / "style")  # the folder: its pytorch_lora_weights.safetensors
    fused = predict(model.unet)
    torch.testing.assert_close(fused, adapted, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fused, base, atol=1e-3)
    assert "LoRA style x1" in model.source  # takes record it with the model
    half = apply_lora(load_model(tiny_model_dir, device="cpu"), tmp_path / "style" / LORA_FILE, 0.5)
    between = predict(half.unet)
    assert (between - base).abs().mean() < (fused - base).abs().mean()


def test_lora_files_that_cannot_be_used_are_clear_errors(tiny_model_dir, tmp_path):
    from neurochip.lora import apply_lora

    model = load_model(tiny_model_dir, device="cpu")
    pickled = tmp_path / "style.bin"
    pickled.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(NeuroChipError, match="safetensors files only"):
        apply_lora(model, pickled)
    with pytest.raises(NeuroChipError, match="no such file"):
        apply_lora(model, tmp_path / "nothing" / "here.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeuroChipError, match="no .safetensors files"):
        apply_lora(model, tmp_path / "empty")
    with pytest.raises(NeuroChipError, match="strength"):
        apply_lora(model, tmp_path / "empty", scale=5.0)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(NeuroChipError, match="not a LoRA"):
        apply_lora(model, junk)
