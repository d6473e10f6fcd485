"""The benchmarks' counting modes (no model runs): what issue 11's promises are checked with."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def render_bench():
    """bench/render.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("bench_render", BENCH / "render.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def counts(render_bench, tmp_path, *extra: str) -> dict:
    out = tmp_path / "counts.json"
    code = render_bench.main(["--count-only", "--seconds", "180", "--json", str(out), *extra])
    assert code == 0
    return json.loads(out.read_text())


def test_a_shifted_window_pair_does_no_more_model_work_than_the_clip_loop(render_bench, tmp_path):
    overlap = counts(render_bench, tmp_path)
    shifted = counts(render_bench, tmp_path, "--windows", "shifted")
    loop = shifted["Riffusion loop"]["unet_items"]
    assert overlap["NeuroChip"]["unet_items"] > loop  # 1.27x at the default overlap
    assert shifted["NeuroChip"]["unet_items"] <= loop
    # ... and far fewer calls: the whole song's windows share each step's calls.
    assert shifted["NeuroChip"]["unet_calls"] * 10 < shifted["Riffusion loop"]["unet_calls"]


def test_feature_reuse_counts_at_least_40_percent_fewer_whole_evaluations(render_bench, tmp_path):
    plain = counts(render_bench, tmp_path, "--single")["NeuroChip"]
    reused = counts(render_bench, tmp_path, "--single", "--feature-reuse", "3")["NeuroChip"]
    assert reused["unet_items"] == plain["unet_items"]
    assert reused["full_items"] <= 0.6 * plain["full_items"]


def test_a_pair_makes_no_more_calls_than_one_take_when_the_batch_has_room(render_bench, tmp_path):
    one = counts(render_bench, tmp_path, "--single", "--count-batch", "512")["NeuroChip"]
    pair = counts(render_bench, tmp_path, "--count-batch", "512")["NeuroChip"]
    assert pair["unet_items"] == 2 * one["unet_items"]
    assert pair["unet_calls"] == one["unet_calls"]


def test_the_prepared_gpu_script_asks_the_benchmarks_only_what_they_take(render_bench):
    """bench/gpu-checks.sh runs on a lent GPU with minutes to spare: a typo in an option
    there would waste the whole lease, so every bench/render.py line it runs is parsed here."""
    import shlex
    import subprocess

    assert subprocess.run(["bash", "-n", str(BENCH / "gpu-checks.sh")]).returncode == 0
    listed = subprocess.run(
        ["bash", str(BENCH / "gpu-checks.sh"), "--list"], capture_output=True, text=True
    ).stdout
    commands = [line.split("\t")[2] for line in listed.splitlines() if line.count("\t") == 2]
    renders = [c for c in commands if "bench/render.py" in c]
    assert len(renders) == 6
    for command in renders:
        argv = shlex.split(command.split("bench/render.py", 1)[1])
        args = render_bench.parse_args(argv)  # exits on an unknown option
        assert args.seconds in (180.0, 600.0)


def test_the_engines_table_labels_each_row_with_its_device_and_weights(tmp_path, capsys):
    """bench/engines.py --quick: one row per engine, each saying it ran random weights on the
    CPU, with its stage times and the take's exact length checked."""
    spec = importlib.util.spec_from_file_location("bench_engines", BENCH / "engines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "engines.json"
    engines = "riffusion,ace-step,stable-audio-3-small"
    assert (
        module.main(["--quick", "--seconds", "2.5", "--engines", engines, "--json", str(out)]) == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [r["engine"] for r in rows] == engines.split(",")
    for row in rows:
        assert row["device"] == "cpu" and row["weights"] == "random"
        assert row["seconds_of_audio"] == 2.5 and row["wall_s"] > 0
        assert {"denoise", "decode"} <= set(row["stages_s"])
    assert "stable-audio-3-small" in capsys.readouterr().out


def test_the_faithfulness_bench_times_both_measures_and_leaves_the_cores_as_they_were(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_faithfulness", BENCH / "faithfulness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    out = tmp_path / "faithfulness.json"
    assert module.main(["--seconds", "12", "--repeat", "1", "--json", str(out)]) == 0
    numbers = json.loads(out.read_text())
    assert numbers["notes_kept"] is not None and numbers["notes_kept"] > 0.5
    assert numbers["sketch_notes"] > 10
    assert numbers["transcription_s_per_minute"] > 0
    assert "(1 used)" in numbers["machine"] or cores is None
    if cores is not None:
        assert os.sched_getaffinity(0) == cores
