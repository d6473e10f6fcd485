"""A web page on another origin cannot use the local API, in a real browser.

``tests/test_server_attacks.py`` checks the server's gate with hand-made headers; this test
proves the same in headless Chromium, with the headers a browser really sends. The API
(``create_app``, served by uvicorn in this process) holds one take, rendered by a script. An
attacker's page on ``http://evil.test:<port>/`` (Chromium maps evil.test to 127.0.0.1) then
tries what a page can: a ``no-cors`` POST of a render, a CORS read of the takes (with the
token, should the attacker know it), an HTML form posted into a hidden iframe, and DNS
rebinding (evil.test on the API's own port, so the browser deems it the page's own origin).

It asserts on the server's state, not on time: no render besides the script's, still exactly
one take; and on what the page saw: the take's id in nothing it could read, the rebinding
answered with the refusal that names ``--allow-host``. A same-origin read of the takes (a
positive control) shows the take (or, with a token, asks for it), so a dead server fails.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from pathlib import Path

import httpx
import pytest

from neurochip.engine import Engine
from neurochip.library.store import TakeLibrary
from neurochip.server import Renders, ServerLimits, create_app
from tests.test_browser import CHROMIUM, FLAGS, free_port
from tests.test_server import FAST, TIMEOUT, wav_bytes
from tests.test_server_attacks import live, wait_for

PAGE = """<!doctype html>
<pre id=log></pre>
<iframe name=sink hidden></iframe>
<form id=form method=post enctype=application/x-www-form-urlencoded target=sink
      action="__API__/v1/renders">
  <input name=settings value="{}"><input name=path value="ok.wav">
</form>
<script>
const API = "__API__", HEADERS = __HEADERS__;
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
async function attack() {
  const body = new FormData();  // (a) a render, sent blind: the answer is opaque anyway
  body.append("settings", JSON.stringify(__SETTINGS__));
  body.append("path", "ok.wav");
  try {
    await fetch(API + "/v1/renders", {method: "POST", mode: "no-cors", body});
    log("a: sent");
  } catch (err) { log("a: " + err); }
  try {  // (b) read the takes, token and all
    const reply = await fetch(API + "/v1/takes", {headers: HEADERS});
    log("b: " + reply.status + " " + await reply.text());
  } catch (err) { log("b: " + err); }
  await new Promise((resolve) => {  // (c) the form, into the hidden iframe
    const sink = document.querySelector("iframe");
    sink.onload = () => {
      try { log("c: loaded " + sink.contentDocument.body.innerText); }
      catch (err) { log("c: loaded, unreadable: " + err); }
      resolve();
    };
    document.getElementById("form").submit();
  });
  document.body.insertAdjacentHTML("beforeend", "<div id=done></div>");
}
attack();
</script>
"""


@contextlib.contextmanager
def static_site(folder: Path):
    """``folder`` served over HTTP on a free local port (the attacker's site)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def render_one_take(port: int, auth: dict[str, str]) -> tuple[str, str]:
    """Render as a script would (no Origin); returns the render's id and its take's id."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=TIMEOUT) as c:
        files = {"file": ("sketch.wav", wav_bytes(2.0), "application/octet-stream")}
        reply = c.post("/v1/renders", data={"settings": json.dumps(FAST)}, files=files)
        assert reply.status_code == 202, reply.text
        render_id = reply.json()["id"]
        states = {"done", "failed", "cancelled"}
        wait_for(lambda: c.get(f"/v1/renders/{render_id}").json()["state"] in states, "render")
        status = c.get(f"/v1/renders/{render_id}").json()
    assert status["state"] == "done", status
    (take_id,) = status["takes"].values()
    return render_id, take_id


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_a_page_on_another_origin_can_neither_render_nor_read_takes(tiny_model, tmp_path, token):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test`."
    sketches = tmp_path / "sketches"
    sketches.mkdir()
    (sketches / "ok.wav").write_bytes(wav_bytes(1.5))
    library = TakeLibrary(tmp_path / "home")
    renders = Renders(lambda: Engine(tiny_model), library)
    app = create_app(renders, ServerLimits(allowed_folder=sketches), token=token)
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    site = tmp_path / "evil"
    site.mkdir()

    with live(app) as api, static_site(site) as page_port:
        render_id, take_id = render_one_take(api, auth)
        target = f"http://127.0.0.1:{api}"
        html = PAGE.replace("__HEADERS__", json.dumps(auth))
        html = html.replace("__SETTINGS__", json.dumps({**FAST, "prompt": "x"}))
        (site / "index.html").write_text(html.replace("__API__", target))

        with sync_playwright() as playwright:
            resolve = "--host-resolver-rules=MAP evil.test 127.0.0.1"
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, resolve])
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(f"http://evil.test:{page_port}/")
            expect(page.locator("#done")).to_be_attached(timeout=120_000)
            log = page.locator("#log").inner_text()

            # DNS rebinding: evil.test on the API's port is, to the browser, the page's origin.
            rebound = browser.new_page()
            reply = rebound.goto(f"http://evil.test:{api}/v1/takes")
            rebound_text = rebound.locator("body").inner_text()

            # The positive control: the API's own origin reads the takes (token or not).
            own = browser.new_page()
            own.goto(f"{target}/v1/takes")
            own_text = own.locator("body").inner_text()
            browser.close()

        assert renders.queue.jobs() == [], "a render is queued or running"
        assert renders.ids() == [render_id], "the page queued a render"
        assert [take.id for take in library.list()] == [take_id]

    assert log.count("\n") >= 3 and "c: loaded" in log, log
    assert take_id not in log, log
    assert reply is not None and reply.status == 421, rebound_text
    assert "--allow-host evil.test" in rebound_text and take_id not in rebound_text
    if token:
        assert "Give the API token" in own_text and take_id not in own_text
    else:
        assert take_id in own_text, own_text
