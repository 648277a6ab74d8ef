"""A 4D file (a cine short-axis stack stored as one NIfTI, as ACDC ships it), in a real browser:
Open offers its time points instead of only refusing the file, the one chosen opens on its own
geometry (named after it), and a time point the server did not offer is refused."""

from __future__ import annotations

import numpy as np
import pytest

from clinicalai.web.page_driver import open_file, set_state, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def test_a_4d_cine_offers_its_time_points_and_opens_the_one_chosen(page, web_server):
    import nibabel as nib

    cine = web_server["cases"]["cardiac"].image
    stack = np.stack([cine.array * (1.0 + 0.1 * t) for t in range(4)], axis=-1)  # (z, y, x, t) -> written as x, y, z, t
    affine = np.diag(list(cine.spacing) + [1.0])
    nib.save(nib.Nifti1Image(np.transpose(stack, (2, 1, 0, 3)).astype(np.float32), affine), web_server["data"] / "cine_4d.nii.gz")
    try:
        assert open_file(page, "cine_4d.nii.gz") == ""
        assert "holds 4 time points" in state(page, "ca_message")
        offered = state(page, "ca_data_frame_items")
        assert [item["value"] for item in offered] == ["0", "1", "2", "3"]
        page.wait_for_selector("#data-frame")  # the chooser appears with the offer
        # a time point the server did not offer: refused, nothing opened
        set_state(page, "ca_data_frame", "7")
        assert "time point" in open_file(page, "cine_4d.nii.gz")
        set_state(page, "ca_data_frame", "3")
        assert open_file(page, "cine_4d.nii.gz") == ""
        wait_text(page, "#volume-name", "^cine_4d_frame3")
        assert "opened cine_4d.nii.gz as an image" in state(page, "ca_message")
    finally:
        set_state(page, "ca_data_frame", "")
