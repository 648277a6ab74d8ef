"""The gate and the result object, with stand-in correctors of known behaviour (an identity, an
eraser, one that redraws every slice), and the exact geometry of every output."""

from pathlib import Path

import numpy as np
import pytest
import torch

from clinicalai.errors import InputError, ModelError
from clinicalai.models import LoadedModel, parse_card
from clinicalai.segcorrect.pipeline import (
    CORRECTED, KEPT_RAW, CorrectionResult, correct_mask, gate_slice, label_dice, repair_slice,
)
from clinicalai.segcorrect.validity import CARDIAC_VALUES
from clinicalai.segcorrect.validity import check_slice
from clinicalai.volume import Volume

LABELS = [{"name": "RV", "value": 1}, {"name": "MYO", "value": 2}, {"name": "LV", "value": 3}]


class _Identity(torch.nn.Module):
    """Returns its (current-slice) one-hot input as logits: a corrector that changes nothing."""

    in_channels = 4

    def forward(self, x):
        return 10.0 * x[:, :4]


class _Eraser(_Identity):
    def forward(self, x):
        out = torch.zeros_like(x[:, :4])
        out[:, 0] = 10.0
        return out


class _Redraw(_Identity):
    """Draws the same valid heart, far from the input, on every slice (a hallucination)."""

    def forward(self, x):
        yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
        r_lv = ((yy - 100) ** 2 + (xx - 100) ** 2).sqrt()
        lab = torch.zeros(128, 128, dtype=torch.long)
        lab[r_lv <= 14] = 2
        lab[r_lv <= 9] = 3
        oh = torch.nn.functional.one_hot(lab, 4).permute(2, 0, 1).float() * 10
        return oh[None].expand(x.shape[0], -1, -1, -1).clone()


class _FillAndShrink(_Identity):
    """Fills the LV's holes (the repair a slice needs) and also peels one pixel off the outside
    of the myocardium (smoothing that fixes nothing): the gate must take only the first."""

    def forward(self, x):
        from scipy import ndimage

        labels = x[:, :4].argmax(1).numpy()
        for k, lab in enumerate(labels):
            lv = ndimage.binary_fill_holes(lab == 3)
            lab[lv] = 3
            outside = ~ndimage.binary_fill_holes(lab > 0)
            lab[(lab == 2) & ndimage.binary_dilation(outside)] = 0
            labels[k] = lab
        oh = torch.nn.functional.one_hot(torch.from_numpy(labels), 4).permute(0, 3, 1, 2).float()
        return 10.0 * oh


def _model(module, labels=LABELS, channels=4):
    card = parse_card({"name": "stand-in", "task": "mask-correction", "format": "state_dict", "spatial_dims": 2,
                       "architecture": {"name": "clinicalai.networks.NVAE"}, "labels": labels,
                       "input": {"channels": channels, "size": [128, 128]}})
    return LoadedModel(card=card, backend="torch", path=Path("stand-in.pt"), module=module.eval())


def _oblique_mask(draw, n=5):
    """A (z, y, x) mask with oblique direction and anisotropic spacing; slice 2 is broken."""
    heart = draw.heart(shape=(80, 96), lv_center=(40, 55), rv_center=(40, 38))
    arr = np.stack([heart] * n).astype(np.uint8)
    arr[2][draw.disc(heart.shape, (40, 55), 2)] = 0  # hole in the LV: invalid
    c, s = np.cos(0.4), np.sin(0.4)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]])
    return Volume(arr, spacing=(1.3, 1.7, 8.0), origin=(-12.5, 40.25, 7.0), direction=direction, modality="SEG")


def test_valid_slices_are_never_replaced_and_geometry_is_exact(draw):
    mask = _oblique_mask(draw)
    res = correct_mask(mask, _model(_Redraw()))
    for vol in (res.raw, res.corrected, res.final):
        assert vol.same_grid(mask, atol=0)
        assert np.array_equal(vol.direction, mask.direction) and vol.spacing == mask.spacing and vol.origin == mask.origin
    for d in res.slices:
        if d.valid_before:
            assert d.decision == KEPT_RAW
            assert np.array_equal(res.final.array[d.index], mask.array[d.index])
    # the redrawn slice is valid, but it is not this patient's heart: rejected
    d2 = res.slices[2]
    assert not d2.valid_before and d2.valid_after and d2.decision == KEPT_RAW
    assert "redraws" in d2.reason
    assert np.array_equal(res.final.array, mask.array)


