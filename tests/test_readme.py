"""The README's Python example runs, as written, with the tiny stand-in model."""

from __future__ import annotations

import re
from pathlib import Path

import soundfile as sf

from neurochip.model import DEFAULT_MODEL_ID

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, tiny_model_dir, capsys):
    [example] = python_blocks()
    assert f'Engine.from_pretrained("{DEFAULT_MODEL_ID}"' in example
    # The real weights cannot be downloaded here: the tiny random model stands in, through
    # the same loader. Few steps keep it quick; nothing else changes.
    example = example.replace(DEFAULT_MODEL_ID, str(tiny_model_dir))
    example = example.replace("denoise=0.35,", "denoise=0.35, steps=6, phase_iterations=0,")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    exec(compile(example, "README.md", "exec"), {})
    for name in ("greensleeves-funk", "greensleeves-funk-A", "greensleeves-funk-B"):
        info = sf.info(tmp_path / f"{name}.wav")
        assert abs(info.duration - 10) < 1e-3
    assert sf.info(tmp_path / "greensleeves-funk.wav").channels == 2
    assert (tmp_path / "greensleeves-funk-compare.wav").is_file()
    printed = capsys.readouterr().out
    assert "42 stereo pair" in printed and "100% done" in printed
