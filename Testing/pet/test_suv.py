"""SUV body weight from real DICOM tag values, against figures computed by hand."""

import datetime as dt

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.pet.suv import pet_tags_from_options, suv_conversion, to_suv
from clinicalai.phantoms.pet import pet_tags, write_pet_dicom
from clinicalai.volume import Volume, read_volume, write_volume

# A scan: 72.5 kg, 187 MBq F-18 injected at 09:12:30, series start 09:42:30 (1800 s later).
# By hand: decay 2^(-1800 / 6586.2) = exp(-0.693147 * 0.273299) = 0.827424
#          SUV factor = 72 500 g / (187e6 Bq * 0.827424) = 4.68562e-4 g/Bq
INJ = dt.datetime(2024, 5, 6, 9, 12, 30)
SCAN = dt.datetime(2024, 5, 6, 9, 42, 30)
FACTOR_START = 4.68562e-4
FACTOR_ADMIN = 72500 / 187e6  # no decay: 3.87701e-4
# acquisition 5 min after the series start (2100 s after injection): 4.83592e-4
FACTOR_ACQ = 4.83592e-4


def tags(**changes):
    t = pet_tags(72.5, 187e6, INJ, SCAN)
    t.update(changes)
    return {k: v for k, v in t.items() if v is not None}


@pytest.fixture(scope="module")
def dicom_pet(tmp_path_factory):
    """A 6-slice PT series written with pydicom and read back: the tags are real DICOM values."""
    arr = np.full((6, 8, 9), 5000.0, np.float32)
    arr[2:4, 3:5, 3:6] = 12000.0
    vol = Volume(arr, spacing=(2.0, 2.0, 3.0), modality="PT", units="BQML", metadata={"pet": tags()})
    folder = write_pet_dicom(vol, tmp_path_factory.mktemp("pt") / "series")
    return read_volume(folder)


def test_dicom_pt_series_carries_the_suv_tags(dicom_pet):
    t = dicom_pet.metadata["pet"]
    assert dicom_pet.modality == "PT" and dicom_pet.units == "BQML"
    assert float(t["PatientWeight"]) == 72.5
    assert float(t["RadionuclideTotalDose"]) == 187e6
    assert float(t["RadionuclideHalfLife"]) == 6586.2
    assert t["DecayCorrection"] == "START" and "DECY" in t["CorrectedImage"] and "ATTN" in t["CorrectedImage"]
    assert str(t["RadiopharmaceuticalStartTime"]).startswith("091230")


def test_bqml_start_matches_hand_computation(dicom_pet):
    suv, conv = to_suv(dicom_pet)
    assert conv.factor == pytest.approx(FACTOR_START, rel=1e-5)
    assert conv.details["elapsed_s"] == 1800
    # int16 storage with a rescale slope: values within one step of the written ones
    assert suv.array.max() == pytest.approx(12000 * FACTOR_START, rel=1e-3)
    assert suv.units == "SUV" and suv.same_grid(dicom_pet)


def test_decay_correction_reference_times():
    assert suv_conversion(tags(DecayCorrection="ADMIN")).factor == pytest.approx(FACTOR_ADMIN, rel=1e-9)
    later = dict(AcquisitionTime="094730.000000")
    # NONE: the dose decays to the acquisition time
    assert suv_conversion(tags(DecayCorrection="NONE", **later)).factor == pytest.approx(FACTOR_ACQ, rel=1e-5)
    # START: the series start, not the later acquisition
    assert suv_conversion(tags(**later)).factor == pytest.approx(FACTOR_START, rel=1e-5)
    # START with a series re-processed after the scan: the acquisition start is the reference
    assert suv_conversion(tags(SeriesTime="120000", AcquisitionTime="094730")).factor == pytest.approx(FACTOR_ACQ, rel=1e-5)
    # injection time only (no DateTime): on the series date
    t = tags(RadiopharmaceuticalStartDateTime=None)
    assert suv_conversion(t).factor == pytest.approx(FACTOR_START, rel=1e-5)


def test_gml_cnts_and_stated_units():
    assert suv_conversion({"Units": "GML"}).factor == 1.0
    assert suv_conversion({}, units="suv").factor == 1.0
    assert suv_conversion({"Units": "CNTS", "PhilipsSUVScaleFactor": 0.000123}).factor == pytest.approx(0.000123)
    with pytest.raises(InputError, match="7053,1000"):
        suv_conversion({"Units": "CNTS"})


@pytest.mark.parametrize("missing", ["PatientWeight", "RadionuclideTotalDose", "RadionuclideHalfLife",
                                     "DecayCorrection", "CorrectedImage", "SeriesTime"])
def test_missing_tag_is_named(missing):
    with pytest.raises(InputError, match=missing):
        suv_conversion(tags(**{missing: None}))


def test_missing_injection_time_is_named():
    with pytest.raises(InputError, match="RadiopharmaceuticalStartTime"):
        suv_conversion(tags(RadiopharmaceuticalStartDateTime=None, RadiopharmaceuticalStartTime=None))


