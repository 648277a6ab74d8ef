"""score_map and friends against cases computed by hand."""

import numpy as np
import pytest

from clinicalai.attribution.metrics import (
    HEADLINE_KEYS,
    SCORE_KEYS,
    TABLE_KEYS,
    choose_threshold,
    map_correlation,
    score_map,
    summarize_scores,
)
from clinicalai.errors import InputError
from clinicalai.volume import Volume


def _case():
    # 10 voxels; lesion = the last 3. Map ranks voxels 0..9 by value.
    lesion = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    m = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.6, 0.8, 1.0])
    return m, lesion


def test_dice_fixed_threshold_by_hand():
    m, lesion = _case()
    s = score_map(m, lesion, threshold=0.55)
    # predicted = {6,7,8,9}, truth = {7,8,9}: Dice = 2*3/(4+3)
    assert s["dice"] == pytest.approx(6 / 7)
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(1.0)
    assert s["threshold"] == pytest.approx(0.55)
    assert s["threshold_spec"] == "fixed"


def test_ranking_metrics_by_hand():
    m, lesion = _case()
    s = score_map(m, lesion)
    # pairs (lesion, healthy) ranked correctly: 3 lesion x 7 healthy = 21 pairs; voxel 6 (0.9)
    # beats lesion voxels 7 (0.6) and 8 (0.8): 2 wrong pairs -> AUROC = 19/21
    assert s["auroc"] == pytest.approx(19 / 21)
    # average precision: ranked 1.0(+) 0.9(-) 0.8(+) 0.6(+): AP = (1/1 + 2/3 + 3/4) / 3
    assert s["auprc"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert s["pointing_game"] == 1.0  # max (1.0) is voxel 9, in the lesion
    # positive share: (0.6+0.8+1.0) / sum(m)
    assert s["positive_share"] == pytest.approx(2.4 / m.sum())
    assert s["lesion_voxels"] == 3 and s["voxels"] == 10


def test_partial_auc_is_mcclish_standardised():
    m, lesion = _case()
    s = score_map(m, lesion)
    # FPR <= 0.1 with 7 negatives: the ROC up to 1/7 negatives... computed via the formula:
    # raw pAUC = area under ROC for FPR in [0, 0.1]; the first negative (0.9) comes after
    # 1 positive -> TPR = 1/3 on FPR in [0, 1/7): raw = 0.1 * 1/3
    raw = 0.1 * (1 / 3)
    min_area, max_area = 0.5 * 0.1 ** 2, 0.1
    expected = 0.5 * (1 + (raw - min_area) / (max_area - min_area))
    assert s["pauc_fpr10"] == pytest.approx(expected)


def test_perfect_and_inverted_maps():
    lesion = np.zeros((4, 5, 6), np.uint8)
    lesion[1:3, 1:3, 1:3] = 1
    perfect = lesion.astype(float) + 0.01 * np.random.default_rng(0).random(lesion.shape)
    s = score_map(perfect, lesion, threshold=0.5)
    assert s["dice"] == 1.0 and s["auroc"] == 1.0 and s["pauc_fpr10"] == 1.0 and s["auprc"] == pytest.approx(1.0)
    inv = score_map(-perfect, lesion, threshold=-0.5)
    assert inv["auroc"] == 0.0 and inv["pointing_game"] == 0.0
    assert inv["positive_share"] is None  # no positive mass at all
    # |map| makes the inverted map perfect again
    assert score_map(-perfect, lesion, use_abs=True, threshold=0.5)["dice"] == 1.0


def test_percentile_threshold_keeps_top_fraction():
    rng = np.random.default_rng(1)
    m = rng.random(1000)
    lesion = np.zeros(1000, np.uint8)
    lesion[np.argsort(m)[-50:]] = 1  # the 5 % highest values
    s = score_map(m, lesion, threshold="percentile:95")
    assert s["dice"] == pytest.approx(1.0)
    assert s["threshold"] == pytest.approx(np.percentile(m, 95))


def test_mask_restricts_every_metric():
    m, lesion = _case()
    mask = np.ones(10, bool)
    mask[6] = False  # drop the false positive
    s = score_map(m, lesion, mask=mask, threshold=0.55)
    assert s["dice"] == 1.0 and s["auroc"] == 1.0 and s["voxels"] == 9
    # a maximum outside the mask does not count for the pointing game
    m2 = m.copy()
    m2[0] = 5.0
    mask2 = np.ones(10, bool)
    mask2[0] = False
    assert score_map(m2, lesion)["pointing_game"] == 0.0
    assert score_map(m2, lesion, mask=mask2)["pointing_game"] == 1.0


def test_empty_lesion_conventions():
    m = np.linspace(0, 1, 20)
    s = score_map(m, np.zeros(20), threshold=2.0)  # nothing predicted, nothing true
    assert s["dice"] == 1.0 and s["auroc"] is None and s["pointing_game"] is None
    assert score_map(m, np.zeros(20), threshold=0.5)["dice"] == 0.0


def test_volumes_must_share_grid():
    arr = np.zeros((3, 4, 5), np.float32)
    a = Volume(arr)
    b = Volume(arr.astype(np.uint8), spacing=(2, 1, 1))
    with pytest.raises(InputError, match="same grid"):
        score_map(a, b)
    with pytest.raises(InputError, match="shape"):
        score_map(np.zeros((3, 4)), np.zeros((4, 3)))
    with pytest.raises(InputError, match="threshold"):
        score_map(np.arange(4.0), np.array([0, 0, 1, 1]), threshold="best-ever")
    with pytest.raises(InputError, match="NaN"):
        score_map(np.array([np.nan, 1.0]), np.array([0, 1]))


def test_choose_threshold_maximises_pooled_f1():
    m, lesion = _case()
    t = choose_threshold([m], [lesion])
    # thresholds >= 0.6 keep {7,8,9} plus 6 (0.9) when t <= 0.9: best F1 at t = 0.6 (6/7)
    # versus t = 0.8 (P=2/3? no: {6,8,9} -> 2 TP / 3 pred, F1 = 2/3) and t = 1.0 (F1 = 0.5)
    assert t == pytest.approx(0.6)
    assert score_map(m, lesion, threshold=t)["dice"] == pytest.approx(6 / 7)
    with pytest.raises(InputError):
        choose_threshold([m], [np.zeros(10)])


def test_map_correlation():
    rng = np.random.default_rng(2)
    a = rng.random((5, 6, 7))
    assert map_correlation(a, 3 * a + 1) == pytest.approx(1.0)
    assert map_correlation(a, -a) == pytest.approx(-1.0)
    assert map_correlation(a, a ** 3, method="spearman") == pytest.approx(1.0)
    assert map_correlation(a, a ** 3) < 0.999  # Pearson sees the non-linearity
    assert map_correlation(a, np.zeros_like(a)) == 0.0
    b = rng.random((5, 6, 7))
    assert abs(map_correlation(a, b)) < 0.2


def test_summarize_scores_skips_missing():
    s = summarize_scores([{"dice": 0.5, "auroc": None}, {"dice": 1.0, "auroc": 0.8}], keys=("dice", "auroc"))
    assert s["dice"]["mean"] == pytest.approx(0.75) and s["auroc"]["n"] == 1


def test_metric_key_lists_name_score_map_entries():
    """The one list of metric names: every key is a ``score_map`` entry, the table and headline
    lists are subsets of the full one, and ``summarize_scores`` averages the full one."""
    m, lesion = _case()
    s = score_map(m, lesion, threshold=0.55)
    assert set(SCORE_KEYS) <= set(s)
    assert set(TABLE_KEYS) <= set(SCORE_KEYS) and set(HEADLINE_KEYS) <= set(TABLE_KEYS)
    assert tuple(summarize_scores([s])) == SCORE_KEYS
