"""The GPU checks' summary: one table from the steps' JSONs, against issue 29's targets.

    python bench/gpu_summary.py OUT        # the folder bench/gpu-checks.sh wrote

Reads ``OUT/steps.tsv`` (how each step ended) and each step's JSON; prints a table (Markdown,
for README) and writes ``OUT/summary.json``. A target is judged only where its step ran at
full size on a GPU (a dry run's numbers are the CPU's, judged against nothing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: (step, what, the most allowed): a 3-minute pair at defaults, drafts, engines' renders.
WALL_TARGETS_S = {
    "pair-vs-loop": 6.0,
    "draft": 2.0,
    "lcm-draft": 2.0,
}
ENGINE_TARGET_S = 2.0
LOOP_RATIO_TARGET = 3.0
NON_MODEL_TARGET = 0.10
MEMORY_TARGET_MIB = 8 * 1024


def read_steps(out: Path) -> list[dict[str, Any]]:
    steps = []
    for line in (out / "steps.tsv").read_text().splitlines():
        name, status, spent, limit, why = (line.split("\t") + [""] * 5)[:5]
        steps.append({"step": name, "status": status, "s": int(spent), "limit_s": int(limit)})
        if why:
            steps[-1]["why"] = why
    return steps


def neurochip_row(report: dict[str, Any]) -> dict[str, Any] | None:
    return next((r for r in report.get("results", []) if r["contender"] == "NeuroChip"), None)


def headline(step: str, report: dict[str, Any], gpu: bool) -> tuple[str, list[str]]:
    """A step's numbers in a line, and the targets it meets or misses."""
    judged: list[str] = []
    if step == "preflight":
        kernels = report.get("attention_ms", {})
        fastest = min(
            (k for k, v in kernels.items() if isinstance(v, float)),
            key=lambda k: kernels[k],
            default="none",
        )
        return f"{report.get('device')}; fastest attention: {fastest}", judged
    if step == "unet-sweep":
        best = report.get("best") or {}
        share = best.get("peak_share")
        peak = "" if share is None else f", {100 * share:.0f}% of peak"
        return (
            f"best {best.get('dtype')} batch {best.get('batch')}: "
            f"{best.get('items_per_s')} items/s{peak}",
            judged,
        )
    if step == "engines":
        rows = report.get("rows", [])
        for row in rows:
            if gpu and row.get("seconds_of_audio", 0) >= 180:
                ok = row["wall_s"] <= ENGINE_TARGET_S
                judged.append(
                    f"{row['engine']} <= {ENGINE_TARGET_S:g} s: {'met' if ok else 'missed'}"
                )
        return "; ".join(f"{r['engine']} {r['wall_s']:.2f} s" for r in rows), judged
    row = neurochip_row(report)
    if row is None:
        return "no result", judged
    parts = [f"{row['wall_s']:.2f} s for {row['audio_s']:g} s ({row['realtime_x']:.1f}x RT)"]
    if report.get("partial"):  # cut off by its limit: the runs it had finished
        parts.insert(0, "partial")
    share = row.get("non_model_share")
    if share is not None:
        parts.append(f"outside the model {100 * share:.0f}%")
    if row.get("peak_gpu_mib"):
        parts.append(f"peak {row['peak_gpu_mib'] / 1024:.1f} GiB")
    ratios = report.get("ratios") or {}
    if "wall_ratio" in ratios:
        parts.append(f"{1 / ratios['wall_ratio']:.1f}x faster than the loop")
    if report.get("compile"):
        parts.append(f"warm-up and compile {report.get('warmup_s', 0):.1f} s")
    full = gpu and row["audio_s"] >= 180
    if full and step in WALL_TARGETS_S:
        ok = row["wall_s"] <= WALL_TARGETS_S[step]
        judged.append(f"<= {WALL_TARGETS_S[step]:g} s: {'met' if ok else 'missed'}")
    if full and step == "pair-vs-loop":
        if "wall_ratio" in ratios:
            ok = 1 / ratios["wall_ratio"] >= LOOP_RATIO_TARGET
            judged.append(f">= {LOOP_RATIO_TARGET:g}x the loop: {'met' if ok else 'missed'}")
        if share is not None:
            ok = share <= NON_MODEL_TARGET
            judged.append(f"outside the model <= 10%: {'met' if ok else 'missed'}")
    if gpu and step == "song-600s-8gb" and row.get("peak_gpu_mib"):
        ok = row["peak_gpu_mib"] <= MEMORY_TARGET_MIB
        judged.append(f"within 8 GB: {'met' if ok else 'missed'}")
    return "; ".join(parts), judged


def summarise(out: Path) -> dict[str, Any]:
    steps = read_steps(out)
    preflight = out / "preflight.json"
    device = json.loads(preflight.read_text()).get("device", "") if preflight.exists() else ""
    gpu = bool(device) and not device.startswith("cpu")
    for step in steps:
        path = out / f"{step['step']}.json"
        if path.exists():
            try:
                report = json.loads(path.read_text())
            except json.JSONDecodeError:
                step["numbers"] = "unreadable JSON"
                continue
            step["numbers"], step["targets"] = headline(step["step"], report, gpu)
    return {"device": device, "gpu": gpu, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python bench/gpu_summary.py OUT", file=sys.stderr)
        return 2
    out = Path(args[0])
    summary = summarise(out)
    print(f"GPU checks on {summary['device'] or 'an unknown device'} (random weights)")
    print()
    print("| step | status | s (limit) | numbers | targets |")
    print("|---|---|---|---|---|")
    for step in summary["steps"]:
        status = step["status"] + (f": {step['why']}" if step.get("why") else "")
        print(
            f"| {step['step']} | {status} | {step['s']} ({step['limit_s']}) | "
            f"{step.get('numbers', '')} | {', '.join(step.get('targets', []))} |"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
