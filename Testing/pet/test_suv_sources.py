"""SUVbw from each place its inputs come from: DICOM tags, a BIDS-PET sidecar beside a NIfTI,
values the user types; Bq/mL (never called SUV) when they are unknown; one clear error for
bad values. Every factor is checked against the formula computed here by hand:

    SUVbw = C[Bq/mL] * weight[g] / (dose[Bq] * 2^(-(t_scan - t_inj) / T_half))
"""

import datetime as dt
import json

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.pet.suv import BQML, SUVBW, UserDecayData, suv_conversion, to_suv, uptake_conversion
from clinicalai.phantoms.pet import pet_tags, write_pet_dicom
from clinicalai.volume import Volume, read_volume, write_volume
from clinicalai.volume.bids_pet import bids_pet_sidecar, bids_pet_tags

WEIGHT_KG, DOSE_MBQ, ELAPSED_S, F18_S = 72.5, 187.0, 1800.0, 6586.2
INJ = dt.datetime(2024, 5, 6, 9, 12, 30)
SCAN = INJ + dt.timedelta(seconds=ELAPSED_S)
C = 12000.0  # Bq/mL of the hot voxels
#: by hand, the formula of the module docstring
SUV_HOT = C * WEIGHT_KG * 1000.0 / (DOSE_MBQ * 1e6 * 2.0 ** (-ELAPSED_S / F18_S))


def _image() -> np.ndarray:
    arr = np.full((6, 8, 9), 5000.0, np.float32)
    arr[2:4, 3:5, 3:6] = C
    return arr


