"""Benchmark: renders in the app from one and two browser sessions at once (issue 9, item 5).

Starts the app (``neurochip app``) with a model (default: the tiny random one, built into a
temporary folder when ``--model`` is not given) on a free localhost port, and drives headless
Chromium through Playwright in separate browser contexts (= separate Streamlit sessions). Every
session uploads the same 6 s chip tune, sets Steps low, waits for its auto preview to finish,
and then, in each scenario:

* ``alone``: one session renders; nothing else is open;
* ``idle``: one session renders while a second session has the page open with its sketch
  loaded (and its preview done), doing nothing;
* ``both``: two sessions click Render at (nearly) the same moment;
* ``preview``: one session moves a setting (the seed's + button) ``--repeat`` times; each time,
  from the click until the fresh preview is on the page (the "Out of date" mark gone), timed
  in the page itself, minus the engine's own time ("Previewed in X s"), is what the app adds:
  debounce, noticing the finished job, the page run, the transfer and drawing of its charts
  (issue 10's target: under 0.3 s).

Each render is timed from the click to "Rendered in" on that page (so it includes the page
noticing that the job finished). The target: each render of ``both`` ends within about the sum
of the lone times, and ``idle`` costs about what ``alone`` does.

While a scenario runs, and for 10 s after its renders finished (pages left open must cost
nothing), the Streamlit server's CPU use is read from ``/proc``: the whole process and its main
thread (the Tornado event loop that sends every page update), as shares of one core, with the
load average. ``--py-spy PATH`` also samples where the time goes, per thread kind (main,
``ScriptRunner`` = page runs, ``neurochip-job`` = the renders, other = torch pools, ...) with
the hottest frames of the main and page-run threads (py-spy must be installed, e.g. ``pip
install --target /tmp/pyspy py-spy``, then ``--py-spy /tmp/pyspy/bin/py-spy``).

Run it from the repository root (needs Chromium, as tests/test_browser.py does)::

    .venv/bin/python bench/app_sessions.py
    .venv/bin/python bench/app_sessions.py --steps 3 --scenarios alone both --json out.json

Timings are of the whole machine: on a busy one they are noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = os.environ.get("NEUROCHIP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds used so far by a process (all its threads, finished ones too) or a thread."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    stat = Path(path).read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def streamlit_pid(pid: int) -> int:
    """``neurochip app`` runs Streamlit in a child process: that is the server."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    return pid


class CpuMeter:
    """The server's CPU use between start() and stop(), as shares of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.before = (cpu_seconds(self.pid), cpu_seconds(self.pid, self.pid))
        self.load0 = os.getloadavg()

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        total = cpu_seconds(self.pid) - self.before[0]
        main = cpu_seconds(self.pid, self.pid) - self.before[1]
        return {
            "wall_s": round(wall, 2),
            "server_cpu_share": round(total / wall, 3),
            "main_thread_cpu_share": round(main / wall, 3),
            "loadavg_before": [round(x, 2) for x in self.load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }


def spy_summary(path: Path, top: int = 6) -> dict:
    """py-spy's raw samples -> share of samples per thread kind, and each kind's hottest
    frames from our code or Streamlit's (where the time goes)."""
    if not path.exists():
        return {}
    kinds: dict[str, int] = defaultdict(int)
    frames: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        name = parts[0]  # py-spy --threads: the thread's id and name come first
        kind = (
            "main"
            if "MainThread" in name
            else "ScriptRunner"
            if "ScriptRunner" in name
            else "neurochip-job"
            if "neurochip-job" in name
            else "other"
        )
        kinds[kind] += n
        total += n
        interesting = [
            f for f in parts[1:] if ("app/" in f or "neurochip/" in f or "streamlit/" in f)
        ]
        if interesting and kind in ("main", "ScriptRunner"):
            frames[kind][interesting[-1]] += n
    return {
        "samples": total,
        "share_by_thread": {k: round(v / max(total, 1), 3) for k, v in sorted(kinds.items())},
        "hottest": {k: sorted(v.items(), key=lambda kv: -kv[1])[:top] for k, v in frames.items()},
    }


