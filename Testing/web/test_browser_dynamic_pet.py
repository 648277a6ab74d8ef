"""A dynamic (4D) BIDS-PET in a real browser: Open offers its static scan over a window of
frames beside the single time points; a window typed wrong is one error and opens nothing; the
static scan opens with the sidecar's SUV inputs, and PetRecurrence classifies it as the engine
classifies the same average of frames."""

from __future__ import annotations

import contextlib
import json

import nibabel as nib
import numpy as np
import pytest

from clinicalai.web.page_driver import open_file, open_tool, run_panel, set_state, wait_text

pytestmark = pytest.mark.browser

#: four frames: 0-5, 5-10, 10-20 and 20-30 min after the injection (s)
STARTS, DURATIONS = [0.0, 300.0, 600.0, 1200.0], [300.0, 300.0, 600.0, 600.0]
#: the uptake of each frame relative to the phantom's static image (decay-corrected frames)
LEVELS = [0.3, 0.7, 0.9, 1.1]


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


@pytest.fixture(scope="module")
def dynamic_pet(web_server):
    pet = web_server["cases"]["pet"].image
    frames = np.stack([pet.array * level for level in LEVELS], axis=-1)  # (z, y, x, t)
    affine = np.diag(list(pet.spacing) + [1.0])
    nib.save(nib.Nifti1Image(np.transpose(frames, (2, 1, 0, 3)).astype(np.float32), affine),
             web_server["data"] / "sub-03_pet.nii.gz")
    (web_server["data"] / "sub-03_pet.json").write_text(json.dumps({
        "Units": "Bq/mL", "BodyWeight": 72.5, "InjectedRadioactivity": 187.0, "InjectedRadioactivityUnits": "MBq",
        "TracerRadionuclide": "F18", "TimeZero": "09:00:00", "InjectionStart": 0, "ScanStart": 0,
        "FrameTimesStart": STARTS, "FrameDuration": DURATIONS, "ImageDecayCorrected": True,
        "ImageDecayCorrectionTime": 0, "AttenuationCorrection": "CT-based",
    }))
    return pet


@contextlib.contextmanager
def frame_choice_reset(page):
    """The data panel's time-point choice and window, cleared after the block (for the next tests)."""
    try:
        yield
    finally:
        set_state(page, "ca_data_frame", "")
        set_state(page, "ca_data_static_window", "")


def pet_panel_shows_the_suv_inputs(page) -> None:
    """PetRecurrence on the node opened: SUVbw from the weight, dose and times of the file."""
    open_tool(page, "pet")
    wait_text(page, "#pet-uptake", r"SUVbw = .*weight 72.5 kg, dose 187 MBq")


def offered_static_scan(page, relative: str) -> None:
    """Open ``relative`` (a dynamic PET of the 4 frames above): the page offers its static scan
    first, then its time points; the static scan is chosen."""
    assert open_file(page, relative) == ""
    assert "holds 4 time points: choose the static PET of a window" in state(page, "ca_message")
    assert [item["value"] for item in state(page, "ca_data_frame_items")] == ["static", "0", "1", "2", "3"]
    set_state(page, "ca_data_frame", "static")
    page.wait_for_selector("#data-static-window")


def opened_static_scan(page, relative: str, node_name: str) -> None:
    """With the window 10-30 typed, Open gives the node ``node_name``: frames 2 and 3 averaged."""
    set_state(page, "ca_data_static_window", "10-30")
    assert open_file(page, relative) == ""
    wait_text(page, "#volume-name", f"^{node_name}")
    assert "static PET: mean of frames 2-3, 10.0-30.0 min after injection" in state(page, "ca_message")


def test_a_dynamic_pet_opens_as_the_static_scan_of_a_window(page, web_server, dynamic_pet):
    with frame_choice_reset(page):
        offered_static_scan(page, "sub-03_pet.nii.gz")
        before = page.inner_text("#volume-name")
        # typed wrong, or a window with no whole frame: one sentence, nothing opened
        for typed, message in (("30-10", "START-END"), ("'; drop", "START-END"), ("11-14", "no whole frame")):
            set_state(page, "ca_data_static_window", typed)
            assert message in open_file(page, "sub-03_pet.nii.gz")
            assert page.inner_text("#volume-name") == before
        opened_static_scan(page, "sub-03_pet.nii.gz", "sub-03_pet_static10-30min")
    # the sidecar's weight, dose and times came with it: SUVbw, and the engine's figures for
    # the same average of frames (0.9 and 1.1 of the phantom, 10 min each: its 1.0)
    pet_panel_shows_the_suv_inputs(page)
    assert run_panel(page, "pet") == ""
    rows = {r["quantity"]: r["value"] for r in state(page, "ca_pet_static_rows")}

    from clinicalai.pet.suv import pet_tags_from_options
    from clinicalai.pet.workflow import load_pet_models, predict_pet
    from clinicalai.volume import read_volume

    tags = pet_tags_from_options(72.5, 187.0, "2000-01-01T09:00:00", "2000-01-01T09:00:00", "ADMIN")
    grid = read_volume(web_server["data"] / "sub-03_pet.nii.gz", frame=0)  # the file's geometry
    same = grid.with_array(dynamic_pet.array.astype(np.float32), metadata={"pet": tags})
    expected = predict_pet(same, load_pet_models(device="cpu"))
    assert float(rows["SUVmax"]) == pytest.approx(expected.static.suv_max, rel=1e-3)
    assert state(page, "ca_pet_probability") == pytest.approx(expected.probability, abs=1e-3)


def test_a_dynamic_pet_dicom_series_opens_as_a_time_point_or_a_static_scan(page, web_server):
    import datetime as dt

    from clinicalai.phantoms.pet import pet_tags, write_dynamic_pet_dicom

    pet = web_server["cases"]["pet"].image
    start = dt.datetime(2024, 5, 6, 9, 0, 0)
    write_dynamic_pet_dicom([pet.with_array(pet.array * level, metadata={}) for level in LEVELS], STARTS, DURATIONS,
                            pet_tags(72.5, 187e6, start, start), web_server["data"] / "dynamic_pt")
    with frame_choice_reset(page):
        offered_static_scan(page, "dynamic_pt")
        set_state(page, "ca_data_frame", "1")  # one time point, as offered
        assert open_file(page, "dynamic_pt") == ""
        wait_text(page, "#volume-name", "^dynamic_pt_frame1")
        set_state(page, "ca_data_frame", "static")
        opened_static_scan(page, "dynamic_pt", "dynamic_pt_static10-30min")
    pet_panel_shows_the_suv_inputs(page)