def test_identity_corrector_round_trips_on_the_input_grid(draw):
    mask = _oblique_mask(draw)
    res = correct_mask(mask, _model(_Identity()))
    # network space is 128 x 128 over a heart-sized box: the round trip may move a boundary
    # pixel, never the structures (a misplaced frame would drop the Dice far lower)
    for z in range(mask.shape[0]):
        assert label_dice(res.corrected.array[z], mask.array[z], (1, 2, 3)) > 0.95


def test_eraser_is_rejected(draw):
    mask = _oblique_mask(draw)
    res = correct_mask(mask, _model(_Eraser()))
    assert res.slices[2].decision == KEPT_RAW and "erased" in res.slices[2].reason
    assert np.array_equal(res.final.array, mask.array)
    ungated = correct_mask(mask, _model(_Eraser()), gate=False)
    assert not ungated.final.array.any()  # without the gate the study's method would erase everything


def test_repair_takes_the_regions_that_fix_the_slice_and_nothing_else(draw):
    truth = draw.heart(shape=(64, 64))
    raw = truth.copy()
    raw[draw.disc(raw.shape, (32, 38), 2)] = 0          # a hole in the LV
    raw[draw.disc(raw.shape, (8, 8), 2)] = 1            # a stray RV blob
    assert set(check_slice(raw).failed) >= {"lv_no_holes", "rv_one_component"}
    proposal = truth.copy()                              # fixes both ...
    ring = draw.disc(raw.shape, (32, 38), 11) & ~draw.disc(raw.shape, (32, 38), 10)
    proposal[ring & (truth == 2)] = 0                    # ... and thins the myocardium everywhere
    repaired, validity = repair_slice(raw, proposal, CARDIAC_VALUES, min_agreement=0.9)
    assert validity.valid
    assert np.array_equal(repaired, truth)               # the thinning was not taken
    # a proposal that can only make the slice valid by erasing a structure is not used
    kept, validity = repair_slice(raw, np.where(raw == 3, 0, raw), CARDIAC_VALUES, min_agreement=0.0)
    assert (kept == 3).any() and not validity.valid
    # nor one that moves the slice further from the raw mask than min_agreement allows
    kept, validity = repair_slice(raw, proposal, CARDIAC_VALUES, min_agreement=0.9999)
    assert np.array_equal(kept, raw) and not validity.valid


def test_gate_uses_the_smallest_repair_of_a_correction(draw):
    mask = _oblique_mask(draw)
    res = correct_mask(mask, _model(_FillAndShrink()))
    d2 = res.slices[2]
    assert not d2.valid_before and d2.valid_after and d2.decision == CORRECTED
    assert "pixels changed" in d2.reason and 0 < d2.pixels_changed <= 30
    # the network also thinned every slice's myocardium; only the hole of slice 2 was taken
    assert np.array_equal(np.delete(res.final.array, 2, 0), np.delete(mask.array, 2, 0))
    assert check_slice(res.final.array[2]).valid
    assert label_dice(res.final.array[2], mask.array[1], (1, 2, 3)) > 0.99  # slice 1 is the intact heart
    # the network's output is kept apart: on slice 2 it differs from the repair by the thinning
    assert (res.network.array[2] != res.corrected.array[2]).sum() > 20
    assert np.array_equal(np.delete(res.network.array, 2, 0), np.delete(res.corrected.array, 2, 0))
    assert res.to_dict()["slices"][2]["pixels_changed"] == d2.pixels_changed
    ungated = correct_mask(mask, _model(_FillAndShrink()), gate=False)
    assert np.array_equal(ungated.final.array, ungated.network.array)


