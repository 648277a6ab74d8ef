"""The augmentation factory (clinicalai.augment): geometry and labels kept consistent,
deterministic with a seed, and a tiny training still learns with the strong preset."""

import json

import numpy as np
import pytest
import torch

from clinicalai.augment import STRONG_AUGMENTATION, augmentation_params, make_augmenter
from clinicalai.errors import InputError
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.segcorrect.data import case_slices
from clinicalai.segcorrect.segmenter import train_segmenter


@pytest.fixture(scope="module")
def pair():
    """One heart-crop slice of a phantom: image (1, 64, 64) float32 and label (1, 64, 64) float32."""
    case = cardiac_case(77, "ED", size=(128, 128), n_slices=8)
    img, lab = case_slices(case, None, (64, 64))
    k = int(np.argmax([(s > 0).sum() for s in lab]))
    return img[k], lab[k].astype(np.float32)


def _run(aug, image, label):
    out = aug({"image": torch.from_numpy(image.copy()), "label": torch.from_numpy(label.copy())})
    return out["image"].numpy(), out["label"].numpy()


def test_shapes_dtypes_and_label_values_are_kept(pair):
    image, label = pair
    aug = make_augmenter("strong", seed=1)
    for _ in range(12):
        im, lb = _run(aug, image, label)
        assert im.shape == image.shape and lb.shape == label.shape
        assert im.dtype == np.float32 and lb.dtype == np.float32
        # nearest resampling: no value between labels, none outside 0..3
        assert set(np.unique(lb).tolist()) <= {0.0, 1.0, 2.0, 3.0}
        assert np.isfinite(im).all()


def test_rotation_is_applied_to_image_and_label_together(pair):
    image, label = pair
    # geometry only, always applied: a pure rotation of any angle
    params = augmentation_params("strong", affine_prob=1.0, scale=[0.0, 0.0], shear=0.0, translate_px=0.0,
                                 drop_context_prob=0.0, bias_prob=0.0, contrast_prob=0.0, histogram_prob=0.0,
                                 smooth_prob=0.0, noise_prob=0.0)
    im, lb = _run(make_augmenter(params, seed=3), image, label)
    assert (lb != label).mean() > 0.02  # the label moved
    # ... and the image moved with it: blood (LV) stays bright, myocardium dark, under the new label
    assert im[lb == 3].mean() > im[lb == 2].mean() + 0.2
    # areas are kept by a rotation (nearest resampling, within a few per cent)
    for k in (1, 2, 3):
        assert (lb == k).sum() == pytest.approx((label == k).sum(), rel=0.12)


def test_same_seed_same_draws_other_seed_other_draws(pair):
    image, label = pair
    a = [_run(make_augmenter("strong", seed=5), image, label) for _ in range(2)]
    np.testing.assert_array_equal(a[0][0], a[1][0])
    np.testing.assert_array_equal(a[0][1], a[1][1])
    b = _run(make_augmenter("strong", seed=6), image, label)
    assert not np.array_equal(a[0][0], b[0])


def test_dropping_the_context_keeps_the_organ():
    # a whole-slice view: the heart is small, the body around it large
    case = cardiac_case(78, "ED", size=(128, 128), n_slices=8)
    img, lab = case_slices(case, None, (64, 64), coarse=True)
    image, label = img[3], lab[3].astype(np.float32)
    assert (label > 0).mean() < 0.2
    params = augmentation_params("strong", drop_context_prob=1.0, affine_prob=0.0, bias_prob=0.0,
                                 contrast_prob=0.0, histogram_prob=0.0, smooth_prob=0.0, noise_prob=0.0)
    im, lb = _run(make_augmenter(params, seed=0), image, label)
    np.testing.assert_array_equal(lb, label)
    np.testing.assert_array_equal(im[label > 0], image[label > 0])  # the heart is untouched
    far = np.ones_like(label, bool)
    far[:, 1:-1, 1:-1] = False  # the image border lies outside any kept box here
    assert np.ptp(im[far]) == 0.0 and np.ptp(image[far]) > 0.0


