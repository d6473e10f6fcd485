"""Benchmark: the HTTP API under load (issue 14): queued renders and many status polls.

Starts ``neurochip serve`` (default: the tiny random model, built into a temporary folder when
``--model`` is not given) on a free localhost port, submits ``--renders`` short renders at
once, and while they run keeps ``--pollers`` clients asking for their status as fast as the
server answers. Reports:

* every render's end state (none may be lost: all ``done``), and the time to the last;
* the status polls' latency (median, 95th percentile, worst) and how many were answered;
* the server's memory (RSS, from ``/proc``) after the first render and after the last, and
  after a second round of the same renders: flat means nothing piles up per render.

``--attack`` runs issue 22's hostile load instead, all at once against one server: 12 queued
renders of a 19-minute one-note MIDI file (36 bytes each), 45 ``/run_inference/`` requests at
1000 steps whose clients give up after 8 s, 14 slow readers of a 10-minute take, and a 600 MB
JSON body. While it runs, the server's memory (RSS, sampled every 0.2 s) and ``/v1/health``'s
latency are watched; then the server gets SIGTERM. It fails (exit 1) if the peak RSS passes
``--max-rss-gb`` (3), health ever took 1 s or more, or the server took 10 s or more to stop.

Run it from the repository root::

    .venv/bin/python bench/server_load.py
    .venv/bin/python bench/server_load.py --renders 10 --pollers 50 --json out.json
    .venv/bin/python bench/server_load.py --attack --json bench/results/cpu-server-attack.json

Timings are of the whole machine: on a busy one they are noisy.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chiptune import make_chiptune  # noqa: E402
from tests.test_browser import free_port  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402

SETTINGS = {"prompt": "a funk band", "steps": 2, "denoise": 0.5, "phase_iterations": 0}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until_healthy(http: httpx.Client) -> None:
    """Until the server started for a bench answers its health check (two minutes at most)."""
    for _ in range(240):
        try:
            if http.get("/v1/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)


def sketch_bytes(seconds: float) -> bytes:
    out = io.BytesIO()
    sf.write(out, make_chiptune(seconds).T, 44100, format="WAV", subtype="PCM_16")
    return out.getvalue()


def one_round(http: httpx.Client, renders: int, pollers: int, data: bytes) -> dict:
    ids = []
    began = time.monotonic()
    for _ in range(renders):
        files = {"file": ("tune.wav", data, "audio/wav")}
        reply = http.post("/v1/renders", data={"settings": json.dumps(SETTINGS)}, files=files)
        reply.raise_for_status()
        ids.append(reply.json()["id"])
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def poll(n: int) -> None:
        with httpx.Client(base_url=http.base_url, timeout=60) as own:
            while not stop.is_set():
                asked = time.monotonic()
                try:
                    reply = own.get(f"/v1/renders/{ids[n % len(ids)]}")
                    reply.raise_for_status()
                except httpx.HTTPError as err:
                    with lock:
                        errors.append(str(err))
                    continue
                with lock:
                    latencies.append(time.monotonic() - asked)

    threads = [threading.Thread(target=poll, args=(n,), daemon=True) for n in range(pollers)]
    for thread in threads:
        thread.start()
    states: dict[str, str] = {}
    while len(states) < len(ids):
        for render_id in ids:
            state = http.get(f"/v1/renders/{render_id}").json()["state"]
            if state in ("done", "failed", "cancelled"):
                states[render_id] = state
        time.sleep(0.2)
    took = time.monotonic() - began
    stop.set()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)
    return {
        "renders": renders,
        "states": sorted(states.values()),
        "seconds_to_last": round(took, 2),
        "polls": len(latencies),
        "poll_errors": len(errors),
        "poll_median_ms": round(1000 * statistics.median(ordered), 1),
        "poll_p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        "poll_max_ms": round(1000 * ordered[-1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attack", action="store_true", help="issue 22's hostile load")
    parser.add_argument("--max-rss-gb", type=float, default=3.0, help="--attack's bound")
    parser.add_argument("--model", default=None, help="model (default: the tiny random one)")
    parser.add_argument("--renders", type=int, default=10)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=1.5, help="sketch length")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.attack:
        from server_attack import attack  # noqa: PLC0415 (bench/server_attack.py)

        return attack(args)

    with tempfile.TemporaryDirectory(prefix="neurochip-load-") as folder:
        model = args.model or str(build_tiny_model(Path(folder) / "tiny"))
        port = free_port()
        command = [sys.executable, "-m", "neurochip", "serve", "--port", str(port)]
        command += ["--model", model, "--home", str(Path(folder) / "home")]
        server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
                wait_until_healthy(http)
                data = sketch_bytes(args.seconds)
                warm = one_round(http, 1, 1, data)  # the model loads on the first render
                after_first = rss_mb(server.pid)
                first = one_round(http, args.renders, args.pollers, data)
                after_round = rss_mb(server.pid)
                second = one_round(http, args.renders, args.pollers, data)
                after_second = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
    result = {
        "machine": f"{sys.platform}, {__import__('os').cpu_count()} CPUs",
        "model": args.model or "tiny random (tests/tiny_model.py)",
        "pollers": args.pollers,
        "warm_up": warm,
        "round_1": first,
        "round_2": second,
        "rss_mb": {
            "after_first_render": round(after_first, 1),
            "after_round_1": round(after_round, 1),
            "after_round_2": round(after_second, 1),
        },
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    lost = [r for r in (first, second) if r["states"] != ["done"] * r["renders"]]
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
