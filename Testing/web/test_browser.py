"""End to end in headless Debian chromium: the page, the data folder rules, uploads, window /
level, the segment editor (paint, erase, islands, smoothing, undo) and the three panels (Run,
wait, numbers, pixels, accept / reject, the PET lesion VOI found when none is given). One
server and one page for the whole module (see conftest.py)."""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clinicalai.cli import main as cli_main
from clinicalai.web import page_driver
from clinicalai.web.page_driver import (centre, coloured_fraction, open_file, open_tool, segmentation_id, set_state, view_box,
                                        view_pixels, wait_text, wait_view)


pytestmark = pytest.mark.browser


# ---------------------------------------------------------------------- helpers
def run_panel(page, key: str, timeout: float = 120_000) -> None:
    """Run the panel ``key``; its error fails the test."""
    error = page_driver.run_panel(page, key, timeout_ms=timeout)
    assert not error, error


def error_text(page) -> str:
    return wait_text(page, "#error-alert", ".+")


def number(text: str) -> float:
    return float(re.search(r"-?\d+(\.\d+)?", text).group(0))


# ---------------------------------------------------------------------- the page and data
def test_data_folder_rules_in_the_page(page, web_server):
    # path traversal typed into the path field: refused with a clear message, nothing opened
    open_file(page, "../outside.nii.gz")
    assert "'..' would leave the data folder" in error_text(page)
    assert page.locator("#volume-name").inner_text() == "no volume open"
    # a symbolic link leading outside the data folder: refused too (and not listed)
    open_file(page, "escape.nii.gz")
    assert "link that points outside" in wait_text(page, "#error-alert", "link")
    listed = page.locator("#data-files .ca-data-file").all_inner_texts()
    assert any("cardiac.nii.gz" in t for t in listed) and not any("escape" in t for t in listed)
    # an oversize upload through the page's file input: refused with the limit in the message
    big = web_server["data"].parent / "big.nii.gz"
    big.write_bytes(b"\x1f\x8b" + b"\0" * (web_server["max_upload_mb"] * 2**20 + 10))
    page.set_input_files("#data-upload", str(big))
    assert "over the limit" in wait_text(page, "#error-alert", "limit")
    assert not (web_server["data"] / "uploads" / "big.nii.gz").exists()


def test_a_click_reaches_the_server_after_the_edits_made_before_it(page, web_server):
    """trame's client sends a state change only while no call to the server is pending, and a
    button's trigger at once: with a call pending, "open as: label map" chosen and then Open
    must still open the file as chosen, not by the guess the server held before the choice
    (serve/ordered_triggers.js)."""
    assert open_file(page, "brain.nii.gz") == ""
    set_state(page, "ca_data_open_as", "")  # what the server holds before the choice
    set_state(page, "ca_message", "")
    set_state(page, "ca_error", "")
    page.fill("#data-path", "brain_lesion.seg.nrrd")
    page.evaluate("() => window.trame.client.beginBusy()")  # a call to the server is pending
    try:
        page.evaluate("() => window.trame.state.set('ca_data_open_as', 'labelmap')")  # as the chooser sets it
        assert page.evaluate("() => window.trame.state.dirtyKeys.has('ca_data_open_as')"), "the choice waits in the page"
        page.click("#data-open")
        page.wait_for_function("() => window.trame.state.get('ca_message') || window.trame.state.get('ca_error')")
    finally:
        page.evaluate("() => window.trame.client.endBusy()")
        set_state(page, "ca_data_open_as", "")  # the page is shared with the other browser tests
    assert page.evaluate("() => window.trame.state.get('ca_error')") == ""
    message = page.evaluate("() => window.trame.state.get('ca_message')")
    assert message.startswith("opened brain_lesion.seg.nrrd as ") and message.endswith("(as chosen)"), message