def test_image_only_and_3d(pair):
    image, _ = pair
    aug = make_augmenter("strong", seed=2, label_key=None)
    out = aug({"image": torch.from_numpy(image.copy())})["image"]
    assert tuple(out.shape) == image.shape
    vol = np.random.default_rng(0).random((1, 6, 32, 32)).astype(np.float32)
    lab = (vol > 0.5).astype(np.float32)
    out3 = make_augmenter("strong", seed=2, spatial_dims=3)({"image": vol, "label": lab})
    assert out3["image"].shape == vol.shape and out3["image"].dtype == np.float32
    assert set(np.unique(out3["label"]).tolist()) <= {0.0, 1.0}


def test_bad_parameters_are_refused():
    with pytest.raises(InputError, match="preset"):
        augmentation_params("wild")
    with pytest.raises(InputError, match="rotate_degrees"):
        augmentation_params("strong", rotate_degrees=10)
    with pytest.raises(InputError, match="2D or 3D"):
        make_augmenter("strong", spatial_dims=1)
    assert json.loads(json.dumps(STRONG_AUGMENTATION)) == STRONG_AUGMENTATION  # goes into the card


def test_tiny_training_with_strong_augmentation_learns(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_segmenter(6, "unet", epochs=10, out_path=tmp_path / "aug.pt", channels=(8, 16, 32),
                                 out_size=(64, 64), batch_size=8, lr=3e-3, augmentation="strong", seed=0)
    finally:
        torch.set_num_threads(threads)
    # chance level (random labels) gives a foreground Dice near 0.1
    assert result.best_val_dice > 0.4, result.history
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    card = json.loads(result.path.with_suffix(".json").read_text())
    assert card["training"]["augmentation"] == STRONG_AUGMENTATION


def test_other_trainers_take_the_factory_as_an_option():
    """PET folds (MONAI x, y, z layout), the brain classifier (2D slices) and the generative
    models (3D volumes) build their augmentation from the same factory; bad choices are refused."""
    from clinicalai.generative.data import GridSpec
    from clinicalai.generative.train import TrainConfig as GenConfig
    from clinicalai.generative.train import train_generative
    from clinicalai.pet.train import TrainConfig, fold_augmenter

    x = np.random.default_rng(1).random((1, 22, 22, 14)).astype(np.float32)
    runs = [fold_augmenter(TrainConfig(augmentation="strong", seed=4))(torch.from_numpy(x)) for _ in range(2)]
    assert tuple(runs[0].shape) == x.shape
    np.testing.assert_array_equal(np.asarray(runs[0]), np.asarray(runs[1]))
    assert fold_augmenter(TrainConfig(augment=False)) is None
    with pytest.raises(InputError, match="PET augmentation"):
        fold_augmenter(TrainConfig(augmentation="wild"))
    # an x-y rotation in the MONAI layout leaves a z-constant volume z-constant (no tilt across slices)
    flat = np.repeat(np.random.default_rng(2).random((1, 22, 22, 1)), 14, axis=3).astype(np.float32)
    p = augmentation_params("strong", affine_prob=1.0, bias_prob=0.0, contrast_prob=0.0, histogram_prob=0.0,
                            smooth_prob=0.0, noise_prob=0.0)
    out = np.asarray(make_augmenter(p, seed=0, spatial_dims=3, label_key=None, layout="xyz")({"image": flat})["image"])
    assert np.abs(out - out[..., :1]).max() < 1e-5 and not np.allclose(out, flat)
    # label maps (one-hot channels) cannot take intensity transforms: refused before any training
    spec = GridSpec(spacing_mm=(4.0, 4.0, 4.0), size=(8, 8, 8), input_kind="labels", label_values=(0, 11, 60))
    with pytest.raises(InputError, match="label-map"):
        train_generative(GenConfig(kind="ae", epochs=1, augmentation="strong"), spec,
                         np.zeros((2, 3, 8, 8, 8), np.float32))


def test_brain_classifier_trains_with_the_option():
    from clinicalai.attribution.constrained import train_classifier

    res = train_classifier(constraint="none", n_cases=4, epochs=1, batch_size=16, seed=0, shape=(24, 32, 32),
                           augmentation="mild")
    assert res.card["training"]["augmentation"]["rotate_deg"] == 15.0
    assert np.isfinite(res.history[-1]["bce"])
