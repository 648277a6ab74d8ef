"""``clinicalai segment`` / ``correct`` / ``train corrector``: errors are one line and leave no
file behind; the success paths write the mask and the report."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from clinicalai.cli import main
from clinicalai.models import save_model
from clinicalai.networks.nvae import NVAE
from clinicalai.phantoms.cardiac import CARDIAC_LABELS, cardiac_case
from clinicalai.segcorrect.corrector_training import CorrectorConfig, corrector_card
from clinicalai.volume import read_volume, write_volume


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("segcorrect-cli")
    import torch

    torch.manual_seed(0)
    cfg = CorrectorConfig(latent_channels=8)
    save_model(NVAE(**cfg.network_kwargs()), corrector_card(cfg, CARDIAC_LABELS, name="tiny"), d / "tiny.pt")
    other = [{"name": n, "value": v} for n, v in (("duct", 1), ("vessel", 2), ("liver", 3))]
    save_model(NVAE(**cfg.network_kwargs()), corrector_card(cfg, other, name="other"), d / "other.pt")
    case = cardiac_case(11, "ED", n_slices=6, size=(160, 160))
    write_volume(case.image, d / "image.nii.gz")
    write_volume(case.labels, d / "mask.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((64, 64)).astype(np.float32)), str(d / "flat.nii.gz"))
    nan = case.image.array.copy()
    nan[2, 10, 10] = np.nan
    write_volume(case.image.with_array(nan), d / "nan.nrrd")  # SimpleITK reads NaN in NIfTI as 0
    write_volume(case.image.with_array(np.zeros_like(nan)), d / "empty.nii.gz")
    write_volume(case.labels.with_array(np.where(case.labels.array == 3, 5, case.labels.array).astype(np.uint8)),
                 d / "mask5.nii.gz")
    write_volume(case.labels.with_array(np.zeros_like(case.labels.array)), d / "mask0.nii.gz")
    return d


def _fails(capsys, argv, out, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert err.count("\n") == 0 and err.startswith("clinicalai: error:"), err
    assert match in err, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("image, match", [("flat.nii.gz", "2D"), ("nan.nrrd", "NaN or infinite"), ("empty.nii.gz", "constant")])
def test_segment_bad_images(files, tmp_path, capsys, image, match):
    out = tmp_path / "mask.seg.nrrd"
    report = tmp_path / "r.json"
    _fails(capsys, ["segment", str(files / image), "-o", str(out), "--corrector", str(files / "tiny.pt"),
                    "--report", str(report)], out, match)
    assert not report.exists()


def test_segment_label_mismatch(files, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    _fails(capsys, ["segment", str(files / "image.nii.gz"), "-o", str(out), "--corrector", str(files / "other.pt")],
           out, "do not match")


def test_correct_bad_masks(files, tmp_path, capsys):
    out = tmp_path / "fixed.nii.gz"
    _fails(capsys, ["correct", str(files / "mask5.nii.gz"), "-o", str(out), "--corrector", str(files / "tiny.pt")],
           out, "label value")
    _fails(capsys, ["correct", str(files / "mask0.nii.gz"), "-o", str(out), "--corrector", str(files / "tiny.pt")],
           out, "empty")
    _fails(capsys, ["correct", str(files / "mask.nii.gz"), "-o", str(out), "--corrector", str(files / "other.pt")],
           out, "no RV, MYO, LV label")
    _fails(capsys, ["correct", str(files / "mask.nii.gz"), "-o", str(out), "--corrector", str(files / "tiny.pt"),
                    "--image", str(files / "flat.nii.gz")], out, "different grids")
    _fails(capsys, ["correct", str(files / "mask.nii.gz"), "-o", str(tmp_path / "fixed.png")], tmp_path / "fixed.png",
           ".nii")


def test_correct_writes_mask_and_report_on_the_input_grid(files, tmp_path, capsys):
    out = tmp_path / "fixed.seg.nrrd"
    report = tmp_path / "r.json"
    raw_out = tmp_path / "raw.nii.gz"
    rc = main(["correct", str(files / "mask.nii.gz"), "-o", str(out), "--image", str(files / "image.nii.gz"),
               "--corrector", str(files / "tiny.pt"), "--report", str(report), "--raw-output", str(raw_out)])
    assert rc == 0, capsys.readouterr().err
    mask = read_volume(files / "mask.nii.gz")
    fixed = read_volume(out)
    assert fixed.same_grid(mask, atol=1e-5)
    # the phantom's ground truth is valid on every slice: the gate keeps all of it
    assert np.array_equal(fixed.array, mask.array)
    r = json.loads(report.read_text())
    assert r["summary"]["slices"] == mask.shape[0] and r["summary"]["corrected"] == 0
    assert all(s["decision"] == "kept raw" for s in r["slices"])
    assert np.array_equal(read_volume(raw_out).array, mask.array)


def test_train_corrector_cli_errors(tmp_path, capsys):
    out = tmp_path / "c.onnx"
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "-o", str(out)], out, ".pt")
    out = tmp_path / "c.pt"
    _fails(capsys, ["train", "corrector", "--data", str(tmp_path / "nope"), "-o", str(out)], out, "no such folder")
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "--segmenter", "no-such-model", "-o", str(out)], out,
           "no bundled or user model")
    # a corrector is not a segmenter
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "--segmenter", "cardiac-nvae", "-o", str(out)], out,
           "segmentation")


def test_train_corrector_with_segmenter_outputs_records_them(tmp_path, capsys):
    out = tmp_path / "c.pt"
    rc = main(["train", "corrector", "--phantoms", "2", "--segmenter", "cardiac-unet", "--iterations", "2",
               "--batch-size", "2", "--validate", "0", "--threads", "1", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["segmenter_outputs"] == {"segmenter": "cardiac-unet", "cases": 2, "share_of_samples": 0.3}
    assert "--segmenter cardiac-unet" in card["training"]["command"]


def test_correct_with_an_image_uses_it_as_evidence(files, tmp_path, capsys):
    """Issue #14: `clinicalai correct MASK --image IMAGE --strategy evidence` judges the
    candidates of invalid slices with the image (and the valid neighbouring slices), and
    says so per slice; without --image only the raw mask and the neighbours speak."""
    from clinicalai.segcorrect.corruptions import corrupt_volume

    case = cardiac_case(11, "ED", n_slices=6, size=(160, 160))
    noisy, _ = corrupt_volume(case.labels.array, [11, 0, 7], probability=1.0, kinds=["holes", "blobs", "label_swap"])
    write_volume(case.labels.with_array(noisy.astype(np.uint8)), tmp_path / "noisy.nii.gz")
    reasons = {}
    for name, extra in (("image", ["--image", str(files / "image.nii.gz")]), ("plain", [])):
        report = tmp_path / f"{name}.json"
        rc = main(["correct", str(tmp_path / "noisy.nii.gz"), "-o", str(tmp_path / f"{name}.nii.gz"), *extra,
                   "--strategy", "evidence", "--report", str(report)])
        assert rc == 0, capsys.readouterr().err
        r = json.loads(report.read_text())
        assert r["summary"]["valid_raw"] < r["summary"]["slices"]  # there is something to judge
        reasons[name] = [s["reason"] for s in r["slices"] if s["candidates"]]
    assert reasons["image"] and all("image" in why for why in reasons["image"] if "chosen by" in why)
    assert any("chosen by" in why for why in reasons["image"])
    assert not any("image" in why for why in reasons["plain"])


def test_train_corrector_new_option_errors(tmp_path, capsys):
    out = tmp_path / "c.pt"
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "--shifted", "3", "-o", str(out)], out, "--shifted needs --segmenter")
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "--kl-warmup", "later", "-o", str(out)], out, "--kl-warmup")
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "--patience", "-1", "-o", str(out)], out, "--patience")
    _fails(capsys, ["train", "corrector", "--phantoms", "2", "--pair-share", "1.5", "-o", str(out)], out, "--pair-share")


def test_train_corrector_card_records_shifted_pairs_and_checkpoint(tmp_path, capsys):
    """Issue #14: the card says how many shifted copies were learnt from, their share, the
    warm-up rule and the validation history that picked the checkpoint."""
    out = tmp_path / "c.pt"
    rc = main(["train", "corrector", "--phantoms", "2", "--segmenter", "cardiac-unet", "--shifted", "3", "--iterations", "6",
               "--batch-size", "2", "--early-stopping", "1", "--validate-every", "2", "--validate", "0", "--threads", "1",
               "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    t = json.loads(out.with_suffix(".json").read_text())["training"]
    assert t["kl_warmup"] == 2 and t["kl_warmup_rule"] == "auto"
    shifted = t["segmenter_outputs"]["shifted"]
    assert shifted["copies"] == 3 and 0 <= shifted["kept"] <= 3 and t["segmenter_outputs"]["share_of_samples"] == 0.3
    cv = t["checkpoint_validation"]
    assert cv["phantom_seeds"] == [1100, 1100] and cv["iterations"] == [1, 3, 5]  # every 2nd from the end of the warm-up (2)
    assert len(cv["dice"]) == len(cv["valid"]) == 3 and t["best_iteration"] in cv["iterations"]
