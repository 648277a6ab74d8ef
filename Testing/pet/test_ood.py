"""The PET fold ensemble says when a PET is unlike its training PETs (a distance in each fold's
own features, ``clinicalai.models.ood``; issue 19's "out-of-distribution honesty"): on the
bundled folds with their cards' references, on a real T1 brain MR the project did not make,
and in every card that ``train_folds`` writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("nilearn")

from clinicalai.errors import ModelError  # noqa: E402
from clinicalai.models import load_model  # noqa: E402
from clinicalai.models.ood import THRESHOLD_MARGIN, feature_layers  # noqa: E402
from clinicalai.networks.pet_cnns import CNN3D  # noqa: E402
from clinicalai.pet.calibration import uncertainty  # noqa: E402
from clinicalai.pet.workflow import bundled_pet_models, load_pet_models, predict_pet  # noqa: E402
from clinicalai.phantoms.mni import mni_pet_case  # noqa: E402
from clinicalai.volume import read_volume  # noqa: E402

REAL_T1 = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


@pytest.fixture(scope="module")
def folds():
    return load_pet_models(device="cpu")


@pytest.fixture(scope="module")
def heldout_case():
    return mni_pet_case(1, recurrence=True)


def _unlike(result) -> list:
    return [r for r in result.uncertain_reasons if "unlike the PETs" in r]


def test_bundled_cards_carry_a_reference_by_layer(folds):
    for m in folds:
        ood = m.card.extra_get("ood")
        assert ood["layers"] == feature_layers(m.module) == ["features.0.0", "features.2.0"]
        assert len(ood["location"]) == 2 * (16 + 32)  # mean and max of each channel of both convolutions
        assert ood["threshold"] == pytest.approx(THRESHOLD_MARGIN * ood["validation"]["max"])


def test_heldout_pets_pass_and_noise_or_an_mr_is_flagged(folds, heldout_case):
    # a held-out template PET (a generator no fold trained on) is not flagged, at any activity
    # scale (the input is min-max normalised, so the scale changes nothing the folds see)
    res = predict_pet(heldout_case.image, folds, brain_mask=heldout_case.brain_mask)
    assert not _unlike(res) and res.uncertain_reasons == uncertainty(res.probability, res.fold_probabilities).reasons
    scaled = predict_pet(heldout_case.image.with_array(heldout_case.image.array / 1000.0), folds,
                         brain_mask=heldout_case.brain_mask)
    assert not _unlike(scaled) and scaled.probability == pytest.approx(res.probability, abs=1e-4)

    # a cube of noise: the folds call it "recurrence" with confidence, and now say it means nothing
    image = heldout_case.image
    noise = image.with_array((np.abs(np.random.default_rng(0).normal(size=image.shape))
                              * float(np.percentile(image.array, 99))).astype(np.float32))
    flagged = predict_pet(noise, folds)
    [reason] = _unlike(flagged)
    assert flagged.uncertain and "3 of 3 folds" in reason and reason in flagged.warnings
    assert flagged.to_dict()["uncertain_reasons"] == flagged.uncertain_reasons

    # a real T1 brain MR (not a file this project made) given as an SUV image
    t1 = read_volume(REAL_T1)
    mr = predict_pet(t1.with_array(np.clip(t1.array, 0, None).astype(np.float32)), folds, units="suv")
    assert _unlike(mr) and mr.uncertain


def test_train_folds_writes_a_reference_into_every_card(trained):
    result, _ = trained
    for path in result.model_paths:
        m = load_model(path, device="cpu")
        ood = json.loads(path.with_suffix(".json").read_text())["ood"]
        # the narrow test network: four convolutions of 8-16 channels, all within the budget
        assert ood["layers"] == ["features.0.0", "features.2.0", "features.4.0", "features.6.0"] == feature_layers(m.module)
        assert len(ood["location"]) == 2 * (8 + 16 + 16 + 16)
        assert ood["validation"]["inputs"] + ood["training"]["items"] == 36  # every case: trained on or held
        assert ood["threshold"] == pytest.approx(THRESHOLD_MARGIN * ood["validation"]["max"])
        assert 0 < ood["validation"]["min"] <= ood["validation"]["max"]


def test_feature_layers_keep_the_last_convolutions_within_the_budget():
    net = CNN3D(in_channels=1, num_classes=1, channels=[8, 16, 32, 64], hidden=8)
    names = [n for n, mod in net.named_modules() if isinstance(mod, torch.nn.Conv3d)]
    assert feature_layers(net, budget=128) == names          # 8 + 16 + 32 + 64 = 120
    assert feature_layers(net, budget=112) == names[1:]      # 16 + 32 + 64
    assert feature_layers(net, budget=100) == names[2:]      # 32 + 64
    assert feature_layers(net, budget=64) == names[3:]
    assert feature_layers(net, budget=10) == names[3:]        # the last one alone is wider: reduced (below)
    with pytest.raises(ModelError, match="convolutions"):
        feature_layers(torch.nn.Sequential(torch.nn.Linear(2, 1)))


def test_a_wide_network_gets_a_reduced_reference_and_a_class_map_head_none():
    """The study's networks end in 256-2048 channels: their reference lives on the principal
    axes of the training features plus the distance to their span (a precision matrix of all
    512-4096 statistics would not fit a card); it still tells noise from the training inputs.
    SqueezeNet ends in a convolution to the class maps: no reference."""
    from clinicalai.models.ood import MAX_DIRECT_FEATURES, REDUCED_COMPONENTS, reference_distance
    from clinicalai.networks import build_network
    from clinicalai.networks.pet_cnns import pet_architecture
    from clinicalai.pet.train import fold_feature_reference

    name, kwargs = pet_architecture("squeezenet")
    assert feature_layers(build_network(name, kwargs)) == []
    name, kwargs = pet_architecture("cnn3d")
    torch.manual_seed(0)
    net = build_network(name, kwargs).eval()
    [layer] = feature_layers(net)
    assert 2 * dict(net.named_modules())[layer].out_channels > MAX_DIRECT_FEATURES
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:20, :20]
    blob = np.exp(-((y - 10) ** 2 + (x - 10) ** 2) / 30.0)[..., None] * np.ones(12)
    inputs = np.stack([(blob * rng.uniform(0.6, 1.0) + rng.normal(0, 0.02, blob.shape))[None] for _ in range(50)]).astype(np.float32)
    reference = fold_feature_reference(net, inputs, np.arange(40), np.arange(40, 50), 0)
    assert len(reference["projection"]["components"]) == REDUCED_COMPONENTS and len(reference["location"]) == REDUCED_COMPONENTS + 1
    assert reference["threshold"] == pytest.approx(THRESHOLD_MARGIN * reference["validation"]["max"])
    noise = torch.from_numpy(rng.uniform(0, 1, (1,) + inputs.shape[1:]).astype(np.float32))
    assert reference_distance(net, noise, reference) > reference["threshold"]
    like = torch.from_numpy((blob * 0.8)[None, None].astype(np.float32))
    assert reference_distance(net, like, reference) < reference["threshold"]


def test_a_reference_naming_a_missing_layer_is_one_clear_error(tmp_path, heldout_case):
    paths = []
    for pt in bundled_pet_models():
        shutil.copy(pt, tmp_path / pt.name)
        card = json.loads(pt.with_suffix(".json").read_text())
        card["ood"]["layers"] = ["features.9"]
        (tmp_path / pt.with_suffix(".json").name).write_text(json.dumps(card))
        paths.append(tmp_path / pt.name)
    with pytest.raises(ModelError, match="no layer features.9"):
        predict_pet(heldout_case.image, load_pet_models(paths, device="cpu"), brain_mask=heldout_case.brain_mask)


def test_the_distance_comes_from_the_prediction_pass_and_equals_a_separate_pass(folds, heldout_case):
    # predict_pet takes each fold's feature distance from the pass that gives P(recurrence):
    # the same numbers as a second, separate pass, one forward per fold, and no hook left behind
    from clinicalai.models.ood import reference_distance
    from clinicalai.pet.preprocess import preprocess_from_card
    from clinicalai.pet.workflow import _fold_probabilities

    pp = preprocess_from_card(heldout_case.image, folds[0].card, brain_mask=heldout_case.brain_mask)
    calls = []
    handles = [m.module.register_forward_pre_hook(lambda mod, inputs: calls.append(1)) for m in folds]
    try:
        predict_pet(heldout_case.image, folds, brain_mask=heldout_case.brain_mask)
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == len(folds)  # the check used to run a second pass per fold
    probs, distances = _fold_probabilities(folds, [pp] * len(folds), None, None)
    x = torch.from_numpy(pp.input[None].astype(np.float32))
    for m, p, d in zip(folds, probs, distances):
        assert d == pytest.approx(reference_distance(m.module, x, m.card.extra_get("ood")), rel=1e-6)
        assert not any(layer._forward_hooks for layer in m.module.modules())


def test_a_chunked_prediction_captures_the_features_of_every_item():
    # LoadedModel.predict runs in chunks (and halves them on running out of memory): the
    # capture keeps every chunk's items, in order, as one pass over the whole batch would
    from clinicalai.models.ood import FeatureCapture, network_features

    torch.manual_seed(0)
    net = CNN3D(in_channels=1, num_classes=1, channels=[8, 16, 32, 64], hidden=8).eval()
    layers = feature_layers(net)
    batch = torch.randn(3, 1, 16, 16, 16)
    batch[1] = 0.0  # an all-zero item is left out, as network_features leaves it out
    with FeatureCapture(net, layers) as capture:
        with torch.no_grad():
            net(batch[:1])  # an earlier, abandoned pass: only the last pass over the batch counts
            for i in range(3):
                net(batch[i:i + 1])
    got = capture.features(batch)
    assert got.shape[0] == 2
    np.testing.assert_allclose(got, network_features(net, batch, layers), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="whole input"):
        FeatureCapture(net, layers).features(batch)