def _sidecar(**changes):
    data = {
        "Units": "Bq/mL", "BodyWeight": WEIGHT_KG, "BodyWeightUnits": "kg",
        "InjectedRadioactivity": DOSE_MBQ, "InjectedRadioactivityUnits": "MBq",
        "TracerName": "FDOPA", "TracerRadionuclide": "F18", "ScanDate": "2024-05-06",
        "TimeZero": "09:12:30", "InjectionStart": 0, "ScanStart": ELAPSED_S,
        "ImageDecayCorrected": True, "ImageDecayCorrectionTime": ELAPSED_S, "AttenuationCorrection": "CT-based",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def nifti_pet(tmp_path):
    """A Bq/mL NIfTI in BIDS naming (``sub-01_pet.nii.gz``), without a sidecar yet."""
    path = tmp_path / "sub-01_pet.nii.gz"
    write_volume(Volume(_image(), spacing=(2.0, 2.0, 3.0)), path)
    return path


def test_suvbw_from_dicom_tags_matches_the_formula(tmp_path):
    tags = pet_tags(WEIGHT_KG, DOSE_MBQ * 1e6, INJ, SCAN)
    folder = write_pet_dicom(Volume(_image(), spacing=(2.0, 2.0, 3.0), modality="PT", units="BQML",
                                    metadata={"pet": tags}), tmp_path / "series")
    suv, conv = to_suv(read_volume(folder))
    assert conv.quantity == SUVBW and "2^(-(t_scan - t_inj) / T_half)" in conv.label
    assert float(suv.array.max()) == pytest.approx(SUV_HOT, rel=1e-3)  # int16 storage with a slope


def test_suvbw_from_a_bids_sidecar_read_with_the_nifti(nifti_pet):
    sidecar = nifti_pet.with_name("sub-01_pet.json")
    sidecar.write_text(json.dumps(_sidecar()))
    assert bids_pet_sidecar(nifti_pet) == sidecar
    pet = read_volume(nifti_pet)
    assert pet.modality == "PT" and pet.units == "BQML" and pet.metadata["pet_sidecar"] == str(sidecar)
    assert pet.metadata["pet"]["PatientWeight"] == WEIGHT_KG and pet.metadata["pet"]["RadionuclideTotalDose"] == 187e6
    suv, conv = to_suv(pet)  # one input path: the same tags as a DICOM PET's
    assert conv.details["elapsed_s"] == pytest.approx(ELAPSED_S)
    assert float(suv.array.max()) == pytest.approx(SUV_HOT, rel=1e-6)


def test_bids_units_doses_and_decay_reference():
    # mCi and lb are converted; values decay-corrected to the injection need no decay
    tags, warnings = bids_pet_tags(_sidecar(InjectedRadioactivity=DOSE_MBQ / 37.0, InjectedRadioactivityUnits="mCi",
                                            BodyWeight=WEIGHT_KG / 0.45359237, BodyWeightUnits="lb",
                                            ImageDecayCorrectionTime=0))
    assert not warnings and tags["DecayCorrection"] == "ADMIN"
    assert suv_conversion(tags).factor == pytest.approx(WEIGHT_KG * 1000 / (DOSE_MBQ * 1e6), rel=1e-9)
    # not decay-corrected: the dose decayed to the scan start, as for DICOM NONE
    tags, _ = bids_pet_tags(_sidecar(ImageDecayCorrected=False, ImageDecayCorrectionTime=None))
    assert tags["DecayCorrection"] == "NONE" and "DECY" not in tags["CorrectedImage"]
    assert suv_conversion(tags).factor * C == pytest.approx(SUV_HOT, rel=1e-9)
    # what cannot be read is left out and said
    tags, warnings = bids_pet_tags(_sidecar(InjectedRadioactivityUnits="Ci/h", BodyWeight="heavy"))
    assert "RadionuclideTotalDose" not in tags and "PatientWeight" not in tags
    assert any("InjectedRadioactivityUnits" in w for w in warnings) and any("BodyWeight" in w for w in warnings)


def test_a_sidecar_without_weight_names_the_bids_field(nifti_pet):
    nifti_pet.with_name("sub-01_pet.json").write_text(json.dumps(_sidecar(BodyWeight=None)))
    pet = read_volume(nifti_pet)
    with pytest.raises(InputError, match="BIDS sidecar sub-01_pet.json has no BodyWeight"):
        to_suv(pet)
    out, conv = to_suv(pet, bqml_fallback=True)  # the GUIs: Bq/mL, labelled so
    assert conv.quantity == BQML and out.units == "BQML" and "BodyWeight" in conv.label
    np.testing.assert_array_equal(out.array, pet.array)


def test_a_broken_sidecar_is_one_clear_error(nifti_pet):
    nifti_pet.with_name("sub-01_pet.json").write_text("{not json")
    with pytest.raises(InputError, match="sub-01_pet.json.*JSON"):
        read_volume(nifti_pet)


def test_suvbw_from_user_fields_matches_the_formula():
    user = UserDecayData.parse("72.5", 187, "2024-05-06T09:12:30", "2024-05-06 09:42:30")
    assert suv_conversion(user.apply_to({"Units": "BQML"})).factor * C == pytest.approx(SUV_HOT, rel=1e-9)
    # times of day alone: the same day
    user = UserDecayData.parse(WEIGHT_KG, DOSE_MBQ, "09:12:30", "09:42:30")
    conv = suv_conversion(user.apply_to({"Units": "BQML"}))
    assert conv.details["elapsed_s"] == ELAPSED_S and conv.factor * C == pytest.approx(SUV_HOT, rel=1e-9)


def test_user_fields_fill_in_and_override_the_file(nifti_pet):
    nifti_pet.with_name("sub-01_pet.json").write_text(json.dumps(_sidecar(BodyWeight=None, InjectedRadioactivity=999)))
    pet = read_volume(nifti_pet)
    tags = UserDecayData.parse(weight_kg=WEIGHT_KG, injected_mbq=DOSE_MBQ).apply_to(pet.metadata["pet"])
    _, conv = to_suv(pet, tags=tags)
    assert conv.factor * C == pytest.approx(SUV_HOT, rel=1e-9)
    assert tags["TagSource"] == "BIDS sidecar sub-01_pet.json + user"


def test_without_decay_data_suv_is_refused_and_bqml_is_labelled(nifti_pet):
    pet = read_volume(nifti_pet)  # no sidecar: a NIfTI says nothing
    assert "pet" not in pet.metadata
    with pytest.raises(InputError, match="does not say its units"):
        to_suv(pet, bqml_fallback=True)  # unknown units: never guessed, not even as Bq/mL
    with pytest.raises(InputError, match="PatientWeight"):
        to_suv(pet, units="bqml")  # the command line refuses
    conv = uptake_conversion({"Units": "BQML"})
    assert conv.quantity == BQML and conv.factor == 1.0 and conv.label.startswith("Bq/mL")
    # a value that is there but wrong is an error even with the fallback
    with pytest.raises(InputError, match="must be positive"):
        uptake_conversion(UserDecayData(weight_kg=-3.0, injected_mbq=DOSE_MBQ, injection_time="09:00",
                                        scan_time="10:00").apply_to({"Units": "BQML"}))


@pytest.mark.parametrize("fields, message", [
    ({"weight_kg": -70}, "body weight .* must be positive"),
    ({"weight_kg": "seventy"}, "body weight .* must be a number"),
    ({"weight_kg": [70]}, "body weight .* must be a number"),
    ({"weight_kg": True}, "body weight .* must be a number"),
    ({"weight_kg": 70000}, "check the value and its unit"),
    ({"injected_mbq": "nan"}, "injected dose .* must be positive"),
    ({"injection_time": "half past nine"}, "injection time must be a date-time"),
    ({"injection_time": 930}, "injection time must be a date-time"),
    ({"injection_time": "10:00", "scan_time": "09:30"}, "scan time .* is before the injection time"),
])
def test_bad_user_values_are_one_clear_error(fields, message):
    with pytest.raises(InputError, match=message):
        UserDecayData.parse(**fields)


def test_cli_reads_a_bids_sidecar_and_takes_the_same_values_as_options(tmp_path, trained, capsys):
    from clinicalai.cli import main
    from clinicalai.phantoms.pet import pet_case

    model = str(trained[0].model_paths[0])
    pet = pet_case(64, spacing=(4.0, 4.0, 4.0), shape=(36, 54, 48)).image
    write_volume(pet.with_array(pet.array, metadata={}), tmp_path / "sub-01_pet.nii.gz")
    (tmp_path / "sub-01_pet.json").write_text(json.dumps(_sidecar()))

    def run(image, *options):
        out = tmp_path / "r.json"
        out.unlink(missing_ok=True)
        code = main(["pet", str(tmp_path / image), "--model", model, "--json", str(out), *options])
        assert code == 0, capsys.readouterr().err
        return json.loads(out.read_text())["suv_conversion"]

    factor = SUV_HOT / C
    from_sidecar = run("sub-01_pet.nii.gz")  # no --units: the sidecar says them
    assert from_sidecar["quantity"] == SUVBW and from_sidecar["factor"] == pytest.approx(factor, rel=1e-9)
    heavier = run("sub-01_pet.nii.gz", "--weight-kg", str(2 * WEIGHT_KG))  # an option replaces the file's value
    assert heavier["factor"] == pytest.approx(2 * factor, rel=1e-9)
    # the same values as options for a NIfTI without a sidecar
    write_volume(pet.with_array(pet.array, metadata={}), tmp_path / "scan.nii.gz")
    typed = run("scan.nii.gz", "--units", "bqml", "--weight-kg", str(WEIGHT_KG), "--injected-mbq", str(DOSE_MBQ),
                "--injection-time", INJ.isoformat(), "--scan-time", SCAN.isoformat())
    assert typed["factor"] == pytest.approx(factor, rel=1e-9)
    # a bad option value: one line, exit 1
    assert main(["pet", str(tmp_path / "sub-01_pet.nii.gz"), "--model", model, "--weight-kg", "-3"]) == 1
    assert "body weight (kg) must be positive" in capsys.readouterr().err
