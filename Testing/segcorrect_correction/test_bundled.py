"""The bundled demo corrector on held-out corrupted phantoms, and ``clinicalai segment`` end to end
with both bundled models."""

import json

import numpy as np
import pytest

from clinicalai.cli import main
from clinicalai.models import bundled_model, load_model
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.segcorrect.corruptions import corrupt_volume
from clinicalai.segcorrect.pipeline import correct_mask, label_dice
from clinicalai.segcorrect.validity import check_slice
from clinicalai.volume import read_volume, write_volume


@pytest.fixture(scope="module")
def corrector():
    return load_model(bundled_model("cardiac-nvae"), device="cpu")


def test_card_is_a_synthetic_demo(corrector):
    card = corrector.card
    assert card.task == "mask-correction" and card.synthetic_demo
    assert "not for clinical use" in card.intended_use
    assert card.architecture.name == "clinicalai.networks.NVAE"
    assert card.training.get("command", "").startswith("clinicalai train corrector")
    assert "dice_after_gated" in card.validation


def test_corrector_repairs_corrupted_phantoms(corrector):
    """Held-out phantoms (seeds unseen in training), every heart slice corrupted."""
    valid_before = valid_after = 0
    dice_before, dice_after, changes = [], [], []
    for seed in (2001, 2002, 2003):
        case = cardiac_case(seed, "ES" if seed % 2 else "ED", n_slices=8)
        truth = case.labels.array
        noisy, _ = corrupt_volume(truth, seed, probability=1.0)
        res = correct_mask(case.labels.with_array(noisy.astype(np.uint8)), corrector)
        assert res.final.same_grid(case.labels, atol=0)
        for z in range(truth.shape[0]):
            if not truth[z].any():
                continue
            valid_before += check_slice(noisy[z]).valid
            valid_after += check_slice(res.final.array[z]).valid
            b = label_dice(noisy[z], truth[z], (1, 2, 3))
            a = label_dice(res.final.array[z], truth[z], (1, 2, 3))
            dice_before.append(b)
            dice_after.append(a)
            changes.append(a - b)
        # every slice the gate changed was invalid before and is valid after
        for d in res.slices:
            if d.corrected:
                assert not d.valid_before and d.valid_after
    assert valid_after > valid_before
    # the demo corrector is under-trained; the gate takes only the parts of its output that
    # repair a slice (docs/segcorrect.md), so mean Dice does not fall and hardly any slice loses
    print(f"valid {valid_before} -> {valid_after}, Dice {np.mean(dice_before):.4f} -> {np.mean(dice_after):.4f}, "
          f"degraded > 0.02: {int(np.sum(np.array(changes) < -0.02))} of {len(changes)}")
    assert np.mean(dice_after) >= np.mean(dice_before) - 0.002
    assert np.mean(np.array(changes) < -0.02) <= 0.05
    assert min(changes) > -0.1


def test_segment_end_to_end(tmp_path, capsys):
    case = cardiac_case(3003, "ED", n_slices=7, size=(176, 176))
    write_volume(case.image, tmp_path / "image.nii.gz")
    out = tmp_path / "mask.seg.nrrd"
    rc = main(["segment", str(tmp_path / "image.nii.gz"), "-o", str(out), "--device", "cpu",
               "--report", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    mask = read_volume(out)
    image = read_volume(tmp_path / "image.nii.gz")
    assert mask.same_grid(image, atol=1e-5)
    assert {s["name"] for s in mask.metadata["segments"]} == {"RV", "MYO", "LV"}
    assert label_dice(mask.array, case.labels.array, (1, 2, 3)) > 0.6
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["segmenter"] == "cardiac-unet" and report["corrector"] == "cardiac-nvae"
    assert len(report["correction"]["slices"]) == 7
    assert len(report["segmentation"]["slice_confidence"]) == 7
