"""Issue #16, item 1, in a real browser: a Bq/mL PET is never shown as SUV. No units default;
Bq/mL (labelled so) without weight, dose and times; SUVbw (labelled with its formula) once they
are typed or read from a BIDS sidecar; bad typed values are one error and leave no result."""

from __future__ import annotations

import json

import pytest

from clinicalai.web.page_driver import open_file, open_tool, run_panel, set_state, wait_text

# typed / sidecar values; by hand: SUVbw = C x weight[g] / (dose[Bq] x 2^(-(t_scan - t_inj) / T_half))
WEIGHT_KG, DOSE_MBQ, ELAPSED_S = 72.5, 187.0, 1800.0
FACTOR = WEIGHT_KG * 1000.0 / (DOSE_MBQ * 1e6 * 2.0 ** (-ELAPSED_S / 6586.2))


def state(page, key: str):
    return page.evaluate(f"() => window.trame.state.get('{key}')")


def static(page) -> dict:
    return {r["quantity"]: r["value"] for r in state(page, "ca_pet_static_rows")}


@pytest.fixture(scope="module")
def bqml_files(web_server):
    """The phantom's Bq/mL image as a NIfTI without tags, and again with a BIDS-PET sidecar."""
    from clinicalai.volume import write_volume

    pet = web_server["cases"]["pet"].image
    data = web_server["data"]
    write_volume(pet.with_array(pet.array, metadata={}), data / "pet_bqml.nii.gz")
    write_volume(pet.with_array(pet.array, metadata={}), data / "sub-02_pet.nii.gz")
    (data / "sub-02_pet.json").write_text(json.dumps({
        "Units": "Bq/mL", "BodyWeight": WEIGHT_KG, "InjectedRadioactivity": DOSE_MBQ, "InjectedRadioactivityUnits": "MBq",
        "TracerRadionuclide": "F18", "TimeZero": "09:12:30", "InjectionStart": 0, "ScanStart": ELAPSED_S,
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": ELAPSED_S, "AttenuationCorrection": "CT-based",
    }))
    return data


def test_pet_units_bqml_unless_suv_inputs_are_known(page, bqml_files):
    assert open_file(page, "pet_bqml.nii.gz") == ""
    open_tool(page, "pet")
    # no default: the page says the file does not state its units, and a run is refused
    assert state(page, "ca_pet_units") == ""
    wait_text(page, "#pet-uptake", "does not say its units")
    assert "choose Bq/mL or SUV" in run_panel(page, "pet")
    assert not state(page, "ca_pet_has_result")

    # Bq/mL: the figures are Bq/mL, labelled so, and nothing is called SUV
    set_state(page, "ca_pet_units", "bqml")
    wait_text(page, "#pet-uptake", r"Bq/mL \(no SUV")
    assert run_panel(page, "pet") == ""
    bqml = static(page)
    assert bqml["uptake"].startswith("Bq/mL") and "max (Bq/mL)" in bqml
    assert not any("SUV" in k for k in bqml), bqml
    assert "Bq/mL" in wait_text(page, "#pet-result-uptake", "Bq/mL")

    # a non-number sent by the page: one clear error, checked on the server, and no old table
    set_state(page, "ca_pet_weight_kg", "seventy")
    wait_text(page, "#pet-uptake", "must be a number")
    assert "body weight (kg) must be a number" in run_panel(page, "pet")
    assert not state(page, "ca_pet_has_result") and state(page, "ca_pet_static_rows") == []
    assert page.locator("#pet-static").count() == 0

    # typed as a user types them: SUVbw with its formula; the same uptake x the hand factor
    page.fill("#pet-weight", str(WEIGHT_KG))
    page.fill("#pet-dose", str(DOSE_MBQ))
    page.fill("#pet-injection-time", "09:12:30")
    page.fill("#pet-scan-time", "09:42:30")
    page.locator("#pet-dose").click()  # blur: the last field's value goes to the server
    wait_text(page, "#pet-uptake", r"SUVbw = C\[Bq/mL\] x weight\[g\].*weight 72.5 kg, dose 187 MBq, scan 30.0 min")
    assert run_panel(page, "pet") == ""
    suv = static(page)
    assert suv["uptake"].startswith("SUVbw = ")
    assert float(suv["SUVmax"]) == pytest.approx(float(bqml["max (Bq/mL)"]) * FACTOR, abs=2e-3)
    assert suv["TBRmax"] == bqml["TBRmax"]  # a ratio: the same in any units

    # the scan before the injection: refused, the SUV table gone
    set_state(page, "ca_pet_scan_time", "08:00")
    assert "before the injection" in run_panel(page, "pet")
    assert not state(page, "ca_pet_has_result")


def test_pet_units_and_suv_inputs_from_a_bids_sidecar(page, bqml_files):
    assert open_file(page, "sub-02_pet.nii.gz") == ""
    open_tool(page, "pet")
    # the typed values of the previous PET are gone; the file's are shown
    assert state(page, "ca_pet_weight_kg") == "" and state(page, "ca_pet_units") == ""
    wait_text(page, "#pet-uptake", r"SUVbw = .*weight 72.5 kg, dose 187 MBq")
    items = state(page, "ca_pet_unit_items")
    assert "BIDS sidecar sub-02_pet.json" in items[0]["title"]
    assert state(page, "ca_pet_known")["weight_kg"] == "72.5"
    assert run_panel(page, "pet") == ""
    assert static(page)["uptake"].startswith("SUVbw = ") and "SUVmax" in static(page)