def test_upload_opens_volume_and_window_level_changes_pixels(page, web_server):
    page.set_input_files("#data-upload", str(web_server["data"] / "cardiac.nii.gz"))
    wait_text(page, "#volume-name", "cardiac")
    assert (web_server["data"] / "uploads" / "cardiac.nii.gz").exists()
    before = wait_view(page, "Red", lambda rgb: rgb.mean() > 10, "the slice view shows the image")
    # narrow the window from the display panel: the same view gets brighter
    open_tool(page, "display")
    lo, hi = [number(t) for t in page.locator("#display-wl-text").inner_text().split("..")]
    set_state(page, "ca_display_wl", [lo, lo + (hi - lo) / 4])
    wait_view(page, "Red", lambda rgb: rgb.mean() > before.mean() + 5, "a narrower window brightens the view")
    # volume rendering on: the heart appears in the 3D view (over its plain background); off: gone again
    empty = view_pixels(page, "ThreeD")
    set_state(page, "ca_display_vr", True)
    changed = lambda rgb: rgb.shape == empty.shape and (np.abs(rgb - empty).max(axis=-1) > 30).mean() > 0.01  # noqa: E731
    wait_view(page, "ThreeD", changed, "volume rendering shows the volume in 3D", timeout=60_000)
    set_state(page, "ca_display_vr", False)
    wait_view(page, "ThreeD", lambda rgb: not changed(rgb), "volume rendering off leaves the 3D view empty")
    # layout switch: "Axial Only" keeps the Red view and drops the others
    set_state(page, "LayoutButtonState__current_layout_id", 'Axial Only')
    page.wait_for_selector(".ca-view-Green", state="detached")
    assert view_box(page, "Red").is_visible()
    set_state(page, "LayoutButtonState__current_layout_id", 'Axial Primary')
    page.wait_for_selector(".ca-view-Green", state="attached")


def test_dicom_folder_and_zipped_dicom_upload(page, web_server):
    open_tool(page, "data")
    page.locator("#data-files .ca-data-file", has_text="cardiac_dicom").click()
    wait_text(page, "#volume-name", "cardiac_dicom")
    archive = web_server["data"].parent / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((web_server["data"] / "cardiac_dicom").iterdir()):
            zf.write(f, f"series/{f.name}")
    page.set_input_files("#data-upload", str(archive))
    wait_text(page, "#volume-name", "^series$")
    assert (web_server["data"] / "uploads" / "series" / "series").is_dir()


def test_paint_erase_and_undo(page, web_server):
    open_file(page, "brain.nii.gz")
    wait_text(page, "#volume-name", "brain")
    open_file(page, "brain_lesion.seg.nrrd")
    open_tool(page, "editor")
    start = int(number(wait_text(page, "#editor-voxels", r"\d+ voxels")))
    assert start > 0
    box = view_box(page, "Red").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def stroke() -> None:
        page.mouse.move(cx - 60, cy - 30)
        page.mouse.down()
        for step in range(12):
            page.mouse.move(cx - 60 + 10 * step, cy - 30 + 5 * step)
            page.wait_for_timeout(30)
        page.mouse.up()

    def wait_count(op: str, value: int) -> int:
        page.wait_for_function(f"() => /(\\d+) voxels/.exec(document.querySelector('#editor-voxels').textContent)[1] {op} {value}")
        return int(number(page.locator("#editor-voxels").inner_text()))

    page.locator("#panel-editor .mdi-brush").first.click()
    stroke()
    painted = wait_count(">", start)
    # the eraser along the same path takes voxels away again
    page.locator("#panel-editor .mdi-eraser").first.click()
    stroke()
    wait_count("<", painted)
    # undo twice: the erase, then the paint
    page.locator(".mdi-undo").first.click()
    assert wait_count("==", painted) == painted
    page.locator(".mdi-undo").first.click()
    wait_count("==", start)


def editor_voxels(page) -> int:
    return int(number(page.locator("#editor-voxels").inner_text()))