def test_inconsistent_information_is_refused():
    with pytest.raises(InputError, match="after the scan"):
        suv_conversion(tags(RadiopharmaceuticalStartDateTime="20240506100000"))
    with pytest.raises(InputError, match="ATTN"):
        suv_conversion(tags(CorrectedImage=["DECY"]))
    with pytest.raises(InputError, match="DECY"):
        suv_conversion(tags(CorrectedImage=["ATTN"]))
    with pytest.raises(InputError, match="must be positive"):
        suv_conversion(tags(PatientWeight=0))
    with pytest.raises(InputError, match="contradicts"):
        suv_conversion(tags(), units="suv")


def test_nifti_needs_units_and_bqml_needs_dose(tmp_path):
    vol = Volume(np.ones((4, 5, 6), np.float32) * 3000)
    write_volume(vol, tmp_path / "pet.nii.gz")
    nifti = read_volume(tmp_path / "pet.nii.gz")
    with pytest.raises(InputError, match="--units"):
        to_suv(nifti)
    with pytest.raises(InputError, match="--weight"):
        pet_tags_from_options(None, 187, "2024-05-06T09:12:30", "2024-05-06T09:42:30")
    t = pet_tags_from_options(72.5, 187, "2024-05-06T09:12:30", "2024-05-06T09:42:30")
    suv, conv = to_suv(nifti, units="bqml", tags=t)
    assert conv.factor == pytest.approx(FACTOR_START, rel=1e-5)
    assert float(suv.array.mean()) == pytest.approx(3000 * FACTOR_START, rel=1e-5)


def test_phantom_bqml_converts_back_to_its_suv():
    from clinicalai.phantoms.pet import pet_case

    case = pet_case(11, scanner="B")
    suv, _ = to_suv(case.image)
    np.testing.assert_allclose(suv.array, case.suv.array, rtol=1e-4, atol=1e-5)


def _dicom_roundtrip(tmp_path, name, tag_values, omit=()):
    """A small PT series written with pydicom with ``tag_values`` and read back."""
    arr = np.full((5, 6, 7), 5000.0, np.float32)
    arr[2, 2:4, 2:5] = 12000.0
    vol = Volume(arr, spacing=(2.0, 2.0, 3.0), modality="PT", units=tag_values.get("Units"),
                 metadata={"pet": tag_values})
    return read_volume(write_pet_dicom(vol, tmp_path / name, omit=omit))


def test_dicom_admin_needs_no_half_life_or_injection_time(tmp_path):
    # ADMIN: values decay-corrected to the injection; by hand 72 500 g / 187e6 Bq = 3.87701e-4
    pet = _dicom_roundtrip(tmp_path, "admin", tags(DecayCorrection="ADMIN"),
                           omit=("RadionuclideHalfLife", "RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime"))
    assert pet.metadata["pet"]["DecayCorrection"] == "ADMIN" and "RadionuclideHalfLife" not in pet.metadata["pet"]
    suv, conv = to_suv(pet)
    assert conv.factor == pytest.approx(3.87701e-4, rel=1e-5)
    assert suv.array.max() == pytest.approx(12000 * 3.87701e-4, rel=1e-3)


def test_dicom_cnts_uses_the_philips_suv_scale_tag(tmp_path):
    # Philips CNTS: SUV = rescaled value x (7053,1000); 12000 counts x 2.5e-4 = SUV 3.0
    t = dict(tags(), Units="CNTS", PhilipsSUVScaleFactor=2.5e-4)
    pet = _dicom_roundtrip(tmp_path, "cnts", t)
    assert pet.units == "CNTS" and float(pet.metadata["pet"]["PhilipsSUVScaleFactor"]) == 2.5e-4
    suv, conv = to_suv(pet)
    assert conv.units == "CNTS" and conv.factor == pytest.approx(2.5e-4)
    assert suv.array.max() == pytest.approx(3.0, rel=1e-3) and np.median(suv.array) == pytest.approx(1.25, rel=1e-3)
    no_scale = _dicom_roundtrip(tmp_path, "cnts-no-scale", t, omit=("PhilipsSUVScaleFactor",))
    with pytest.raises(InputError, match="7053,1000"):
        to_suv(no_scale)


def test_dicom_gml_is_already_suv(tmp_path):
    pet = _dicom_roundtrip(tmp_path, "gml", {"Units": "GML"})
    suv, conv = to_suv(pet)
    assert conv.factor == 1.0 and suv.array.max() == pytest.approx(12000, rel=1e-3)


@pytest.mark.parametrize("missing", ["PatientWeight", "RadionuclideTotalDose", "DecayCorrection"])
def test_dicom_series_missing_a_tag_is_a_named_error(tmp_path, missing):
    pet = _dicom_roundtrip(tmp_path, "missing", tags(), omit=(missing,))
    assert missing not in pet.metadata["pet"]
    with pytest.raises(InputError, match=missing):
        to_suv(pet)
