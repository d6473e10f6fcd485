"""``bench/server_load.py --attack``: issue 22's hostile load against one ``neurochip serve``.

All at once: 12 renders of a 19-minute one-note MIDI file, 45 ``/run_inference/`` requests at
1000 steps whose clients give up after 8 s, 14 slow readers of a 10-minute take, and a
600 MB JSON body streamed to ``/run_inference/``. The server's RSS is sampled every 0.2 s and
``/v1/health`` asked every 0.25 s throughout; then SIGTERM, timed to the process's end.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from server_load import ROOT, rss_mb, wait_until_healthy  # bench/server_load.py

from tests.chiptune import make_chiptune
from tests.test_browser import free_port
from tests.test_server import seed_images
from tests.test_server_attacks import long_note_midi
from tests.tiny_model import build_tiny_model

SR = 44100


def prepare(folder: Path) -> tuple[Path, Path, str]:
    """The seed images folder, the take library (with a 10-minute take) and that take's id."""
    from neurochip.io.audio import Audio
    from neurochip.library.metadata import take_metadata
    from neurochip.library.store import TakeLibrary
    from neurochip.settings import RenderSettings

    seeds = seed_images(folder)
    home = folder / "home"
    tune = make_chiptune(10.0)
    ten_minutes = Audio(np.tile(tune, (1, 60)).astype(np.float32), SR)
    metadata = take_metadata("take", {"A": RenderSettings(prompt="a funk band")}, "long.wav")
    take = TakeLibrary(home).add(ten_minutes, metadata)
    return seeds, home, take.id


class Watch:
    """The server's peak memory and its health check's latency, sampled while it is attacked."""

    def __init__(self, pid: int, url: str) -> None:
        self.pid, self.url = pid, url
        self.rss: list[float] = []
        self.health: list[float] = []
        self.began = time.monotonic()
        self.slow: list[tuple[float, float]] = []  # (seconds into the attack, latency)
        self.health_errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._rss, self._ask)]
        for thread in self.threads:
            thread.start()

    def _rss(self) -> None:
        while not self.stop.wait(0.2):
            self.rss.append(rss_mb(self.pid))

    def _ask(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.wait(0.25):
                asked = time.monotonic()
                try:
                    http.get("/v1/health").raise_for_status()
                except httpx.HTTPError:
                    self.health_errors += 1
                took = time.monotonic() - asked
                self.health.append(took)
                if took > 0.25:
                    self.slow.append((round(asked - self.began, 1), round(1000 * took)))

    def end(self) -> dict:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        return {
            "peak_rss_mb": round(max(self.rss), 1),
            "health_checks": len(self.health),
            "health_errors": self.health_errors,
            "health_median_ms": round(1000 * statistics.median(self.health), 1),
            "health_max_ms": round(1000 * max(self.health), 1),
            "health_over_250ms_at_s_ms": self.slow,
        }


def attack(args) -> int:
    with tempfile.TemporaryDirectory(prefix="neurochip-attack-") as folder:
        folder = Path(folder)
        model = args.model or str(build_tiny_model(folder / "tiny"))
        seeds, home, take_id = prepare(folder)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "neurochip", "serve", "--port", str(port)]
        command += ["--model", model, "--home", str(home), "--seed-images", str(seeds)]
        server = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
        http = httpx.Client(base_url=url, timeout=120)
        wait_until_healthy(http)
        idle_mb = rss_mb(server.pid)
        load_before = os.getloadavg()[0]
        watch = Watch(server.pid, url)
        results: dict[str, list] = {"renders": [], "inference": [], "readers": [], "body": []}
        lock = threading.Lock()

        def note(kind: str, what) -> None:
            with lock:
                results[kind].append(what)

        def renders() -> None:
            midi = long_note_midi(19)
            for n in range(12):
                files = {"file": (f"note{n}.mid", midi, "audio/midi")}
                reply = http.post("/v1/renders", data={"settings": '{"prompt": "x"}'}, files=files)
                note("renders", [reply.status_code, reply.json().get("id")])

        def inference() -> None:
            request = {
                "alpha": 0.5, "num_inference_steps": 1000, "seed_image_id": "og_beat",
                "start": {"prompt": "bells", "seed": 1}, "end": {"prompt": "jazz", "seed": 2},
            }  # fmt: skip
            try:
                with httpx.Client(base_url=url, timeout=8) as own:
                    note("inference", own.post("/run_inference/", json=request).status_code)
            except httpx.TimeoutException:
                note("inference", "gave up")

        def reader() -> None:
            read = 0
            with (
                httpx.Client(base_url=url, timeout=60) as own,
                own.stream("GET", f"/v1/takes/{take_id}/audio") as reply,
            ):
                for chunk in reply.iter_raw(64 * 1024):
                    read += len(chunk)
                    time.sleep(0.5)  # a slow client: 128 kB/s
                    if read > 40 * 64 * 1024:
                        break
            note("readers", read)

        def body() -> None:
            def chunks():
                yield b'{"alpha": 0.5, "pad": "'
                for _ in range(600):
                    yield b"x" * (1 << 20)
                yield b'"}'

            try:
                reply = httpx.post(
                    f"{url}/run_inference/",
                    content=chunks(),
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                note("body", reply.status_code)
            except httpx.HTTPError as err:
                note("body", f"cut off: {type(err).__name__}")

        began = time.monotonic()
        work = [renders] + [inference] * 45 + [reader] * 14 + [body]
        threads = [threading.Thread(target=f, daemon=True) for f in work]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        attacked_s = time.monotonic() - began
        after_mb = rss_mb(server.pid)
        watched = watch.end()
        queued = [render_id for status, render_id in results["renders"] if status == 202]
        server.send_signal(signal.SIGTERM)
        asked = time.monotonic()
        try:
            server.wait(30)
            stop_s = time.monotonic() - asked
        except subprocess.TimeoutExpired:
            server.kill()
            stop_s = float("inf")
        http.close()

    summary = {
        "machine": f"{sys.platform}, {os.cpu_count()} CPUs",
        "load_average_before": load_before,
        "model": args.model or "tiny random (tests/tiny_model.py)",
        "attack_s": round(attacked_s, 1),
        "idle_rss_mb": round(idle_mb, 1),
        "rss_after_attack_mb": round(after_mb, 1),
        **watched,
        "renders": {
            "accepted": len(queued),
            "refused": sorted({s for s, _ in results["renders"] if s != 202}),
        },
        "inference": {str(k): results["inference"].count(k) for k in set(results["inference"])},
        "slow_readers_bytes": sorted(results["readers"]),
        "body_600mb": results["body"],
        "stop_after_sigterm_s": round(stop_s, 2),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    failed = []
    if summary["peak_rss_mb"] >= args.max_rss_gb * 1024:
        failed.append(f"peak RSS {summary['peak_rss_mb']} MB")
    if summary["health_max_ms"] >= 1000 or summary["health_errors"]:
        failed.append(f"health took up to {summary['health_max_ms']} ms")
    if stop_s >= 10:
        failed.append(f"stopping took {stop_s:.1f} s")
    for problem in failed:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if failed else 0