def type_number(page, field, value: float, state_key: str, timeout: float = 30_000) -> None:
    """Type ``value`` into the number field ``field`` (over its selected text, then Tab) until
    the server's state ``state_key`` holds it, and still holds it a moment later.

    Choosing an effect or a mode makes the server send that effect's own parameters back a
    little later; when they arrive after the typing they overwrite the field (seen under load),
    so the value is typed again, as a user would, until it sticks."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout  # not imported when the browser tests skip

    check = f"(v) => Number(window.trame.state.get('{state_key}')) === v"
    deadline = time.monotonic() + timeout / 1000.0
    while True:
        field.click()
        field.press("Control+A")
        field.press_sequentially(str(value))  # a fill would land beside a formatted "3.00"
        field.press("Tab")
        try:
            page.wait_for_function(check, arg=value, timeout=3_000)
            page.wait_for_timeout(500)
            if page.evaluate(check, value):
                return
        except PlaywrightTimeout:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{state_key} never became {value} (not within {timeout / 1000:.0f} s)")


def wait_editor_voxels(page, op: str, value: int) -> int:
    """Wait until the edited segmentation's voxel count (``#editor-voxels``) ``op`` ``value``."""
    page.wait_for_function(f"() => /(\\d+) voxels/.exec(document.querySelector('#editor-voxels').textContent)[1] {op} {value}")
    return editor_voxels(page)


def test_islands_and_smoothing_then_undo(page, web_server):
    """The segment editor's islands ("remove small islands") and smoothing (median) effects,
    through the page's own buttons and fields, and undo of each."""
    from scipy import ndimage

    open_file(page, "brain.nii.gz")
    wait_text(page, "#volume-name", "brain")
    open_file(page, "brain_lesion.seg.nrrd")
    open_tool(page, "editor")
    lesion = np.asarray(web_server["cases"]["brain"].lesion.array) > 0
    components, n = ndimage.label(lesion)
    smallest = int(np.bincount(components.ravel())[1:].min())  # the lesion's own smallest island
    start = int(number(wait_text(page, "#editor-voxels", r"\d+ voxels")))
    assert start == int(lesion.sum()) and n >= 1
    # a short stroke in the lower right of the axial view, away from the lesion: a separate island
    box = view_box(page, "Red").bounding_box()
    x0 = box["x"] + box["width"] / 2 + 0.22 * min(box["width"], box["height"])
    y0 = box["y"] + box["height"] / 2 + 0.22 * min(box["width"], box["height"])
    page.locator("#panel-editor .mdi-brush").first.click()
    # a flat brush (sphere off), near its smallest size: the stroke stays on this slice, small
    if page.evaluate("() => window.trame.state.get('PaintEffectState__use_sphere_brush')"):
        page.locator("#panel-editor .mdi-sphere").first.click()
    page.wait_for_function("() => window.trame.state.get('PaintEffectState__use_sphere_brush') === false")
    # the brush size slider near its smallest (3 of 1-30): as the slider sets it
    set_state(page, "PaintEffectState__brush_diameter_slider__SliderState__value", 3)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for step in range(6):
        page.mouse.move(x0 + 6 * step, y0 + 3 * step)
        page.wait_for_timeout(30)
    page.mouse.up()
    painted = wait_editor_voxels(page, ">", start)
    island = painted - start
    minimum = (island + smallest) // 2
    assert island < minimum < smallest, f"the stroke ({island} voxels) must be smaller than the lesion's islands ({smallest})"
    # islands: "Remove small" below `minimum` voxels takes the stroke away, keeps the whole lesion
    page.locator("#panel-editor .mdi-scatter-plot").first.click()
    page.locator("#panel-editor button", has_text="Remove small").click()
    type_number(page, page.locator("#panel-editor").get_by_label("Minimum size"), minimum, "IslandsState__minimum_size")
    page.locator("#panel-editor button", has_text="Apply").click()
    assert wait_editor_voxels(page, "==", start) == start
    # smoothing: a median of 5 mm (3 voxels at 2 mm) rounds the lesion's voxel corners off
    page.locator("#panel-editor .mdi-square-rounded-outline").first.click()
    type_number(page, page.locator("#panel-editor").get_by_label("Kernel size (mm)"), 5, "SmoothingState__kernel_size")
    page.locator("#panel-editor button", has_text="Apply").click()
    smoothed = wait_editor_voxels(page, "!=", start)
    assert 0 < smoothed < start, "a median of a blobby lesion removes more corner voxels than it fills"
    # undo: the smoothing, then the islands (the stroke is back)
    page.locator(".mdi-undo").first.click()
    assert wait_editor_voxels(page, "==", start) == start
    page.locator(".mdi-undo").first.click()
    assert wait_editor_voxels(page, "==", painted) == painted
    page.locator("#panel-editor .mdi-cursor-default").first.click()  # no tool: clicks in the views paint nothing


