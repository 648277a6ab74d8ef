"""Anatomical validity: each criterion fails on a hand-drawn slice that breaks it, and only valid
anatomy (including legitimately partial apical / basal slices) passes."""

import numpy as np
import pytest

from clinicalai.segcorrect.validity import CRITERIA, check_slice, check_volume, validity_rate


def test_hand_drawn_heart_is_valid(heart):
    v = check_slice(heart)
    assert set(v.criteria) == set(CRITERIA)
    assert v.valid, v.failed


def test_empty_apical_and_basal_slices_are_valid(heart, draw):
    assert check_slice(np.zeros((32, 32), np.uint8)).valid
    apical = heart.copy()
    apical[apical == 1] = 0  # apex: no RV
    assert check_slice(apical).valid
    cap = np.where(draw.disc(heart.shape, (32, 38), 5), 2, 0).astype(np.uint8)  # last slice: a MYO cap
    assert check_slice(cap).valid
    basal = np.where(heart == 1, 1, 0).astype(np.uint8)  # above the ventricles: RV only
    assert check_slice(basal).valid


def _broken(name, heart, disc):
    m = heart.copy()
    s = m.shape
    if name == "rv_one_component":
        m[disc(s, (6, 6), 3)] = 1
    elif name == "myo_one_component":
        m[disc(s, (6, 58), 3)] = 2
    elif name == "lv_one_component":
        m[disc(s, (58, 58), 3)] = 3
    elif name == "rv_no_holes":
        m[disc(s, (32, 18), 1.5)] = 0
    elif name == "myo_no_holes":
        m[32, 47] = 0  # a background pinhole inside the myocardial wall
    elif name == "lv_no_holes":
        m[disc(s, (32, 38), 1.5)] = 0
    elif name == "lv_enclosed_by_myo":
        m[28:37, 45:50][m[28:37, 45:50] == 2] = 0  # open the ring on the free wall
    elif name == "rv_touches_myo":
        m[m == 1] = 0
        m[disc(s, (32, 9), 4)] = 1
    elif name == "no_lv_rv_contact":
        m[(m == 2) & (np.arange(s[1])[None, :] < 33)] = 1  # septum relabelled RV
    elif name == "structures_consistent":
        m[m == 2] = 0
        m[m == 1] = 0
    elif name == "no_background_holes":
        m[30:35, 25:28] = 0  # a pocket between RV and MYO, enclosed by both
    return m


@pytest.mark.parametrize("criterion", CRITERIA)
def test_each_criterion_fails_where_it_should(criterion, heart, draw):
    broken = _broken(criterion, heart, draw.disc)
    assert not np.array_equal(broken, heart)
    v = check_slice(broken)
    assert not v.criteria[criterion], f"{criterion} should fail; failed: {v.failed}"
    assert not v.valid


def test_volume_helpers(heart, draw):
    vol = np.stack([heart, _broken("lv_no_holes", heart, draw.disc), np.zeros_like(heart)])
    assert [v.valid for v in check_volume(vol)] == [True, False, True]
    assert validity_rate(vol) == pytest.approx(2 / 3)
    assert validity_rate(vol, skip_empty=True) == pytest.approx(1 / 2)
    with pytest.raises(ValueError):
        check_slice(vol)


def test_custom_label_values(heart):
    m = heart
    remapped = np.choose(m, [0, 5, 6, 7]).astype(np.uint8)
    assert check_slice(remapped, {"RV": 5, "MYO": 6, "LV": 7}).valid
    # read with the default values, the same slice has no RV/MYO/LV: an "empty" valid slice
    assert check_slice(remapped).valid


def test_phantom_ground_truth_is_valid():
    from clinicalai.phantoms.cardiac import cardiac_case

    for seed in range(4):
        labels = cardiac_case(seed).labels.array
        assert validity_rate(labels) == 1.0
