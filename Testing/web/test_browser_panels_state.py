"""Issue #16, items 4 and 5, in a real browser. Item 5: a result leaves the screen with the
volume it was made on (P(recurrence), SegCorrect's review and its labels over the next image),
and messages stay in their panel, each with a close button. Item 4: every AttributionViewer
map reachable and its view labelled with it, the classifier's prediction shown, Save inside
the drawer, the threshold slider full width with its value."""

from __future__ import annotations

import pytest

from clinicalai.web.page_driver import coloured_fraction, open_file, open_tool, run_panel, segmentation_id, set_state, view_pixels, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def test_results_and_messages_leave_with_their_volume_and_panel(page, web_server):
    # a data-panel error is shown in the data panel only, and closes
    assert open_file(page, "no_such_file.nii.gz")
    assert page.locator("#error-alert").is_visible()
    open_tool(page, "pet")
    assert page.locator("#error-alert").count() == 0, "the data panel's error must not sit on top of the PET panel"
    open_tool(page, "data")
    page.locator("#error-alert button").click()
    page.wait_for_function("() => !window.trame.state.get('ca_error')")

    # P(recurrence) of a PET: gone once another volume is opened
    assert open_file(page, "pet.nii.gz") == ""
    set_state(page, "ca_pet_units", "suv")
    assert run_panel(page, "pet") == ""
    wait_text(page, "#pet-probability", r"\d")
    assert open_file(page, "cardiac.nii.gz") == ""
    open_tool(page, "pet")
    assert not state(page, "ca_pet_has_result") and page.locator("#pet-probability").count() == 0

    # a PET-panel error: in the PET panel, with a close button; another volume clears it too
    assert run_panel(page, "pet")  # no units on the cardiac NIfTI
    assert page.locator("#pet-error").is_visible()
    page.locator("#pet-error button").click()
    page.wait_for_function("() => !window.trame.state.get('ca_pet_error')")
    assert run_panel(page, "pet")
    open_tool(page, "segcorrect")
    assert page.locator("#segcorrect-error").count() == 0 and page.locator("#error-alert").count() == 0

    # SegCorrect's review and its labels: not over the brain opened next
    assert open_file(page, "cardiac_bad.seg.nrrd") == ""
    set_state(page, "ca_segcorrect_input_seg", segmentation_id(page, "ca_segcorrect_input_segs", "cardiac_bad"))
    assert run_panel(page, "segcorrect") == ""
    assert state(page, "ca_segcorrect_has_result")
    assert open_file(page, "brain.nii.gz") == ""
    assert not state(page, "ca_segcorrect_has_result") and state(page, "ca_segcorrect_rows") == []
    assert not state(page, "ca_pet_error"), "the PET panel's error was about the previous volume"
    page.wait_for_timeout(2500)  # the views settle (app.render_views)
    assert coloured_fraction(view_pixels(page, "Red")) < 0.001, "no cardiac labels over the brain"


def test_attribution_every_map_labelled_with_prediction_save_and_threshold(page, web_server):
    assert open_file(page, "brain.nii.gz") == ""
    open_tool(page, "attribution")
    # 3 methods + the anomaly map: 4 maps for 3 views
    set_state(page, "ca_attribution_methods", ["gradient", "gradient-x-input", "gradcam"])
    assert state(page, "ca_attribution_anomaly_model")
    # the integrated-gradients baseline: the server's list; a name it did not offer is refused
    # on the server before anything runs
    assert [b["value"] for b in state(page, "ca_attribution_baselines")] == ["", "zero", "blur", "mean", "mirror"]
    set_state(page, "ca_attribution_baseline", "noise")
    assert "not one of the choices offered" in run_panel(page, "attribution")
    assert not state(page, "ca_attribution_has_result")
    set_state(page, "ca_attribution_baseline", "blur")
    assert run_panel(page, "attribution", timeout_ms=240_000) == ""
    maps = state(page, "ca_attribution_maps")
    assert len(maps) == 4
    names = {m["value"]: m["title"] for m in maps}
    # each view labelled with the name of the map it shows
    for i, tag in enumerate(("Red", "Map2", "Map3")):
        shown = state(page, f"ca_attribution_view_map_{i}")
        assert shown == maps[i]["value"]
        assert wait_text(page, f"#view-label-{tag}", ".+").strip() == names[shown]
    # the 4th (the anomaly map) is reachable: chosen for the third view, labelled so
    anomaly = next(m for m in maps if "anomaly" in m["title"])
    set_state(page, "ca_attribution_view_map_2", anomaly["value"])
    wait_text(page, "#view-label-Map3", "anomaly")
    # a map that was not offered is refused on the server
    set_state(page, "ca_attribution_view_map_1", "vtkMRMLScalarVolumeNode999")
    wait_text(page, "#attribution-error", "not one of the choices offered")
    # the classifier's prediction: class and probability
    wait_text(page, "#attribution-prediction", r"prediction: \w+ \((P|highest P over slices) = [01]\.\d{3}\)")
    # Save inside the drawer; the threshold slider full width, its value shown
    drawer = page.locator(".v-navigation-drawer").first.bounding_box()
    save = page.locator("#attribution-save").bounding_box()
    assert save["x"] + save["width"] <= drawer["x"] + drawer["width"], (save, drawer)
    assert page.locator("#attribution-threshold-slider .v-slider-track").bounding_box()["width"] > 0.5 * drawer["width"]
    assert page.locator("#attribution-threshold-slider-value").inner_text().strip() == "0.50"
    set_state(page, "ca_attribution_threshold", 0.35)
    wait_text(page, "#attribution-threshold-slider-value", "0.35")
    # another volume: no map, label or prediction of the brain stays
    assert open_file(page, "cardiac.nii.gz") == ""
    assert not state(page, "ca_attribution_has_result") and state(page, "ca_view_labels") == {}
    assert page.locator("#view-label-Map2").count() == 0