# ---------------------------------------------------------------------- the three panels
def table_rows(page, table_id: str) -> list:
    return page.locator(f"#{table_id} tbody tr").all()


def test_segcorrect_run_review_and_save(page, web_server):
    open_file(page, "cardiac.nii.gz")
    wait_text(page, "#volume-name", "cardiac")
    open_file(page, "cardiac_bad.seg.nrrd")
    open_tool(page, "segcorrect")
    # correct the damaged mask (the corrector's own workflow, no segmenter)
    find = "window.trame.state.get('ca_segcorrect_input_segs').find(i => i.title.startsWith('cardiac_bad'))"
    page.wait_for_function(f"() => {find}")
    seg_id = page.evaluate(f"() => {find}.value")
    set_state(page, "ca_segcorrect_input_seg", seg_id)
    # Cancel while it runs: the page says so and nothing is applied
    page.click("#segcorrect-run")
    page.wait_for_function("() => window.trame.state.get('ca_segcorrect_running')")
    # the progress bar moves while it runs (the engine reports its steps)
    page.wait_for_function(
        "() => Number(document.querySelector('#segcorrect-progress').getAttribute('aria-valuenow')) > 0", timeout=60_000
    )
    page.click("#segcorrect-cancel")
    assert "cancelled" in wait_text(page, "#segcorrect-error", "cancelled")
    assert page.evaluate("() => window.trame.state.get('ca_segcorrect_runs')") == 0
    assert not page.evaluate("() => window.trame.state.get('ca_segcorrect_has_result')")
    run_panel(page, "segcorrect")
    total = int(number(wait_text(page, "#segcorrect-voxels", r"\d+ voxels")))
    rows = page.evaluate("() => window.trame.state.get('ca_segcorrect_rows')")
    assert len(rows) == web_server["cases"]["cardiac"].image.shape[0]
    assert total == sum(r["voxels"] for r in rows) > 0
    # the result is an overlay in the slice view: its opacity slider changes the pixels
    wait_view(page, "Red", lambda rgb: coloured_fraction(rgb) > 0.002, "the segmentation's colours over the cardiac image")
    set_state(page, "ca_segcorrect_opacity", 0)
    wait_view(page, "Red", lambda rgb: coloured_fraction(rgb) < 0.001, "opacity 0 hides the segmentation overlay")
    set_state(page, "ca_segcorrect_opacity", 0.5)
    # a slice where the corrector changed the mask: flip its decision, the segmentation changes
    dice = next(c for c in rows[0] if "dice" in c.lower())
    changed = [i for i, r in enumerate(rows) if r[dice] not in ("", None) and float(r[dice]) < 0.999]
    assert changed, f"the corrector changed no slice of a damaged mask: {rows}"
    i = changed[0]
    before = rows[i]
    button = "reject" if before["decision"].startswith("corrected") else "accept"
    page.click(f"#segcorrect-{button}-{i}")
    page.wait_for_function(
        f"() => window.trame.state.get('ca_segcorrect_rows')[{i}].decision !== '{before['decision']}'"
    )
    after = page.evaluate(f"() => window.trame.state.get('ca_segcorrect_rows')[{i}]")
    assert after["voxels"] != before["voxels"], "accept / reject must change the final segmentation on that slice"
    # "next best" reaches the logic: the panel's gate strategy ranks no candidates, so it says so
    page.click(f"#segcorrect-next-{i}")
    assert "no next best" in wait_text(page, "#segcorrect-error", "no next best")
    # save: .seg.nrrd, NIfTI and the JSON report land in <data>/results, downloadable
    page.click("#segcorrect-save")
    page.wait_for_selector("#segcorrect-saved a")
    names = page.locator("#segcorrect-saved a").all_inner_texts()
    assert {Path(n).suffix for n in names} >= {".nrrd", ".gz", ".json"}
    report = json.loads((web_server["data"] / [n for n in names if n.endswith(".json")][0]).read_text())
    assert rows[i]["slice"] == i + 1, "rows are numbered from 1, as the slice views number slices"
    assert report["decisions"][rows[i]["slice"] - 1] == after["decision"]
    assert [r["slice"] for r in report["slices"]] == list(range(len(rows))), "the report keeps the voxel index"
    with page.expect_download() as info:
        page.locator("#segcorrect-saved a", has_text=".json").click()
    assert json.loads(Path(info.value.path()).read_text())["final_voxels"] == report["final_voxels"]


