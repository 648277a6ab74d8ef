"""Issue #16, item 2, in a real browser: "Open as". A brain lesion saved as a plain NIfTI mask
and a cardiac label map open as masks (guessed from their whole-number values and grids), the
brain stays on show, the lesion is drawn over it and offered as AttributionViewer's reference
lesion and PetRecurrence's masks; the cardiac mask, on another grid, is offered for neither, and
the chooser says why; a label map on no open image's grid is opened as a mask with a message
saying so. The user's choice overrides the guess and is checked on the server."""

from __future__ import annotations

import pytest

from clinicalai.web.page_driver import coloured_fraction, open_file, open_tool, set_state, view_pixels, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def titles(page, key: str) -> list:
    return [item["title"] for item in state(page, key)]


def test_masks_open_as_masks_of_the_image_on_their_grid(page, web_server):
    from clinicalai.volume import write_volume

    # the cardiac labels moved 500 mm away: on the grid of no image this session opens
    labels = web_server["cases"]["cardiac"].labels
    x, y, z = labels.origin
    (web_server["data"] / "open_as").mkdir(exist_ok=True)
    write_volume(labels.with_array(labels.array.astype("uint8"), origin=(x + 500.0, y, z)),
                 web_server["data"] / "open_as" / "lonely_labels.nii.gz")
    try:
        _check_open_as(page)
    finally:
        set_state(page, "ca_data_open_as", "")  # the page is shared with the other browser tests


def _check_open_as(page) -> None:
    assert open_file(page, "brain.nii.gz") == ""
    brain = wait_text(page, "#volume-name", "^brain").strip()  # "brain_1" after the other tests
    # the lesion as a 0.0 / 1.0 float NIfTI: guessed a mask of the brain; the brain stays on show
    assert open_file(page, "brain_lesion_mask.nii.gz") == ""
    message = state(page, "ca_message")
    assert f"as a label map / mask of {brain} " in message and "guessed" in message, message
    assert page.locator("#volume-name").inner_text() == brain
    # the file list says what each file was opened as; one never opened, what it is before that
    kinds = {item["path"]: item["kind"] for item in state(page, "ca_data_files")}
    assert kinds["brain.nii.gz"] == "opened as image" and kinds["brain_lesion_mask.nii.gz"] == "opened as label map / mask"
    assert kinds["open_as/lonely_labels.nii.gz"] == "volume: image or mask, guessed when opened"
    # a cardiac label map: a mask too (of the cardiac image when another test opened it)
    assert open_file(page, "cardiac_labels.nii.gz") == ""
    assert "as a label map / mask" in state(page, "ca_message")
    assert page.locator("#volume-name").inner_text() == brain
    # a label map on no open image's grid: opened as a mask anyway, and said so, once
    assert open_file(page, "open_as/lonely_labels.nii.gz") == ""
    assert "on no open image's grid" in state(page, "ca_message")
    assert page.locator("#volume-name").inner_text() == brain

    # AttributionViewer's reference lesion: the brain's lesion, chosen; the cardiac mask not offered
    open_tool(page, "attribution")
    offered = titles(page, "ca_attribution_masks")
    assert "brain_lesion_mask (label map)" in offered, offered
    assert not any(t.startswith(("cardiac", "lonely")) for t in offered), offered
    wait_text(page, "#attribution-masks-note", r"([2-9]|\d\d+) on another image's grid not offered")
    lesion = next(i["value"] for i in state(page, "ca_attribution_masks") if i["title"].startswith("brain_lesion_mask"))
    assert state(page, "ca_attribution_lesion") == lesion
    # PetRecurrence's brain-mask / lesion VOI choosers: the same masks of the brain only
    assert not any(t.startswith(("cardiac", "lonely")) for t in titles(page, "ca_pet_masks"))
    # SegCorrect's "correct an existing mask": label maps too, of the image on show only
    offered = titles(page, "ca_segcorrect_input_segs")
    assert "brain_lesion_mask (label map)" in offered and not any(t.startswith(("cardiac", "lonely")) for t in offered), offered
    wait_text(page, "#segcorrect-masks-note", "on another image's grid not offered")
    # the lesion outline is drawn over the brain where the views are centred on it
    page.click("#attribution-lesion-go")
    page.wait_for_timeout(2500)  # the views settle (app.render_views)
    assert coloured_fraction(view_pixels(page, "Red")) > 0.0005, "the lesion's outline over the brain"

    # the user's choice overrides the guess: the lonely labels opened as an image are shown,
    # and their own mask is offered there, not the brain's lesion
    set_state(page, "ca_data_open_as", "image")
    assert open_file(page, "open_as/lonely_labels.nii.gz") == ""
    wait_text(page, "#volume-name", "^lonely_labels")
    assert "as an image (as chosen)" in state(page, "ca_message")
    offered = titles(page, "ca_attribution_masks")
    assert offered[1:] == ["lonely_labels (label map)"], offered
    assert state(page, "ca_attribution_lesion") == "", "the brain's lesion is no longer the chosen reference"
    # a value the server did not offer is refused, and nothing is opened
    set_state(page, "ca_data_open_as", "volume")
    assert "not one of the choices offered" in open_file(page, "brain_lesion_mask.nii.gz")
    assert page.locator("#volume-name").inner_text().startswith("lonely_labels")
