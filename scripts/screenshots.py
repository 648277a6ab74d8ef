"""Screenshots of the three panels for the Slicer extension index (``EXTENSION_SCREENSHOTURLS``).

Starts ``clinicalai web`` on a free loopback port with a temporary ``--data`` folder of
phantoms (:func:`clinicalai.web.sample_data.write_sample_data`, the data of the browser
tests), drives headless Debian chromium with Playwright (``/usr/bin/chromium``, never
downloaded), runs each panel on its phantom with the bundled demo models and saves one PNG
per panel:

* ``docs/screenshots/segcorrect.png``: SegCorrect on the cardiac phantom (U-Net + NVAE
  correction), the segmentation over the image and the per-slice table;
* ``docs/screenshots/pet-recurrence.png``: PetRecurrence on the FDOPA PET phantom with its
  lesion VOI, P(recurrence), SUVmax / TBR and the Grad-CAM heat map centred on the lesion;
* ``docs/screenshots/attribution-viewer.png``: AttributionViewer on the brain-lesion phantom,
  the maps side by side (gradient, Grad-CAM, anomaly) and the metrics table.

Each shot is checked before it is written: the panel shows its result (no error, the numbers
are in the page) and the slice view shows the overlay (coloured pixels); otherwise the script
stops with a message and writes nothing for that panel. The PNGs are reduced to a 256-colour
palette (Pillow) so each stays well under a few hundred KB. These are browser screenshots;
the desktop Slicer modules look different.

Run: ``.venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--width 1280 --height 800]``
(needs the ``web`` and ``test`` extras, /usr/bin/chromium and the EGL libraries; about two
minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the clinicalai of this checkout, also without `pip install -e .`

from clinicalai.web import page_driver  # noqa: E402
from clinicalai.web.page_driver import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    PageError,
    coloured_fraction,
    open_tool,
    segmentation_id,
    set_state,
    stop_server,
    view_pixels,
    wait_text,
)

#: file names in --out, one per panel (the names EXTENSION_SCREENSHOTURLS points at)
SHOTS = {"segcorrect": "segcorrect.png", "pet": "pet-recurrence.png", "attribution": "attribution-viewer.png"}
#: a shot larger than this (bytes) after palette reduction is refused
MAX_BYTES = 400_000


class ScreenshotError(RuntimeError):
    """A panel did not show its result; the message says what is missing."""


# ---------------------------------------------------------------------- page helpers
def open_file(page, relative: str) -> None:
    """Open ``relative`` (inside --data) from the data panel; an error in the page stops."""
    error = page_driver.open_file(page, relative)
    if error:
        raise ScreenshotError(f"opening {relative}: {error}")


def run_panel(page, key: str, timeout_ms: float = 300_000) -> None:
    """Press the panel's Run and wait for its result (an error in the panel stops)."""
    error = page_driver.run_panel(page, key, timeout_ms=timeout_ms)
    if error:
        raise ScreenshotError(f"{key}: {error}")


def wait_overlay(page, views: List[str], minimum: float = 0.002, timeout_s: float = 30.0) -> None:
    """Wait until each slice view in ``views`` shows overlay colours (the streamed render of
    the result has arrived), else stop."""
    deadline = time.monotonic() + timeout_s
    for tag in views:
        while True:
            fraction = coloured_fraction(view_pixels(page, tag))
            if fraction > minimum:
                break
            if time.monotonic() > deadline:
                raise ScreenshotError(f"no overlay colours in the {tag} view ({fraction:.4f} of the pixels)")
            page.wait_for_timeout(300)


# ---------------------------------------------------------------------- the panels
def shoot_segcorrect(page) -> None:
    """The bundled U-Net segments the cardiac phantom, the NVAE corrects it; the final
    segmentation over the image and the per-slice table."""
    open_file(page, "cardiac.nii.gz")
    wait_text(page, "#volume-name", "cardiac")
    run_panel(page, "segcorrect")
    wait_text(page, "#segcorrect-voxels", r"\d+ voxels")
    if page.locator("#segcorrect-table tbody tr").count() == 0:
        raise ScreenshotError("segcorrect: no per-slice rows in the table")
    set_state(page, "ca_segcorrect_opacity", 0.8)
    wait_overlay(page, ["Red"])