def test_pet_probability_matches_cli_and_heat_map_shows(page, web_server):
    open_file(page, "pet.nii.gz")
    wait_text(page, "#volume-name", "pet")
    open_file(page, "pet_lesion.seg.nrrd")  # the lesion VOI (grey: colour can only be the heat map)
    open_tool(page, "pet")
    set_state(page, "ca_pet_units", "suv")  # the sample PET is in SUV; a NIfTI does not say it
    set_state(page, "ca_pet_lesion", segmentation_id(page, "ca_pet_masks", "pet_lesion"))
    page.click("#pet-lesion-go")
    page.wait_for_timeout(1000)
    assert coloured_fraction(view_pixels(page, "Red")) < 0.001, "the PET and its VOI alone are grey"
    run_panel(page, "pet")
    p_web = number(wait_text(page, "#pet-probability", r"\d"))
    assert 0.0 <= p_web <= 1.0
    # the command line on the same file and VOI gives the same numbers (to the 3 decimals shown)
    out = web_server["data"].parent / "pet_cli.json"
    assert cli_main(["pet", str(web_server["data"] / "pet.nii.gz"), "--units", "suv",
                     "--lesion", str(web_server["data"] / "pet_lesion.seg.nrrd"), "--json", str(out)]) == 0
    cli = json.loads(out.read_text())
    assert abs(cli["probability_recurrence"] - p_web) <= 0.0015
    static = {r["quantity"]: r["value"] for r in page.evaluate("() => window.trame.state.get('ca_pet_static_rows')")}
    assert page.locator("#pet-static tbody tr").count() >= 3  # SUVmax / TBRmax / TBRmean
    suv_key = next(k for k in static if k.lower() in ("suvmax", "suv_max"))
    assert abs(float(static[suv_key]) - float(cli["static"][suv_key])) <= 0.0015, (static, cli["static"])
    # the Grad-CAM heat colours are over the PET in the slice view where the lesion is
    set_state(page, "ca_pet_threshold", 0.05)
    page.click("#pet-lesion-go")
    heat = wait_view(page, "Red", lambda rgb: coloured_fraction(centre(rgb)) > 0.5, "heat-map colours over the lesion")
    # a higher threshold shows less of the map; opacity 0 none of it
    set_state(page, "ca_pet_threshold", 0.9)
    wait_view(page, "Red", lambda rgb: coloured_fraction(rgb) < coloured_fraction(heat) - 0.005,
              "a higher threshold shows less of the map")
    set_state(page, "ca_pet_opacity", 0)
    wait_view(page, "Red", lambda rgb: coloured_fraction(rgb) < 0.001, "opacity 0 hides the heat map")
    set_state(page, "ca_pet_opacity", 0.5)
    # save: the map (NIfTI) and the JSON report with the probability shown
    page.click("#pet-save")
    page.wait_for_selector("#pet-saved a")
    names = page.locator("#pet-saved a").all_inner_texts()
    assert any(n.endswith("_gradcam.nii.gz") for n in names) and any(n.endswith(".json") for n in names), names
    report = json.loads((web_server["data"] / next(n for n in names if n.endswith(".json"))).read_text())
    assert abs(report["probability"] - p_web) <= 0.0005


