"""Domain-randomised training images (clinicalai.label_synth, the ``synth`` augmentation
preset): the label map is kept, the image is drawn from it with intensities that change from
draw to draw, its structures sit where the labels are, and a tiny training with the preset
still learns."""

import json

import numpy as np
import pytest
import torch

from clinicalai.augment import SYNTH_AUGMENTATION, augmentation_params, make_augmenter
from clinicalai.errors import InputError
from clinicalai.label_synth import RandLabelSynthd, background_classes
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.segcorrect.data import case_slices
from clinicalai.segcorrect.segmenter import train_segmenter


@pytest.fixture(scope="module")
def whole_slice():
    """A whole-slice view of a phantom (body, lungs, heart): image (1, 64, 64) float32 in
    [0, 1] and label (1, 64, 64) float32."""
    case = cardiac_case(81, "ED", size=(128, 128), n_slices=8)
    img, lab = case_slices(case, None, (64, 64), coarse=True)
    k = int(np.argmax([(s > 0).sum() for s in lab]))
    return img[k], lab[k].astype(np.float32)


def _flat_synth(**kw):
    """Always synthesise; no texture, no partial volume: a piecewise-constant image."""
    return RandLabelSynthd("image", "label", 1.0, texture=(0.0, 0.0), pv_prob=0.0, **kw)


def _draw(step, image, label):
    out = step({"image": torch.from_numpy(image.copy()), "label": torch.from_numpy(label.copy())})
    return out["image"].numpy(), out["label"].numpy()


def test_label_kept_shape_range_and_structures_where_the_labels_are(whole_slice):
    image, label = whole_slice
    step = _flat_synth().set_random_state(0)
    for _ in range(8):
        im, lb = _draw(step, image, label)
        assert im.shape == image.shape and im.dtype == np.float32
        np.testing.assert_array_equal(lb, label)  # the label map is never touched
        assert im.min() >= 0.0 and im.max() <= 1.0 and np.isfinite(im).all()
        assert not np.allclose(im, image)  # a new image, not the phantom's
        # geometry: each heart structure is one flat intensity exactly over its label
        for k in (1, 2, 3):
            assert np.ptp(im[lb == k]) < 1e-5
        # bright-blood cine: the myocardium is darker than both blood pools in every draw
        assert im[lb == 2].mean() < min(im[lb == 1].mean(), im[lb == 3].mean())


def test_intensities_per_structure_change_between_draws(whole_slice):
    image, label = whole_slice
    step = _flat_synth(nobody_prob=0.0).set_random_state(1)
    lv, myo_minus_background = [], []
    for _ in range(16):
        im, _ = _draw(step, image, label)
        lv.append(im[label == 3].mean())
        myo_minus_background.append(im[label == 2].mean() - np.median(im[label == 0]))
    assert np.std(lv) > 0.03  # no fixed blood intensity to learn
    # the myocardium is brighter than the surroundings in some draws and darker in others
    assert min(myo_minus_background) < -0.05 and max(myo_minus_background) > 0.05


def test_background_structures_and_the_no_body_case(whole_slice):
    image, label = whole_slice
    classes = background_classes(image[0], label[0].astype(np.int64), 4)
    assert set(np.unique(classes[label[0] == 0]).tolist()) == {0, 1, 2, 3}
    # lungs (dark) and body (brighter) of the phantom fall into different classes
    smooth_dark = image[0] < np.quantile(image[0][label[0] == 0], 0.1)
    smooth_bright = image[0] > np.quantile(image[0][label[0] == 0], 0.9)
    assert np.median(classes[smooth_dark & (label[0] == 0)]) < np.median(classes[smooth_bright & (label[0] == 0)])
    im, _ = _draw(_flat_synth(nobody_prob=1.0).set_random_state(2), image, label)
    assert np.ptp(im[label == 0]) < 1e-5  # a heart in air: one flat background


def test_preset_is_seeded_json_and_2d_with_labels_only(whole_slice):
    image, label = whole_slice
    runs = [_draw(make_augmenter("synth", seed=4), image, label) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    other = _draw(make_augmenter("synth", seed=5), image, label)
    assert not np.array_equal(runs[0][0], other[0])
    assert set(np.unique(runs[0][1]).tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert json.loads(json.dumps(SYNTH_AUGMENTATION)) == SYNTH_AUGMENTATION  # goes into the card
    with pytest.raises(InputError, match="2D slices with a label map"):
        make_augmenter("synth", label_key=None)
    with pytest.raises(InputError, match="2D slices with a label map"):
        make_augmenter(augmentation_params("strong", elastic_prob=0.5), spatial_dims=3)


def test_tiny_training_with_synth_augmentation_learns_and_continues(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = dict(channels=(8, 16, 32), out_size=(64, 64), batch_size=4, lr=3e-3, augmentation="synth", seed=0)
        result = train_segmenter(6, "unet", epochs=12, out_path=tmp_path / "synth.pt", **kw)
        # a run continued from the package (--init): starts from its weights, says so in the card
        more = train_segmenter(6, "unet", epochs=1, out_path=tmp_path / "more.pt", init_from=result.path, **kw)
        with pytest.raises(InputError, match="architecture"):
            train_segmenter(6, "unet", epochs=1, init_from=result.path, **{**kw, "channels": (8, 16)})
    finally:
        torch.set_num_threads(threads)
    # chance level (random labels) gives a foreground Dice near 0.1; half the training images
    # are synthetic, the validation images are the phantoms' own
    assert result.best_val_dice > 0.3, result.history
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    card = json.loads(result.path.with_suffix(".json").read_text())
    assert card["training"]["augmentation"] == SYNTH_AUGMENTATION
    started = json.loads(more.path.with_suffix(".json").read_text())["training"]["init_from"]
    assert started["sha256"] == card["sha256"] and started["path"] == str(result.path)
    # one epoch on from a trained net is far above one epoch from scratch (0.04 in the run above)
    assert more.best_val_dice > 0.2
