from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_take_library(tmp_path, monkeypatch) -> Path:
    """Every test keeps its takes in its own folder, never in the user's ~/.neurochip."""
    home = tmp_path / "neurochip-home"
    monkeypatch.setenv("NEUROCHIP_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random-weight model in Riffusion's layout (see tests/tiny_model.py)."""
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-riffusion")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """Loaded through the same code path as the real model."""
    from neurochip.model import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_ace_step_dir(tmp_path_factory) -> Path:
    """The tiny random-weight ACE-Step 1.5 pipeline (see tests/tiny_ace_step.py)."""
    from tests.tiny_ace_step import build_tiny_ace_step

    return build_tiny_ace_step(tmp_path_factory.mktemp("models") / "tiny-ace-step")


@pytest.fixture(scope="session")
def ace_engine(tiny_ace_step_dir):
    """An engine over it, loaded through ``Engine.from_pretrained`` as the real one is."""
    from neurochip.engine import Engine
    from neurochip.model_spec import ModelSpec

    return Engine.from_pretrained(
        ModelSpec.for_kind("ace-step", source=str(tiny_ace_step_dir), device="cpu")
    )


@pytest.fixture(scope="session")
def tiny_sa3_dir(tmp_path_factory) -> Path:
    """The tiny random-weight Stable Audio 3 pipeline (see tests/tiny_stable_audio_3.py)."""
    from tests.tiny_stable_audio_3 import build_tiny_stable_audio_3

    return build_tiny_stable_audio_3(tmp_path_factory.mktemp("models") / "tiny-stable-audio-3")


@pytest.fixture(scope="session")
def sa3_engine(tiny_sa3_dir):
    """An engine over it, loaded through ``Engine.from_pretrained`` as the real one is."""
    from neurochip.engine import Engine
    from neurochip.model_spec import ModelSpec

    return Engine.from_pretrained(
        ModelSpec.for_kind("stable-audio-3", source=str(tiny_sa3_dir), device="cpu")
    )


@pytest.fixture
def engine(tiny_model):
    from neurochip.engine import Engine

    return Engine(tiny_model)


#: Test files that drive a browser or a whole app: the slow lane. `pytest -m "not slow"` is
#: the fast lane for a developer's own loop; `make test` runs everything.
SLOW_FILES = ("test_browser", "test_app", "test_server_attacks", "test_batch", "test_readme")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if Path(str(item.fspath)).stem.startswith(SLOW_FILES):
            item.add_marker(pytest.mark.slow)
