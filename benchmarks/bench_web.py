"""Browser app: time from pressing Run to the overlay shown, per panel, and server memory.

Starts ``clinicalai web`` on a free loopback port with phantom data, drives headless Debian
chromium with Playwright, and prints a table:

* ``job s``: the panel's background job (engine compute + applying nodes), as the server
  measured it;
* ``run->state s``: Run click until the page has the result;
* ``run->pixels s``: Run click until the slice view shows the overlay (coloured pixels in a
  screenshot);
* ``overhead``: ``run->pixels / job``, the browser app's cost relative to the work itself;
* ``RSS MiB``: the server's resident memory after the panel ran (``/proc/<pid>/status``).

Run: ``.venv/bin/python benchmarks/bench_web.py`` (needs /usr/bin/chromium and the bundled
demo models).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from clinicalai.web.sample_data import write_sample_data

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def coloured_fraction(png: bytes, tmp: Path) -> float:
    import SimpleITK as sitk

    path = tmp / "shot.png"
    path.write_bytes(png)
    rgb = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[..., :3].astype(np.int32)
    return float(((rgb.max(-1) - rgb.min(-1)) >= 25).mean())


def main() -> int:
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    data = tmp / "data"
    data.mkdir()
    write_sample_data(data)  # the phantoms the browser tests open
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "clinicalai", "web", "--port", str(port), "--data", str(data)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while True:
        try:
            with urllib.request.urlopen(url + "index.html", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() - t0 > 120:
                raise SystemExit("the server did not start")
            time.sleep(0.2)
    startup = time.monotonic() - t0
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(300_000)
            page.goto(url)
            page.wait_for_selector("#data-files .ca-data-file")
            idle = rss_mib(proc.pid)
            plan = [
                ("segcorrect", ["cardiac.nii.gz"], None),
                ("pet", ["pet.nii.gz"], None),
                ("attribution", ["brain.nii.gz", "brain_lesion.seg.nrrd"], "['gradient', 'gradcam']"),
            ]
            for key, files, methods in plan:
                for f in files:
                    page.click("#tool-data") if not page.locator("#panel-data").is_visible() else None
                    page.fill("#data-path", f)
                    page.click("#data-open")
                    page.wait_for_timeout(800)
                if not page.locator(f"#panel-{key}").is_visible():
                    page.click(f"#tool-{key}")
                if methods:
                    page.evaluate(f"() => window.trame.state.set('ca_attribution_methods', {methods})")
                view = page.locator(".ca-view-Red").locator("xpath=..")
                base = coloured_fraction(view.screenshot(), tmp)
                runs = page.evaluate(f"() => window.trame.state.get('ca_{key}_runs')")
                start = time.monotonic()
                page.click(f"#{key}-run")
                page.wait_for_function(
                    f"() => window.trame.state.get('ca_{key}_runs') > {runs} || window.trame.state.get('ca_{key}_error')")
                to_state = time.monotonic() - start
                error = page.evaluate(f"() => window.trame.state.get('ca_{key}_error')")
                if error:
                    rows.append((key, float("nan"), float("nan"), float("nan"), float("nan"), rss_mib(proc.pid), error))
                    continue
                to_pixels = float("nan")
                while time.monotonic() - start < to_state + 30:
                    if coloured_fraction(view.screenshot(), tmp) > base + 0.002:
                        to_pixels = time.monotonic() - start
                        break
                    page.wait_for_timeout(100)
                job = float(page.evaluate(f"() => window.trame.state.get('ca_{key}_seconds')"))
                rows.append((key, job, to_state, to_pixels, to_pixels / job if job else float("nan"), rss_mib(proc.pid), ""))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    print(f"server start-up {startup:.1f} s; idle RSS {idle:.0f} MiB (port {port}, {os.cpu_count()} CPUs)")
    print(f"{'panel':<12} {'job s':>7} {'run->state s':>13} {'run->pixels s':>14} {'overhead':>9} {'RSS MiB':>8}  note")
    for key, job, st, px, ratio, rss, note in rows:
        print(f"{key:<12} {job:7.2f} {st:13.2f} {px:14.2f} {ratio:9.2f} {rss:8.0f}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
