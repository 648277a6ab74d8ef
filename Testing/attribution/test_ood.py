"""The lesion classifier says when an image is unlike its training data (a feature-space
distance, ``clinicalai.attribution.ood``): on the bundled model and its card's reference, on a
real T1 brain the project did not make, and through the command line."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from clinicalai.attribution import attribute
from clinicalai.attribution.constrained import make_cases
from clinicalai.attribution.ood import feature_reference
from clinicalai.models.ood import THRESHOLD_MARGIN
from clinicalai.cli import main
from clinicalai.errors import ModelError
from clinicalai.models import load_model
from clinicalai.phantoms.brain import brain_dataset
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.volume import read_volume

REAL_T1 = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="module")
def classifier():
    return load_model("brain-lesion-classifier", device="cpu")


def _unlike(result) -> list:
    return [w for w in result.warnings if "unlike the images" in w]


def test_phantoms_like_the_training_ones_pass_and_other_images_are_flagged(classifier):
    # seeds no trainer or reference drew, at the training grid and at the generator's 2 mm
    for case in make_cases(3, 3000) + brain_dataset(3, seed=3000):
        assert not _unlike(attribute(classifier, case.image, "gradient")), "an in-distribution phantom was flagged"
    real = attribute(classifier, read_volume(REAL_T1), "gradient")
    [warning] = _unlike(real)
    assert "brain-lesion-classifier" in warning and "validation images 2.5-4.8" in warning
    assert _unlike(attribute(classifier, cardiac_case(3).image, "gradient"))


def test_the_command_line_prints_the_warning(tmp_path, capsys):
    rc = main(["explain", str(REAL_T1), "--model", "brain-lesion-classifier", "--method", "gradient", "-o", str(tmp_path / "m.nii.gz")])
    assert rc == 0
    assert "warning: this image is unlike the images brain-lesion-classifier was trained on" in capsys.readouterr().err


def test_a_reference_is_computed_from_training_and_validation_volumes(classifier):
    train = [c.image for c in make_cases(4, 0)]
    val = [c.image for c in make_cases(2, 2000)]
    reference = feature_reference(classifier, train, val, data="4 phantoms")
    n = len(reference["location"])
    assert n == 32 and np.asarray(reference["precision"]).shape == (n, n)
    assert reference["threshold"] == pytest.approx(THRESHOLD_MARGIN * reference["validation"]["max"])
    assert 0 < reference["validation"]["min"] <= reference["validation"]["max"] < reference["threshold"]


def test_a_malformed_reference_is_one_clear_error(classifier):
    broken = copy.deepcopy(classifier.card.to_dict())
    broken["ood"]["precision"] = [[1.0]]
    with pytest.raises(ModelError, match="ood reference has 32 features"):
        attribute(classifier.module, make_cases(2, 3000)[0].image, "gradient", card=broken)
