"""A DICOM SEG from another tool, in a real browser: the data panel lists it as a segmentation
(not as a series slice), opens it over the DICOM series it was drawn on, keeps its segment names
and offers it to SegCorrect's "correct an existing mask" of that image, whose Save then writes
a DICOM SEG of the series beside the .seg.nrrd and NIfTI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from clinicalai.web.page_driver import open_file, open_tool, run_panel, set_state, wait_text

pytestmark = pytest.mark.browser


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def test_a_dicom_seg_opens_as_a_segmentation_of_its_series(page, web_server):
    from clinicalai.volume import place_on_grid, read_volume
    from clinicalai.volume.dicom_seg import write_dicom_seg
    from clinicalai.volume.dicom_writer import write_dicom_series

    case = web_server["cases"]["cardiac"]
    folder = web_server["data"] / "pacs"
    series = write_dicom_series(case.image.with_array(np.round(case.image.array * 1000).astype(np.int16), modality="MR"),
                                folder / "cine_sax")
    image = read_volume(series)
    labels = place_on_grid(case.labels, image.grid).array.astype(np.uint8)
    labels[0] = 0  # a slice without a segment: the SEG leaves it out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_dicom_seg(image.with_array(labels), sorted(series.iterdir()), folder / "seg" / "heart.dcm",
                        [{"name": n, "value": v} for n, v in (("RV", 1), ("MYO", 2), ("LV", 3))])

    open_tool(page, "data")
    page.click("text=Refresh")
    page.wait_for_function("() => (window.trame.state.get('ca_data_files') || []).some(i => i.path === 'pacs/seg/heart.dcm')")
    kinds = {item["path"]: item["kind"] for item in state(page, "ca_data_files")}
    assert kinds["pacs/seg/heart.dcm"] == "segmentation (DICOM SEG)" and kinds["pacs/cine_sax"] == "DICOM series"
    assert not any(p.startswith("pacs/cine_sax/") for p in kinds)

    assert open_file(page, "pacs/cine_sax") == ""
    name = wait_text(page, "#volume-name", "^cine_sax").strip()
    assert open_file(page, "pacs/seg/heart.dcm") == ""
    message = state(page, "ca_message")
    assert f"as a segmentation of {name} " in message, message
    open_tool(page, "segcorrect")
    offered = state(page, "ca_segcorrect_input_segs")
    assert any(item["title"].startswith("heart") for item in offered), offered
    # correct the SEG and save: beside .seg.nrrd and NIfTI, a DICOM SEG of the series it was read from
    set_state(page, "ca_segcorrect_input_seg", next(i["value"] for i in offered if i["title"].startswith("heart")))
    assert run_panel(page, "segcorrect") == ""
    page.click("#segcorrect-save")
    page.wait_for_selector("#segcorrect-saved a")
    names = page.locator("#segcorrect-saved a").all_inner_texts()
    dcm = [n for n in names if n.endswith(".dcm")]
    nii = [n for n in names if n.endswith(".nii.gz")]
    assert dcm and nii, names
    saved_seg = read_volume(web_server["data"] / dcm[0])
    assert [s["name"] for s in saved_seg.metadata["segments"]] == ["RV", "MYO", "LV"]
    saved_nii = read_volume(web_server["data"] / nii[0])
    assert saved_nii.array.any() and np.array_equal(place_on_grid(saved_seg, image.grid).array, saved_nii.array)
    # a slice of the series is not a file to open on its own
    assert "open its folder" in open_file(page, "pacs/cine_sax/slice0000.dcm")