def wait_slice_position(page, tag: str, lo: float, hi: float, inside: bool = True) -> None:
    """Wait until the slice position (mm along the normal, the view's slider) of the slice view
    ``tag`` is inside (or outside) ``[lo, hi]``."""
    page.wait_for_function(
        "([tag, lo, hi, inside]) => { const e = document.querySelector(`.ca-view-${tag}`).parentElement"
        ".querySelector('.slice-slider [role=slider]'); const v = Number(e.getAttribute('aria-valuenow'));"
        " return (v >= lo && v <= hi) === inside; }",
        arg=[tag, lo, hi, inside],
    )


def test_pet_without_a_voi_adds_the_found_voi_and_goes_to_it(page, web_server):
    """No VOI chosen: the engine's VOI (1.6 x background) becomes a segmentation the page offers,
    and "go to lesion VOI" centres the views on it."""
    from clinicalai.volume.io import read_volume

    open_file(page, "pet.nii.gz")
    pet_name = wait_text(page, "#volume-name", "pet").strip()  # "pet", or "pet_1" after an earlier test
    open_tool(page, "pet")
    set_state(page, "ca_pet_units", "suv")
    set_state(page, "ca_pet_lesion", "")
    run_panel(page, "pet")
    assert f"{pet_name} lesion VOI" in wait_text(page, "#pet-lesion-voi", "lesion VOI")
    voi_id = page.evaluate("() => window.trame.state.get('ca_pet_lesion_voi')")
    assert voi_id and voi_id == segmentation_id(page, "ca_pet_masks", f"{pet_name} lesion VOI")
    assert page.evaluate("() => window.trame.state.get('ca_pet_lesion')") == "", "the VOI choice is left as the user set it"
    static = {r["quantity"]: r["value"] for r in page.evaluate("() => window.trame.state.get('ca_pet_static_rows')")}
    assert static["lesion VOI"] == "threshold 1.6 x background"
    # the saved VOI is the engine's, voxel for voxel (the command line on the same file)
    page.click("#pet-save")
    page.wait_for_selector("#pet-saved a")
    names = page.locator("#pet-saved a").all_inner_texts()
    saved = read_volume(web_server["data"] / next(n for n in names if n.endswith("_lesion_voi.seg.nrrd")))
    cli_voi = web_server["data"].parent / "pet_cli_voi.nii.gz"
    assert cli_main(["pet", str(web_server["data"] / "pet.nii.gz"), "--units", "suv", "--voi-out", str(cli_voi)]) == 0
    engine = read_volume(cli_voi)
    assert saved.same_grid(engine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(saved.array) > 0, np.asarray(engine.array) > 0)
    # axial positions (mm, S) of the VOI's slices: the Red view starts outside them...
    k = np.unique(np.argwhere(np.asarray(engine.array) > 0)[:, 0])
    lps = engine.grid.index_to_lps() @ np.stack([np.zeros_like(k), np.zeros_like(k), k, np.ones_like(k)]).astype(float)
    s_lo, s_hi = float(lps[2].min()), float(lps[2].max())
    set_state(page, "ca_pet_opacity", 0)  # no heat map: cyan can only be the VOI
    track = view_box(page, "Red").locator(".slice-slider").first.bounding_box()
    page.mouse.click(track["x"] + 0.05 * track["width"], track["y"] + track["height"] / 2)  # the Red slider, near its end
    wait_slice_position(page, "Red", s_lo - 1.0, s_hi + 1.0, inside=False)
    # ...and "go to lesion VOI" (no VOI chosen) puts it on the found VOI, drawn in its colour
    assert page.locator("#pet-lesion-go").is_enabled()
    page.click("#pet-lesion-go")
    wait_slice_position(page, "Red", s_lo - 1e-3, s_hi + 1e-3)

    def cyan_at_centre(rgb):
        # the VOI is drawn as its outline (a fill hid the Grad-CAM peak): a cyan ring around the centre
        c = centre(rgb, half=0.15)
        return int(((c[..., 2] - c[..., 0] > 40) & (c[..., 1] - c[..., 0] > 40)).sum()) >= 20

    wait_view(page, "Red", cyan_at_centre, "the found VOI (cyan) under the centre of the Red view")
    set_state(page, "ca_pet_opacity", 0.5)


