"""CT duct configuration: tubular phantom, 3D U-Net on patches, sliding-window inference."""

import numpy as np
import pytest
import torch

from clinicalai.errors import ModelError
from clinicalai.models import load_model
from clinicalai.phantoms.tubular import tubular_case, tubular_dataset
from clinicalai.segcorrect.ct import _train_transforms, train_ct_segmenter, window_hu
from clinicalai.segcorrect.segmenter import segment_volume


def test_tubular_phantom():
    c = tubular_case(3)
    assert c.image.modality == "CT" and c.image.units == "HU" and c.labels.same_grid(c.image)
    duct = c.labels.array == 1
    assert 0.002 < duct.mean() < 0.05
    # ducts are hypodense against the parenchyma around them
    from scipy import ndimage

    around = ndimage.binary_dilation(duct, iterations=3) & ~ndimage.binary_dilation(duct, iterations=1)
    assert np.median(c.image.array[duct]) < np.median(c.image.array[around]) - 40
    # branching: one connected tree per side at most, not scattered voxels
    _, n = ndimage.label(duct)
    assert 1 <= n <= 4
    np.testing.assert_array_equal(tubular_case(3).image.array, c.image.array)


def test_augmentation_keeps_image_and_label_aligned():
    c = tubular_case(5, shape=(32, 40, 40))
    item = {"image": window_hu(c.image.array)[None], "label": c.labels.array[None].astype(np.float32)}
    patches = _train_transforms((24, 24, 24), 4, seed=1, augment=True)(item)
    assert len(patches) == 4
    for p in patches:
        img, lab = np.asarray(p["image"])[0], np.asarray(p["label"])[0]
        assert img.shape == lab.shape == (24, 24, 24)
        assert set(np.unique(np.round(lab))) <= {0.0, 1.0}
        if lab.sum() > 20:  # labelled voxels stay on the dark ducts after flips/rotations/elastic
            assert img[lab > 0.5].mean() < img[(lab < 0.5) & (img > 0.1)].mean()


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases = tubular_dataset(4, seed=2, shape=(32, 48, 48))
        path = tmp_path_factory.mktemp("ct") / "ducts.pt"
        result = train_ct_segmenter(cases, epochs=18, out_path=path, channels=(4, 8, 16), patch=(24, 24, 24),
                                    samples_per_case=4, lr=1e-2, augment=False)
    finally:
        torch.set_num_threads(threads)
    return result


def test_3d_unet_learns_and_segments_on_the_input_grid(ct_model, oblique):
    # ducts are under 1 % of the voxels: an untrained or constant prediction scores ~0
    assert ct_model.best_val_dice > 0.3, ct_model.history
    model = load_model(ct_model.path, device="cpu")
    assert model.card.spatial_dims == 3 and model.card.extra_get("inference")["method"].endswith("sliding_window_inference")
    case = tubular_case(99, shape=(30, 50, 46), spacing=(0.9, 1.1, 1.6), direction=oblique, origin=(3.0, 2.0, -8.0))
    out = segment_volume(case.image, model)  # dispatches to the 3D path from the card
    assert out.frame is None and out.labels.same_grid(case.image)
    assert out.probabilities.shape == (2,) + case.image.shape
    truth = case.labels.array == 1
    pred = out.labels.array == 1
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.3
    with pytest.raises(ModelError, match="segments duct"):
        segment_volume(case.image, model, expected_labels=["RV", "MYO", "LV"])


def test_bundled_ct_model_finds_the_ducts(oblique):
    from clinicalai.models import bundled_model

    model = load_model(bundled_model("ct-ducts-unet3d"), device="cpu")
    assert model.card.synthetic_demo and model.card.validation["dice"]["duct"] > 0.8
    case = tubular_case(5001, spacing=(0.9, 0.9, 1.4), direction=oblique)
    out = segment_volume(case.image, model)
    assert out.labels.same_grid(case.image) and out.labels.metadata["segments"][0]["name"] == "duct"
    pred, truth = out.labels.array == 1, case.labels.array == 1
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8
