"""Issue #16, item 2, in a real browser: "Open as". A brain lesion saved as a plain NIfTI mask
and a cardiac label map open as masks (guessed from their whole-number values and grids), the
brain stays on show, the lesion is drawn over it and offered as AttributionViewer's reference
lesion and PetRecurrence's masks; the cardiac mask, on another grid, is offered for neither, and
the chooser says why. The user's choice overrides the guess and is checked on the server."""

from __future__ import annotations

import pytest

from clinicalai.web.page_driver import coloured_fraction, open_file, open_tool, set_state, view_pixels, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def titles(page, key: str) -> list:
    return [item["title"] for item in state(page, key)]


def test_masks_open_as_masks_of_the_image_on_their_grid(page, web_server):
    try:
        _check_open_as(page)
    finally:
        set_state(page, "ca_data_open_as", "")  # the page is shared with the other browser tests


def _check_open_as(page) -> None:
    assert open_file(page, "brain.nii.gz") == ""
    wait_text(page, "#volume-name", "^brain$")
    # the lesion as a 0.0 / 1.0 float NIfTI: guessed a mask of the brain; the brain stays on show
    assert open_file(page, "brain_lesion_mask.nii.gz") == ""
    message = state(page, "ca_message")
    assert "as a label map / mask of brain" in message and "guessed" in message, message
    assert page.locator("#volume-name").inner_text() == "brain"
    # a cardiac label map: on no open image's grid; opened as a mask anyway, and said so, once
    assert open_file(page, "cardiac_labels.nii.gz") == ""
    assert "on no open image's grid" in state(page, "ca_message")
    assert page.locator("#volume-name").inner_text() == "brain"

    # AttributionViewer's reference lesion: the brain's lesion, chosen; the cardiac mask not offered
    open_tool(page, "attribution")
    offered = titles(page, "ca_attribution_masks")
    assert "brain_lesion_mask (label map)" in offered, offered
    assert not any(t.startswith("cardiac") for t in offered), offered
    assert "1 on another image's grid not offered" in wait_text(page, "#attribution-masks-note", "not offered")
    lesion = next(i["value"] for i in state(page, "ca_attribution_masks") if i["title"].startswith("brain_lesion_mask"))
    assert state(page, "ca_attribution_lesion") == lesion
    # PetRecurrence's brain-mask / lesion VOI choosers: the same masks of the brain only
    assert not any(t.startswith("cardiac") for t in titles(page, "ca_pet_masks"))
    # the lesion outline is drawn over the brain where the views are centred on it
    page.click("#attribution-lesion-go")
    page.wait_for_timeout(2500)  # the views settle (app.render_views)
    assert coloured_fraction(view_pixels(page, "Red")) > 0.0005, "the lesion's outline over the brain"

    # the user's choice overrides the guess: the cardiac labels opened as an image are shown,
    # and their own masks are offered there, not the brain's lesion
    set_state(page, "ca_data_open_as", "image")
    assert open_file(page, "cardiac_labels.nii.gz") == ""
    wait_text(page, "#volume-name", "^cardiac_labels")
    assert "as an image (as chosen)" in state(page, "ca_message")
    offered = titles(page, "ca_attribution_masks")
    assert any(t.startswith("cardiac_labels") for t in offered) and not any(t.startswith("brain") for t in offered), offered
    assert state(page, "ca_attribution_lesion") == "", "the brain's lesion is no longer the chosen reference"
    # a value the server did not offer is refused, and nothing is opened
    set_state(page, "ca_data_open_as", "volume")
    assert "not one of the choices offered" in open_file(page, "brain_lesion_mask.nii.gz")
    assert page.locator("#volume-name").inner_text().startswith("cardiac_labels")
