"""SUVmax / TBRmax / TBRmean with the user's VOI or the 1.6 x background threshold."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.pet.static import static_parameters
from clinicalai.phantoms.pet import pet_case


def test_threshold_finds_the_recurrence_and_not_the_striatum():
    case = pet_case(31, recurrence=True, scanner="A")
    s = static_parameters(case.suv, case.brain_mask)
    assert s.lesion_voi.startswith("threshold")
    truth = case.lesion.array > 0
    found = s.lesion_mask.array > 0
    assert s.lesion_mask.same_grid(case.suv)
    assert np.logical_and(found, truth).sum() / found.sum() > 0.8  # inside the true lesion, not the striatum
    assert s.tbr_max > 1.6 and s.tbr_mean > 1.0
    # background: the phantom's healthy brain uptake, within 10 %
    assert s.background_suv == pytest.approx(case.info["healthy_brain_suv"], rel=0.1)
    # the SUVmax is a voxel value of the image
    assert s.suv_max in set(case.suv.array[truth].tolist())


def test_user_voi_and_trc_case():
    case = pet_case(32, recurrence=False, scanner="B")
    auto = static_parameters(case.suv, case.brain_mask)
    assert auto.lesion_voi.startswith("none") and auto.tbr_max is None
    user = static_parameters(case.suv, case.brain_mask, case.lesion)
    assert user.lesion_voi == "user"
    assert user.tbr_mean < 1.6  # faint diffuse uptake
    assert user.suv_max == pytest.approx(float(case.suv.array[case.lesion.array > 0].max()))
    with pytest.raises(InputError, match="empty"):
        static_parameters(case.suv, case.brain_mask, case.lesion.with_array(np.zeros_like(case.lesion.array)))


def test_brain_mask_without_uptake_is_a_clear_error():
    case = pet_case(33, recurrence=True, scanner="A")
    air = np.zeros_like(case.brain_mask.array)
    air[:3, :3, :3] = 1  # a corner of the field of view: outside the head
    suv = case.suv.with_array(np.where(air > 0, 0.0, case.suv.array).astype(np.float32))
    with pytest.raises(InputError, match="no uptake"):
        static_parameters(suv, case.brain_mask.with_array(air))