def shoot_pet(page) -> None:
    """P(recurrence), SUVmax / TBR and the Grad-CAM heat map over the PET, centred on the
    lesion VOI."""
    open_file(page, "pet.nii.gz")
    wait_text(page, "#volume-name", "pet")
    open_file(page, "pet_lesion.seg.nrrd")
    open_tool(page, "pet")
    set_state(page, "ca_pet_units", "suv")  # the sample PET is in SUV; a NIfTI does not say it
    set_state(page, "ca_pet_lesion", segmentation_id(page, "ca_pet_masks", "pet_lesion"))
    run_panel(page, "pet")
    wait_text(page, "#pet-probability", r"\d")
    if page.locator("#pet-static tbody tr").count() < 3:
        raise ScreenshotError("pet: SUVmax / TBRmax / TBRmean are not shown")
    set_state(page, "ca_pet_threshold", 0.4)  # the hot part of the map, not its faint tail
    page.click("#pet-lesion-go")
    wait_overlay(page, ["Red"])
    # the drawer scrolled so the numbers (P(recurrence), warnings, SUVmax / TBR) are in view
    page.evaluate("() => document.querySelector('#pet-probability').scrollIntoView({block: 'start'})")


def shoot_attribution(page) -> None:
    """The bundled classifier's gradient and Grad-CAM maps and the bundled autoencoder's
    anomaly map side by side on the brain-lesion phantom, with the metrics against the lesion."""
    open_file(page, "brain.nii.gz")
    wait_text(page, "#volume-name", "brain")
    open_file(page, "brain_lesion.seg.nrrd")  # the reference lesion
    open_tool(page, "attribution")
    set_state(page, "ca_attribution_methods", ["gradient", "gradcam"])
    run_panel(page, "attribution")
    if page.locator("#attribution-metrics tbody tr").count() < 2:
        raise ScreenshotError("attribution: the metrics table has fewer than two rows")
    page.wait_for_timeout(3500)  # the side-by-side views are fitted again 1 s and 3 s after the result
    page.click("#attribution-lesion-go")
    views = ["Red", "Map2"] + (["Map3"] if page.locator(".ca-view-Map3").count() else [])
    wait_overlay(page, views)


PANELS: Dict[str, Callable] = {"segcorrect": shoot_segcorrect, "pet": shoot_pet, "attribution": shoot_attribution}


# ---------------------------------------------------------------------- PNG
def save_png(png: bytes, path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Write the screenshot ``png`` to ``path`` as a 256-colour palette PNG; returns its size
    in bytes. Refuses (writes nothing) when it is still over ``max_bytes``."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=True)
    data = buffer.getvalue()
    if len(data) > max_bytes:
        raise ScreenshotError(f"{path.name}: {len(data)} bytes after palette reduction, over {max_bytes}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


# ---------------------------------------------------------------------- main
def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots", help="folder of the PNGs (default docs/screenshots)")
    parser.add_argument("--width", type=int, default=1280, help="browser viewport width in pixels (default 1280)")
    parser.add_argument("--height", type=int, default=800, help="browser viewport height in pixels (default 800)")
    parser.add_argument("--panels", nargs="+", choices=sorted(PANELS), default=list(PANELS), help="panels to shoot (default all)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"screenshots: chromium not found at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 1
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("screenshots: playwright is not installed (pip install -e .[web,test])", file=sys.stderr)
        return 1
    from clinicalai.web.sample_data import write_sample_data

    with tempfile.TemporaryDirectory(prefix="clinicalai-screenshots-") as tmp:
        data = Path(tmp) / "data"
        write_sample_data(data)
        log_path = Path(tmp) / "server.log"
        port = page_driver.free_port()
        proc = page_driver.launch_server(data, port, log_path)
        try:
            url = page_driver.wait_for_server(proc, port, log_path)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": args.width, "height": args.height}, device_scale_factor=1)
                    page.set_default_timeout(60_000)
                    page.goto(url)
                    page.wait_for_selector("#data-files .ca-data-file")
                    for key in args.panels:
                        started = time.monotonic()
                        PANELS[key](page)
                        set_state(page, "ca_message", "")  # the "opened ..." banner: room for the panel
                        page.wait_for_timeout(800)  # the last streamed frame
                        size = save_png(page.screenshot(), args.out / SHOTS[key])
                        print(f"{args.out / SHOTS[key]}: {size / 1024:.0f} KiB ({time.monotonic() - started:.0f} s)")
                finally:
                    browser.close()
        except (ScreenshotError, PageError) as exc:
            print(f"screenshots: {exc}\nserver log: {log_path.read_text()[-2000:]}", file=sys.stderr)
            return 1
        finally:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