def test_gate_rules():
    valid = check_slice(np.zeros((8, 8), np.uint8))
    bad = check_slice(np.array([[0, 3, 0], [0, 0, 0], [0, 3, 0]], np.uint8))
    assert gate_slice(valid, bad, 0.1, False, False)[0] == KEPT_RAW
    assert gate_slice(bad, valid, 0.99, False, False)[0] == CORRECTED
    assert gate_slice(bad, bad, 0.99, False, False)[0] == KEPT_RAW
    assert gate_slice(bad, valid, 0.3, False, False)[0] == KEPT_RAW
    assert gate_slice(bad, valid, 0.99, False, True)[0] == KEPT_RAW
    decision, reason = gate_slice(bad, valid, 0.99, False, False, confidence=0.99, confidence_threshold=0.95)
    assert decision == KEPT_RAW and "confident" in reason
    assert gate_slice(bad, valid, 0.99, False, False, confidence=0.5, confidence_threshold=0.95)[0] == CORRECTED


def test_result_report_and_user_choices(draw):
    mask = _oblique_mask(draw)
    res = correct_mask(mask, _model(_Redraw()), min_agreement=0.0)  # accept the redraw on slice 2
    assert isinstance(res, CorrectionResult)
    assert res.corrected_slices == [2]
    d = res.to_dict()
    assert d["summary"]["corrected"] == 1 and d["summary"]["slices"] == 5
    assert "lv_no_holes" in d["slices"][2]["failed_before"]
    assert set(d["timings"]) >= {"network_s", "gate_s", "total_s"}
    rows = res.table_rows()
    assert rows[2]["decision"] == CORRECTED and rows[0]["valid raw"] == "yes"
    back = res.with_choices({2: False})
    assert np.array_equal(back.array, mask.array) and back.same_grid(mask)


def test_bad_masks_and_label_mismatch(draw):
    mask = _oblique_mask(draw)
    model = _model(_Identity())
    with pytest.raises(InputError, match="label value"):
        correct_mask(mask.with_array(np.where(mask.array == 3, 7, mask.array)), model)
    with pytest.raises(InputError, match="NaN"):
        correct_mask(mask.with_array(np.where(mask.array == 3, np.nan, mask.array.astype(float))), model)
    with pytest.raises(InputError, match="non-integer"):
        correct_mask(mask.with_array(mask.array * 0.5), model)
    with pytest.raises(InputError, match="different grids"):
        correct_mask(mask, model, image=Volume(np.ones(mask.shape, np.float32)))
    with pytest.raises(ModelError, match="no LV label"):
        correct_mask(mask, _model(_Identity(), labels=LABELS[:2] + [{"name": "aorta", "value": 3}]))
    seg_card = dict(task="segmentation")
    with pytest.raises(ModelError, match="not a mask corrector"):
        bad = _model(_Identity())
        bad.card = bad.card.model_copy(update=seg_card)
        correct_mask(mask, bad)


def test_evaluation_report_with_an_identity_corrector():
    from clinicalai.segcorrect.evaluate import evaluate_correctors, markdown_table

    rep = evaluate_correctors({"identity": _model(_Identity())}, n_cases=1, seed=1000)
    v = rep["variants"]["identity"]
    raw, gated, ungated = v["raw"], v["gated"], v["ungated"]
    assert rep["data"]["synthetic"] and rep["data"]["corrupted_slices"] > 0
    assert 0.3 < raw["dice"]["mean"] < 1.0  # corrupted, not destroyed
    assert raw["hd95"]["mean"] > 0 and raw["assd"]["mean"] > 0
    # an identity network cannot make invalid slices valid: the gate keeps every raw slice
    assert gated["dice"]["mean"] == pytest.approx(raw["dice"]["mean"])
    assert gated["dice_change"]["degraded_0.02"] == 0 and gated["dice_change"]["improved_0.02"] == 0
    assert abs(ungated["dice"]["mean"] - raw["dice"]["mean"]) < 0.03
    assert sum(gated["dice_change"]["histogram"]["counts"]) == gated["dice_change"]["slices"]
    table = markdown_table(rep)
    assert "Not patient data" in table and table.count("| identity") == 3


def test_progress_and_cancel(draw):
    from clinicalai.errors import Cancelled
    from clinicalai.progress import CancelToken

    mask = _oblique_mask(draw)
    seen = []
    correct_mask(mask, _model(_Identity()), progress=lambda f, m: seen.append(f))
    assert seen and seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        correct_mask(mask, _model(_Identity()), cancel=token)
