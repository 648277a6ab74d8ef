"""Issue #16 item 6 in a real browser: a run on an input that does not fit the model asks
first. The PET ensemble given the cardiac MRI (a field of view far from the brain PETs it
was trained on): a dialog lists the problem; Cancel changes nothing; Run anyway runs, and
the warning is shown with the result. The confirmation is the server's: a page that opens
the dialog itself, or presses "Run anyway" with nothing asked, runs nothing.

(The sample brain MR does not raise a question with SegCorrect's cardiac segmenter: the
NIfTI has no modality and the cardiac-unet card no field of view, so ``check_fit`` finds
nothing to ask about; see the branch report.)"""

from __future__ import annotations

import pytest

from clinicalai.web.page_driver import open_file, open_tool, set_state, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def _scene_nodes(page) -> int:
    return page.evaluate("() => (window.trame.state.get('ca_pet_masks') || []).length")


def test_pet_on_a_cardiac_mri_asks_first_cancel_changes_nothing_run_anyway_warns(page, web_server):
    assert open_file(page, "cardiac.nii.gz") == ""
    open_tool(page, "pet")
    set_state(page, "ca_pet_units", "suv")
    runs, masks = state(page, "ca_pet_runs"), _scene_nodes(page)
    page.click("#pet-run")
    page.wait_for_selector("#fit-dialog", timeout=60_000)
    problems = page.locator("#fit-dialog .fit-problem").all_inner_texts()
    assert any("far from the 256 x 256 x 168 mm model pet-cnn3d-fold0 was trained on" in p for p in problems), problems
    assert not state(page, "ca_pet_running")

    # Cancel: the dialog goes, nothing ran, nothing was added
    page.click("#fit-cancel")
    page.wait_for_function("() => !window.trame.state.get('ca_pet_fit_dialog')")
    page.wait_for_timeout(500)
    assert state(page, "ca_pet_runs") == runs and not state(page, "ca_pet_has_result")
    assert _scene_nodes(page) == masks and not state(page, "ca_pet_lesion_voi")

    # a page that opens the dialog itself and presses "Run anyway": nothing was asked, nothing runs
    set_state(page, "ca_pet_fit_dialog", True)
    page.click("#fit-run-anyway")
    assert "nothing to confirm" in wait_text(page, "#pet-error", "nothing to confirm")
    assert state(page, "ca_pet_runs") == runs and not state(page, "ca_pet_running")

    # Run again, then Run anyway: the run finishes and the problem is among its warnings, once
    set_state(page, "ca_pet_error", "")
    page.click("#pet-run")
    page.wait_for_selector("#fit-dialog", timeout=60_000)
    page.click("#fit-run-anyway")
    page.wait_for_function(f"() => window.trame.state.get('ca_pet_runs') > {runs} || window.trame.state.get('ca_pet_error')",
                           timeout=180_000)
    assert not state(page, "ca_pet_error")
    warnings = state(page, "ca_pet_warnings")
    assert sum("model pet-cnn3d-fold0 was trained on" in w for w in warnings) == 1, warnings
    assert "pet-cnn3d-fold0 was trained on" in wait_text(page, "#pet-warnings", "trained on")


def test_a_fitting_input_runs_without_a_question(page, web_server):
    assert open_file(page, "pet.nii.gz") == ""
    open_tool(page, "pet")
    set_state(page, "ca_pet_units", "suv")
    runs = state(page, "ca_pet_runs")
    page.click("#pet-run")
    page.wait_for_function(f"() => window.trame.state.get('ca_pet_runs') > {runs} || window.trame.state.get('ca_pet_error')",
                           timeout=180_000)
    assert not state(page, "ca_pet_error") and not state(page, "ca_pet_fit_dialog")
    assert page.locator("#fit-dialog").count() == 0


def test_classifier_list_puts_models_of_another_modality_last_for_a_dicom_mr(page, web_server):
    """Item 6's third point: an MR (the cardiac DICOM series says MR) is not offered the PET
    fold models first; they come last, marked "(PT model)"."""
    assert open_file(page, "cardiac_dicom") == ""
    open_tool(page, "attribution")
    page.wait_for_function("() => window.trame.state.get('ca_attribution_models').some(m => m.title.includes('(PT model)'))")
    titles = [m["title"] for m in state(page, "ca_attribution_models")][1:]  # after "(none)"
    marked = [t for t in titles if "(PT model)" in t]
    assert marked and all(t.startswith("pet-") for t in marked), titles
    assert titles[-len(marked):] == marked, titles
    assert not any("(PT model)" in t for t in titles[:-len(marked)])