def start_server(model: str, home: Path, port: int, log_path: Path) -> subprocess.Popen:
    log = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "neurochip", "app", "--port", str(port)]
        + ["--model", model, "--home", str(home)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return process
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("The app did not start:\n" + log_path.read_text())
        time.sleep(0.5)


class Session:
    """One browser context on the Arrange page, with the sketch loaded and Steps set."""

    def __init__(self, browser, url: str, tune: Path, steps: int, timeout_s: float) -> None:
        from playwright.sync_api import expect

        self.expect, self.timeout_ms = expect, timeout_s * 1000
        self.context = browser.new_context(viewport={"width": 1400, "height": 1800})
        self.page = page = self.context.new_page()
        page.set_default_timeout(self.timeout_ms)
        page.goto(url)
        # The uploader, whether the page is empty or a session before this one left its song
        # open (the workspace brings it back): uploading replaces it either way.
        uploader = page.locator("[data-testid='stFileUploader'] input[type='file']")
        expect(uploader).to_have_count(1, timeout=self.timeout_ms)
        uploader.set_input_files(tune)
        expect(page.get_by_text(tune.name).first).to_be_visible(timeout=self.timeout_ms)
        thumb = page.locator("[data-testid='stSlider']").filter(has_text="Steps")
        thumb = thumb.get_by_role("slider")
        thumb.focus()
        thumb.press("Home")
        for _ in range(steps - 1):
            thumb.press("ArrowRight")
        expect(thumb).to_have_value(str(steps), timeout=self.timeout_ms)
        self.settle()

    def settle(self) -> None:
        """Wait until no job of this page shows progress (its auto preview is done)."""
        self.page.wait_for_timeout(1500)  # the preview is debounced
        self.expect(self.page.locator("[data-testid='stProgress']")).to_have_count(
            0, timeout=self.timeout_ms
        )

    def click_render(self) -> float:
        self.page.get_by_role("button", name="Render", exact=True).click()
        return time.monotonic()

    def wait_rendered(self, clicked: float) -> float:
        """Seconds from the click until this page shows "Rendered in"."""
        self.expect(self.page.get_by_text("Rendered in")).to_have_count(1, timeout=self.timeout_ms)
        return time.monotonic() - clicked

    def reset(self) -> None:
        """Close this session (its browser context)."""
        self.context.close()


# Times taken in the page itself: Playwright's expect() polls with back-off (0.1, 0.25, 0.5,
# 1 s), which alone added up to a second to what the app seemed to add. A MutationObserver
# notes when the "Out of date" mark appears and when it goes; a capture-phase listener notes
# the click. performance.now() is one clock for all three.
WATCH_STALE_JS = """() => {
  const stale = () => [...document.querySelectorAll('[data-testid="stCaptionContainer"]')]
    .some(e => e.textContent.includes('Out of date'));
  const t = window.__neurochip = {clicked: null, stale: null, fresh: null};
  const click = () => { if (t.clicked === null) t.clicked = performance.now(); };
  document.addEventListener('click', click, {capture: true, once: true});
  const observer = new MutationObserver(() => {
    const now = performance.now();
    if (t.stale === null) { if (stale()) t.stale = now; }
    else if (!stale()) { t.fresh = now; observer.disconnect(); }
  });
  observer.observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


def run_preview_scenario(make_session, repeats: int) -> dict:
    """Slider change to fresh preview in the page, against the engine's own time."""
    session = make_session()
    page, timeout = session.page, session.timeout_ms
    plus = page.get_by_test_id("stNumberInput").filter(has_text="Seed")
    plus = plus.get_by_test_id("stNumberInputStepUp")
    totals, engine, marked = [], [], []
    for _ in range(repeats):
        page.evaluate(WATCH_STALE_JS)
        plus.click()
        page.wait_for_function("() => window.__neurochip.fresh !== null", timeout=timeout)
        t = page.evaluate("() => window.__neurochip")
        totals.append((t["fresh"] - t["clicked"]) / 1000)
        marked.append((t["stale"] - t["clicked"]) / 1000)
        caption = page.get_by_text("Previewed in").inner_text()
        engine.append(float(caption.split("Previewed in")[1].split("s")[0]))
        session.settle()
    session.reset()
    added = [t - e for t, e in zip(totals, engine, strict=True)]
    return {
        "scenario": "preview",
        "click_to_preview_s": [round(t, 3) for t in totals],
        "click_to_out_of_date_mark_s": [round(t, 3) for t in marked],
        "engine_s": engine,
        "app_adds_s": [round(a, 3) for a in added],
        "app_adds_median_s": round(statistics.median(added), 3),
    }


def run_scenario(name: str, make_session, pid: int, spy: str | None, spy_dir: Path) -> dict:
    renderers = [make_session()]
    idle = make_session() if name == "idle" else None
    if name == "both":
        renderers.append(make_session())
    meter = CpuMeter(pid)
    spy_proc = None
    spy_file = spy_dir / f"{name}.txt"
    if spy:
        spy_proc = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--threads", "--format", "raw"]
            + ["--rate", "50", "--nonblocking", "-o", str(spy_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    meter.start()
    clicks = [s.click_render() for s in renderers]
    times: list[float | None] = [None] * len(renderers)
    # Playwright's sync API is single-threaded: look at every page in turn, every 0.2 s, and
    # take each page's time when its result is first seen.
    pending = set(range(len(renderers)))
    while pending:
        for i in sorted(pending):
            page = renderers[i].page
            if page.get_by_text("Rendered in").count():
                times[i] = time.monotonic() - clicks[i]
                pending.discard(i)
        if time.monotonic() - clicks[0] > renderers[0].timeout_ms / 1000:
            break
        if pending:
            renderers[0].page.wait_for_timeout(200)
    cpu = meter.stop()
    if spy_proc is not None:
        spy_proc.send_signal(signal.SIGINT)  # py-spy writes its samples on Ctrl-C
        spy_proc.wait(60)
    # A page left polling after its render finished keeps costing the server: measure 10 s
    # of "nothing happening" with the finished pages still open.
    meter.start()
    renderers[0].page.wait_for_timeout(10_000)
    after = meter.stop()
    for s in renderers + ([idle] if idle else []):
        s.reset()
    return {
        "scenario": name,
        "render_s": [round(t, 2) if t is not None else None for t in times],
        "while_rendering": cpu,
        "after_finishing_10s": {k: after[k] for k in ("server_cpu_share", "main_thread_cpu_share")},
        "py_spy": spy_summary(spy_file) if spy else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: build the tiny random one)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the sketch")
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["alone", "idle", "both"],
        choices=["alone", "idle", "both", "preview"],
    )
    parser.add_argument("--repeat", type=int, default=5, help="previews timed in 'preview'")
    parser.add_argument("--timeout", type=float, default=900, help="per render, seconds")
    parser.add_argument("--py-spy", dest="spy", help="py-spy binary: profile the server too")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import soundfile as sf
    from playwright.sync_api import sync_playwright

    from tests.chiptune import make_chiptune

    work = Path(tempfile.mkdtemp(prefix="neurochip-bench-app-"))
    model = args.model
    if model is None:
        from tests.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "tiny-model"))
    tune = work / "minuet-sketch.wav"
    sf.write(tune, make_chiptune(args.seconds).T, 44100, subtype="PCM_16")
    port = free_port()
    log_path = work / "app.log"
    server = start_server(model, work / "home", port, log_path)
    url = f"http://127.0.0.1:{port}"
    pid = streamlit_pid(server.pid)
    results = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)

            def make_session() -> Session:
                return Session(browser, url, tune, args.steps, args.timeout)

            # Warm up: the first page run imports torch and loads the model (a render
            # scenario also wants the render path warm).
            warm = make_session()
            if set(args.scenarios) - {"preview"}:
                warm.wait_rendered(warm.click_render())
            warm.reset()
            for name in args.scenarios:
                if name == "preview":
                    result = run_preview_scenario(make_session, args.repeat)
                else:
                    result = run_scenario(name, make_session, pid, args.spy, work)
                results.append(result)
                print(json.dumps(result), flush=True)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    log = log_path.read_text()
    summary = {
        "cores": os.cpu_count(),
        "loadavg_end": os.getloadavg(),
        "steps": args.steps,
        "sketch_s": args.seconds,
        "results": results,
        "log_mentions_missing_fragment": "does not exist anymore" in log,
        "work_dir": str(work),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    raise SystemExit(main())
