"""Inputs the model was not made for get a warning (never a refusal), in the report and the panels."""

from __future__ import annotations

import json

import numpy as np

from clinicalai.models import parse_card
from clinicalai.models.fit import check_fit, input_fit_warnings, input_warnings
from clinicalai.volume import Volume


def _card(**inp):
    return parse_card({"name": "m", "task": "classification", "format": "onnx", "classes": ["a", "b"],
                       "input": {"channels": 1, **inp}})


def test_each_kind_of_misfit_is_named_and_a_fitting_input_is_quiet():
    card = _card(modality="PT", fov_mm=[256, 256, 168], intensity_range=[0, 12])
    fits = Volume(np.random.default_rng(0).uniform(0, 6, (84, 128, 128)).astype(np.float32), spacing=(2, 2, 2),
                  modality="PT")
    assert input_fit_warnings(fits, card) == []
    # a CT of the same size: modality
    ct = fits.with_array(fits.array, modality="CT")
    (w,) = input_fit_warnings(ct, card)
    assert "is CT but model m was made for PT" in w
    # a 64 mm cube of PET: field of view, also when stored in another axis order
    small = Volume(np.ones((32, 32, 32), np.float32), spacing=(2, 2, 2), modality="PT")
    assert any("covers 64 x 64 x 64 mm" in w for w in input_fit_warnings(small, card))
    assert input_fit_warnings(Volume(fits.array.transpose(2, 1, 0).copy(), spacing=(2, 2, 2), modality="PT"), card) == []
    # raw Bq/mL where the model wants SUV: values
    bqml = fits.with_array(fits.array * 5000)
    assert any("far from the range 0 to 12" in w for w in input_fit_warnings(bqml, card))


def test_reader_warnings_come_first_and_are_not_repeated():
    v = Volume(np.random.default_rng(1).uniform(0, 1, (4, 8, 8)).astype(np.float32), modality="MR",
               metadata={"warnings": ["slice gaps vary by 1.4 % (rounded positions)"]})
    card = _card(modality="CT")
    got = input_warnings(v, [card, card])
    assert got[0].startswith("slice gaps vary") and len(got) == 2


def test_pet_ensemble_warns_on_a_cube_of_noise():
    from clinicalai.pet.workflow import load_pet_models, predict_pet

    noise = Volume(np.random.default_rng(0).uniform(0, 5, (80, 100, 100)).astype(np.float32), spacing=(2, 2, 2))
    result = predict_pet(noise, load_pet_models(device="cpu"), units="suv")
    assert any("may not be a brain PET" in w for w in result.warnings), result.warnings


def test_pet_ensemble_is_quiet_about_a_brain_pet():
    from clinicalai.phantoms.pet import pet_case
    from clinicalai.pet.workflow import load_pet_models, predict_pet

    case = pet_case(seed=1)
    result = predict_pet(case.image, load_pet_models(device="cpu"))
    assert not any("brain PET" in w or "far from" in w or "made for" in w for w in result.warnings), result.warnings


def test_segment_report_carries_the_warning(tmp_path, capsys):
    """A CT DICOM series given to the MR cardiac segmenter: the report and stderr say so."""
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.volume import write_volume

    case = cardiac_case(seed=5)
    write_volume(case.image.with_array(case.image.array, modality="CT"), tmp_path / "series")
    report = tmp_path / "r.json"
    from clinicalai.cli import main

    rc = main(["segment", str(tmp_path / "series"), "-o", str(tmp_path / "m.nii.gz"), "--no-correct", "--report", str(report)])
    err = capsys.readouterr().err
    assert rc == 0, err
    warnings = json.loads(report.read_text())["warnings"]
    assert any("is CT but model cardiac-unet was made for MR" in w for w in warnings), warnings
    assert "warning: the image is CT" in err


def test_check_fit_codes_binary_mask_single_slice_and_unknown_modality():
    """A binary mask is not an image (code "binary"); a 3D model on one slice is "dims";
    an untagged image (NIfTI) raises no modality alarm."""
    card = _card(modality="PT", fov_mm=[256, 256, 168])
    rng = np.random.default_rng(2)
    mask = Volume((rng.uniform(0, 1, (84, 128, 128)) > 0.5).astype(np.float32), spacing=(2, 2, 2))
    assert [p.code for p in check_fit(card, mask)] == ["binary"]
    image = Volume(rng.uniform(0, 6, (84, 128, 128)).astype(np.float32), spacing=(2, 2, 2))
    assert check_fit(card, image) == []
    one_slice = Volume(rng.uniform(0, 6, (1, 128, 128)).astype(np.float32), spacing=(2, 2, 2), modality="PT")
    assert "dims" in [p.code for p in check_fit(card, one_slice)]
    mr = image.with_array(image.array, modality="MR")
    assert [p.code for p in check_fit(card, mr)] == ["modality"]
