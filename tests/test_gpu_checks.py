"""bench/gpu-checks.sh (issue 29): one call within 8 minutes by its own limits, steps skipped
(never half-run) past the budget or after a failed preflight, every step's JSON written as it
ends, a summary judged against the targets only on a GPU, and a dry run on the CPU that walks
every step with the smallest models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "gpu-checks.sh"
sys.path.insert(0, str(REPO))

from bench.gpu_summary import headline  # noqa: E402

STEPS = [
    "preflight",
    "unet-sweep",
    "pair-vs-loop",
    "pair-compiled",
    "pair-shifted",
    "draft",
    "lcm-draft",
    "engines",
    "song-600s-8gb",
]


def run_checks(tmp_path: Path, *options: str, **env: str) -> tuple[str, list[list[str]]]:
    out = tmp_path / "out"
    environment = {**os.environ, "OUT": str(out), "PY": sys.executable, **env}
    done = subprocess.run(
        ["bash", str(SCRIPT), *options],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    return done.stdout, rows


def test_the_steps_fit_one_call_of_eight_minutes():
    listed = subprocess.run(
        ["bash", str(SCRIPT), "--list"], capture_output=True, text=True, check=True
    ).stdout
    limits = {line.split("\t")[0]: line.split("\t")[1] for line in listed.splitlines()}
    total = int(limits.pop("total"))
    assert list(limits) == STEPS  # in priority order
    assert total == sum(int(v) for v in limits.values()) <= 480


def test_a_step_past_the_budget_is_skipped_never_half_run(tmp_path):
    _, rows = run_checks(tmp_path, "--dry-run", BUDGET="25", DRY_SCALE="1")
    assert rows[0][:2] == ["preflight", "ok"]
    assert [row[0] for row in rows] == STEPS
    for row in rows[1:]:
        assert row[1] == "skipped" and row[4] == "past the budget", row
    assert not (tmp_path / "out" / "unet-sweep.log").exists()  # never started


def test_a_failed_preflight_skips_the_rest(tmp_path):
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\ncase "$1" in bench/preflight.py) exit 3;; esac\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    stdout, rows = run_checks(tmp_path, "--dry-run", PY=str(python))
    assert rows[0][:2] == ["preflight", "failed (3)"]
    assert all(row[1] == "skipped" and row[4] == "the preflight failed" for row in rows[1:])
    assert "| preflight | failed (3) |" in stdout  # the summary still comes


def test_the_summary_judges_targets_only_on_a_gpu_at_full_size():
    report = {
        "results": [
            {
                "contender": "NeuroChip",
                "wall_s": 7.5,
                "audio_s": 180.0,
                "realtime_x": 24.0,
                "non_model_share": 0.08,
                "peak_gpu_mib": 5000,
            }
        ],
        "ratios": {"wall_ratio": 0.25},
    }
    numbers, judged = headline("pair-vs-loop", report, gpu=True)
    assert "4.0x faster than the loop" in numbers
    assert judged == [
        "<= 6 s: missed",
        ">= 3x the loop: met",
        "outside the model <= 10%: met",
    ]
    assert headline("pair-vs-loop", report, gpu=False)[1] == []  # a CPU's numbers: not judged


@pytest.mark.slow
def test_a_dry_run_walks_every_step_and_keeps_each_json(tmp_path):
    stdout, rows = run_checks(tmp_path, "--dry-run")
    assert [row[0] for row in rows] == STEPS
    assert all(row[1] == "ok" for row in rows), rows
    out = tmp_path / "out"
    for step in STEPS:
        assert json.loads((out / f"{step}.json").read_text())
    render = json.loads((out / "pair-vs-loop.json").read_text())
    stages = render["results"][0]["stages_s"]
    assert set(stages) == {"encode", "denoise", "decode", "phase", "other"}
    assert abs(sum(stages.values()) - render["results"][0]["wall_s"]) < 0.05
    for row in json.loads((out / "engines.json").read_text())["rows"]:
        assert row["denoiser_calls"] > 0 and row["denoiser_items"] >= row["denoiser_calls"]
        assert "other" in row["stages_s"]
    lcm = json.loads((out / "lcm-draft.json").read_text())
    assert lcm["settings"]["scheduler"] == "lcm" and lcm["settings"]["guidance"] == 1.5
    compiled = json.loads((out / "pair-compiled.json").read_text())
    assert compiled["warmup_seconds_of_song"] == compiled["input_samples"] / 44100
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["gpu"] and all(step.get("numbers") for step in summary["steps"])
    assert "| song-600s-8gb | ok |" in stdout
