"""2D segmenters: learning on phantoms, two-pass inference on the input grid, clear errors."""

import argparse
import json

import numpy as np
import pytest
import torch

from clinicalai.errors import Cancelled, InputError, ModelError
from clinicalai.models import BUNDLED_MODELS_DIR, load_model, save_model
from clinicalai.networks import build_network
from clinicalai.phantoms.cardiac import CARDIAC_LABELS, cardiac_case, write_cardiac_dataset
from clinicalai.progress import CancelToken
from clinicalai.segcorrect.data import load_acdc
from clinicalai.segcorrect.segmenter import ARCHITECTURES, architecture_spec, segment_volume, train_segmenter
from clinicalai.volume import Volume


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny UNet trained for a few seconds on 4 phantom patients read back from ACDC files."""
    root = tmp_path_factory.mktemp("acdc")
    write_cardiac_dataset(root, 5, seed=3, size=(128, 128))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: one thread is faster than two contending ones
    try:
        result = train_segmenter(root, "unet", epochs=14, out_path=root / "tiny.pt", channels=(8, 16, 32),
                                 out_size=(64, 64), batch_size=8, lr=3e-3, augment=False, seed=0)
    finally:
        torch.set_num_threads(threads)
    return result


def _dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2 * (a & b).sum() / s


def test_acdc_loader_reads_phases(tmp_path):
    write_cardiac_dataset(tmp_path, 2, seed=7, size=(64, 64), n_slices=8)
    cases = load_acdc(tmp_path)
    assert [c.phase for c in cases] == ["ED", "ES", "ED", "ES"]
    assert cases[0].meta["patient"] == "patient001" and cases[0].labels.same_grid(cases[0].image)
    # the same patient at ES has a smaller LV cavity
    assert (cases[1].labels.array == 3).sum() < (cases[0].labels.array == 3).sum()
    (tmp_path / "patient002" / "patient002_frame01_gt.nii.gz").unlink()
    with pytest.raises(InputError, match="missing"):
        load_acdc(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no ACDC patient"):
        load_acdc(tmp_path / "empty")


def test_tiny_training_learns_and_saves_a_package(tiny):
    # chance level (random labels) gives a foreground Dice near 0.1 here
    assert tiny.best_val_dice > 0.5, tiny.history
    assert tiny.history[-1]["loss"] < tiny.history[0]["loss"]
    card = json.loads(tiny.path.with_suffix(".json").read_text())
    # trained from a folder: the card cannot claim the data were synthetic
    assert card["task"] == "segmentation" and card["spatial_dims"] == 2 and card["synthetic_demo"] is False
    assert [(lab["name"], lab["value"]) for lab in card["labels"]] == [(lab["name"], lab["value"]) for lab in CARDIAC_LABELS]
    assert card["input"]["normalization"] == {"kind": "percentile", "lower": 1.0, "upper": 99.0, "region": "crop"}
    assert card["validation"]["network_space_dice"]["mean"] == pytest.approx(tiny.best_val_dice, abs=1e-4)
    # the whole two-pass pipeline on the held-out volumes is recorded too, and is far above chance
    assert set(card["validation"]["dice"]) == {"RV", "MYO", "LV", "mean"} and card["validation"]["dice"]["mean"] > 0.3
    assert card["architecture"]["name"] == "monai.networks.nets.UNet"


def test_segment_volume_on_oblique_grid(tiny, oblique):
    model = load_model(tiny.path, device="cpu")
    case = cardiac_case(4321, "ED", spacing=(1.3, 1.6, 7.0), direction=oblique, origin=(5.0, -12.0, 30.0))
    seen = []
    out = segment_volume(case.image, model, progress=lambda f, m: seen.append(f))
    assert out.labels.same_grid(case.image) and out.labels.array.dtype == np.uint8
    assert out.labels.modality == "SEG" and [s["name"] for s in out.labels.metadata["segments"]] == ["RV", "MYO", "LV"]
    assert out.probabilities.shape == (4,) + case.image.shape and out.probabilities.dtype == np.float32
    np.testing.assert_allclose(out.probabilities.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out.probabilities.argmax(0), out.labels.array)
    assert out.slice_confidence.shape == (case.image.shape[0],)
    assert np.all((out.slice_confidence > 0.25) & (out.slice_confidence <= 1.0))
    assert seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:]))
    heart = case.labels.array > 0
    assert _dice(out.labels.array > 0, heart) > 0.5
    # the crop came from the coarse pass, and it holds the heart
    fy, fx = out.frame.center_yx
    cy, cx = np.argwhere(heart).mean(0)[1:]
    assert abs(fy - cy) * 1.6 < 25 and abs(fx - cx) * 1.3 < 25


def test_bundled_demo_model_scores_high(oblique):
    path = BUNDLED_MODELS_DIR / "cardiac-unet.pt"
    model = load_model(path, device="cpu")
    assert model.card.synthetic_demo and model.card.validation["dice"]["mean"] > 0.8
    scores = {k: [] for k in (1, 2, 3)}
    for seed, phase in ((90001, "ED"), (90002, "ES")):
        case = cardiac_case(seed, phase, direction=oblique)
        out = segment_volume(case.image, model)
        assert out.labels.same_grid(case.image)
        for k in scores:
            scores[k].append(_dice(out.labels.array == k, case.labels.array == k))
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    assert mean[3] > 0.85 and mean[1] > 0.8 and mean[2] > 0.7, mean


def test_bad_images_are_refused(tiny):
    model = load_model(tiny.path, device="cpu")
    case = cardiac_case(11, "ED", size=(96, 96), n_slices=8)
    with pytest.raises(InputError, match="2D"):
        segment_volume(Volume(case.image.array[:1]), model)
    bad = case.image.array.copy()
    bad[2, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        segment_volume(case.image.with_array(bad), model)
    with pytest.raises(InputError, match="constant"):
        segment_volume(case.image.with_array(np.zeros_like(bad)), model)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment_volume(case.image, model, cancel=token)


def test_mismatched_models_are_refused(tiny, tmp_path):
    card = json.loads(tiny.path.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="needs LV"):
        segment_volume(cardiac_case(1).image, load_model(tiny.path), expected_labels=["LV"])
    # a card that lists two labels for a 4-output network
    two = dict(card, labels=card["labels"][:2])
    save_model(tiny.module, two, tmp_path / "two.pt")
    with pytest.raises(ModelError, match="outputs 4 channels"):
        segment_volume(cardiac_case(1, size=(96, 96)).image, load_model(tmp_path / "two.pt"))
    cls = dict(card, task="classification", classes=["a", "b"], labels=[])
    save_model(tiny.module, cls, tmp_path / "cls.pt")
    with pytest.raises(ModelError, match="not a segmentation model"):
        segment_volume(cardiac_case(1).image, load_model(tmp_path / "cls.pt"))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_is_a_monai_network(arch):
    spec = architecture_spec(arch, (12, 24, 48, 96))
    assert spec["name"].startswith("monai.networks.nets.")
    net = build_network(spec["name"], spec["kwargs"]).eval()
    with torch.no_grad():
        y = net(torch.zeros(1, 1, 128, 128))
    assert tuple(y.shape) == (1, 4, 128, 128)
    if arch == "resunet":
        assert spec["kwargs"]["num_res_units"] == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    from clinicalai.segcorrect.segmenter_cli import main, register_train_segmenter

    out = tmp_path / "m.pt"
    assert main(["--phantoms", "1", "-o", str(out)]) == 1
    assert main(["--data", str(tmp_path / "none"), "-o", str(out)]) == 1
    assert main(["--phantoms", "4", "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("clinicalai: error:") for line in err)
    assert not list(tmp_path.iterdir())
    # registered under 'train' the way clinicalai.cli builds it
    parser = argparse.ArgumentParser()
    top = parser.add_subparsers(dest="command")
    train = top.add_parser("train").add_subparsers(dest="what")
    register_train_segmenter(argparse.Namespace(top=top, train=train, evaluate=None))
    args = parser.parse_args(["train", "segmenter", "--phantoms", "6", "--arch", "swin-unetr", "-o", str(out)])
    assert args.arch == "swin-unetr" and args.func.__name__ == "run_train_segmenter"


def test_train_segmenter_through_the_clinicalai_command(tmp_path, capsys):
    from clinicalai.cli import main as cli_main

    assert cli_main(["train", "segmenter", "--phantoms", "1", "-o", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 2" in err[0]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("arch", ["resunet", "attention-unet"])
def test_other_architectures_train_save_load_and_segment(arch, tmp_path):
    from clinicalai.phantoms.cardiac import cardiac_dataset

    cases = cardiac_dataset(4, seed=5, size=(96, 96), n_slices=8)
    result = train_segmenter(cases, arch, epochs=1, channels=(8, 16, 32), out_size=(64, 64), out_path=tmp_path / "m.pt")
    model = load_model(result.path, device="cpu")
    assert model.card.architecture.kwargs == architecture_spec(arch, (8, 16, 32))["kwargs"]
    out = segment_volume(cases[0].image, model)
    assert out.labels.same_grid(cases[0].image)


def test_weight_averaging_keeps_the_mean_of_the_epochs_weights(tmp_path):
    """--average-from: the saved weights are the mean of those after each averaged epoch
    (training is deterministic, so a 1-epoch and a 2-epoch run give the two epochs' weights)."""
    from clinicalai.phantoms.cardiac import cardiac_dataset

    cases = cardiac_dataset(4, seed=5, size=(96, 96), n_slices=8)
    kw = dict(channels=(8, 16, 32), out_size=(64, 64), batch_size=4, augmentation="synth", seed=0)
    first = train_segmenter(cases, "unet", epochs=1, average_from=1, **kw).module.state_dict()
    second = train_segmenter(cases, "unet", epochs=2, average_from=2, **kw).module.state_dict()
    both = train_segmenter(cases, "unet", epochs=2, average_from=1, out_path=tmp_path / "avg.pt", **kw)
    weights = [k for k in first if "running" not in k and "num_batches" not in k]
    assert any(not torch.equal(first[k], second[k]) for k in weights)  # the second epoch moved them
    for k in weights:
        torch.testing.assert_close(both.module.state_dict()[k], (first[k] + second[k]) / 2)
    # batch-norm statistics are recomputed for the averaged weights, not taken from an epoch
    running = [k for k in first if k.endswith("running_mean")]
    assert running and all(not torch.equal(both.module.state_dict()[k], second[k]) for k in running)
    card = json.loads((tmp_path / "avg.json").read_text())
    assert card["training"]["weight_averaging"]["epochs"] == [1, 2]
    assert card["training"]["weight_averaging"]["val_dice"] == round(card["validation"]["network_space_dice"]["mean"], 4)
    # the saved package holds the averaged weights
    loaded = load_model(tmp_path / "avg.pt", device="cpu").module.state_dict()
    assert all(torch.equal(loaded[k], both.module.state_dict()[k]) for k in weights)
    with pytest.raises(InputError, match="average_from"):
        train_segmenter(cases, "unet", epochs=2, average_from=3, **kw)


def test_cli_average_from_past_the_last_epoch_is_one_clear_error(tmp_path, capsys):
    from clinicalai.cli import main as cli_main

    out = tmp_path / "m.pt"
    assert cli_main(["train", "segmenter", "--phantoms", "4", "--epochs", "2", "--average-from", "3", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--average-from" in err[0]
    assert not list(tmp_path.iterdir())