def test_attribution_maps_side_by_side_with_metrics(page, web_server):
    open_file(page, "brain.nii.gz")
    wait_text(page, "#volume-name", "brain")
    open_file(page, "brain_lesion.seg.nrrd")  # becomes the reference lesion
    open_tool(page, "attribution")
    # an attribution map of the bundled classifier + the bundled generative model's anomaly map
    set_state(page, "ca_attribution_methods", ["gradient"])
    assert page.evaluate("() => window.trame.state.get('ca_attribution_model')"), "a bundled classifier is chosen"
    assert page.evaluate("() => window.trame.state.get('ca_attribution_anomaly_model')"), "a bundled generative model is chosen"
    run_panel(page, "attribution")
    metrics = page.evaluate("() => window.trame.state.get('ca_attribution_metrics')")
    assert [m["map"] for m in metrics] == ["gradient", "anomaly"]
    for m in metrics:
        for key in ("dice", "auroc", "auprc"):
            assert 0.0 <= float(m[key]) <= 1.0, m
    assert page.locator("#attribution-metrics tbody tr").count() == 2
    assert page.locator("#attribution-correlations tbody tr").count() == 1
    page.wait_for_timeout(3500)  # the side-by-side views are fitted again 1 s and 3 s after the result
    for tag in ("Red", "Map2"):  # one map per view, side by side over the image
        wait_view(page, tag, lambda rgb: coloured_fraction(rgb) > 0.002, f"map colours in the {tag} view")
    # the linked views centred on the reference lesion: the anomaly map (Map2) is coloured there
    page.click("#attribution-lesion-go")
    wait_view(page, "Map2", lambda rgb: coloured_fraction(centre(rgb)) > 0.5, "anomaly-map colours over the lesion")
    # save: each map as NIfTI and the JSON report with the metrics shown
    page.click("#attribution-save")
    page.wait_for_selector("#attribution-saved a")
    names = page.locator("#attribution-saved a").all_inner_texts()
    assert sum(n.endswith(".nii.gz") for n in names) == 2 and any(n.endswith(".json") for n in names), names
    report = json.loads((web_server["data"] / next(n for n in names if n.endswith(".json"))).read_text())
    assert [m["map"] for m in report["metrics"]] == ["gradient", "anomaly"]
    # the anomaly map's polarity: offered on the page, checked on the server
    assert page.locator("#attribution-polarity").is_visible()
    offered = [p["value"] for p in page.evaluate("() => window.trame.state.get('ca_attribution_polarities')")]
    assert offered == ["", "both", "brighter", "darker"]
    set_state(page, "ca_attribution_anomaly_polarity", "hot")
    page.click("#attribution-run")
    page.wait_for_function("() => (window.trame.state.get('ca_attribution_error') || '').includes('hot')")
    assert "is not one of the choices offered" in page.evaluate("() => window.trame.state.get('ca_attribution_error')")
    set_state(page, "ca_attribution_anomaly_polarity", "")


def test_model_paths_set_from_the_page_are_checked(page, web_server):
    """Any client can set the page state -- the list of choices too: a model that the server
    did not offer is refused, whatever the page's copy of the list says (issue 15, item 2)."""
    open_file(page, "brain.nii.gz")
    wait_text(page, "#volume-name", "brain")
    open_tool(page, "attribution")
    offered = page.evaluate("() => window.trame.state.get('ca_attribution_model')")
    planted = "uploads/series/model.ts"
    for bad in ["../outside.nii.gz", "/etc/passwd", "brain.nii.gz", planted]:
        set_state(page, "ca_attribution_models", [{"title": "mine", "value": bad}])
        set_state(page, "ca_attribution_model", bad)
        page.click("#attribution-run")
        page.wait_for_function(f"() => (window.trame.state.get('ca_attribution_error') || '').includes({json.dumps(bad)})")
        assert "is not one of the choices offered" in page.evaluate("() => window.trame.state.get('ca_attribution_error')")
        assert "is not one of the choices offered" in page.locator("#attribution-error").inner_text()
        # the model card is not read for it either
        assert "is not one of the choices offered" in page.evaluate("() => window.trame.state.get('ca_attribution_card')")
    set_state(page, "ca_attribution_model", offered)
