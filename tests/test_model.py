from __future__ import annotations

import pickle

import pytest
import torch

from neurochip.errors import NeuroChipError
from neurochip.model import (
    SCHEDULERS,
    ModelNotFoundError,
    load_model,
    resolve_dtype,
)


def test_tiny_model_loads_like_the_real_one(tiny_model):
    assert tiny_model.vae_scale == 8 and tiny_model.unet_multiple == 8
    assert tiny_model.dtype == torch.float32 and tiny_model.device.type == "cpu"
    embedding = tiny_model.encode_prompt("a string quartet")
    assert embedding.shape == (1, 77, tiny_model.text_encoder.config.hidden_size)
    assert not torch.equal(embedding, tiny_model.encode_prompt("a funk band"))
    assert "tiny-riffusion" in tiny_model.describe()


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
    with pytest.raises(ModelNotFoundError, match="model.safetensors"):
        load_model(bogus, device="cpu")


class _Exploit:
    """A pickle that would create a file when unpickled with code execution allowed."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_ckpt_pickles_never_run_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    with ckpt.open("wb") as handle:
        pickle.dump({"state_dict": _Exploit(str(marker))}, handle)
    with pytest.raises(ModelNotFoundError):
        load_model(ckpt, device="cpu")
    assert not marker.exists()


def test_dtype_choice():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(NeuroChipError, match="fp16"):
        resolve_dtype("fp16", torch.device("cpu"))
    with pytest.raises(NeuroChipError):
        resolve_dtype("fp8", torch.device("cpu"))
