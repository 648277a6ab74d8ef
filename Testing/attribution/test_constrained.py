"""The attribution-constrained classifier: barrier, double backprop, TPM input, learning."""

import math

import numpy as np
import pytest
import torch

from clinicalai.attribution.constrained import (
    architecture,
    log_barrier,
    make_cases,
    phantom,
    slice_auc,
    slice_dataset,
    tissue_probability_maps,
    train_classifier,
    training_attribution,
)
from clinicalai.errors import InputError
from clinicalai.networks import build_network


def test_log_barrier_by_hand():
    t = 20.0
    z = torch.tensor([-0.5, -1 / t ** 2, 0.0, 0.3])
    psi = log_barrier(z, t)
    assert float(psi[0]) == pytest.approx(-math.log(0.5) / t)
    # continuous at -1/t^2, linear with slope t beyond it
    assert float(psi[1]) == pytest.approx(-math.log(1 / t ** 2) / t)
    assert float(psi[2]) == pytest.approx(-math.log(1 / t ** 2) / t + 1 / t)
    assert float(psi[3] - psi[2]) == pytest.approx(0.3 * t)


def test_training_attribution_keeps_the_graph():
    torch.manual_seed(0)
    arch = architecture(1)
    net = build_network(arch["name"], arch["kwargs"])
    x = torch.rand(3, 1, 16, 16)
    for method in ("gradient", "expected-gradients"):
        a = training_attribution(net, x, method, references=torch.rand(5, 1, 16, 16))
        assert a.shape == x.shape and a.requires_grad
        net.zero_grad()
        a.abs().mean().backward()  # double backprop reaches the weights
        assert net.conv1.weight.grad is not None and float(net.conv1.weight.grad.abs().sum()) > 0
    with pytest.raises(InputError):
        training_attribution(net, x, "occlusion")


def test_tissue_probability_maps_flag_the_lesion():
    case = phantom(7, pathological=True)
    tpm = tissue_probability_maps(case.image.array)
    assert tpm.shape == (4,) + case.image.shape
    assert np.all(tpm >= 0) and np.all(tpm.sum(0) <= 1 + 1e-5)
    lesion = case.lesion.array > 0
    # the "atypical" channel is high on the hyperintense lesion and low in normal brain
    normal = (case.brain_mask.array > 0) & ~lesion
    assert tpm[3][lesion].mean() > 0.3 > tpm[3][normal].mean() * 10


def test_constrained_classifier_learns():
    data = slice_dataset(make_cases(12, seed=3), slice_range=(6, 18, 1))
    test = slice_dataset(make_cases(6, seed=77))
    assert 0 < data.labels.sum() < len(data)
    res = train_classifier(constraint="gradient", alpha=1.0, epochs=5, batch_size=16, data=data, seed=0,
                           constraint_batch=4)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4, 5]
    assert res.history[-1]["barrier"] > 0
    assert res.history[-1]["bce"] < res.history[0]["bce"]
    assert slice_auc(res.module, test) > 0.8  # chance is 0.5
    card = res.card
    assert card["classes"] == ["healthy", "lesion"] and card["synthetic_demo"] is True
    assert card["training"]["constraint"] == "gradient" and card["training"]["t"] == 20.0
    with pytest.raises(InputError):
        train_classifier(constraint="shap", data=data)


def _healthy_gradient(module, data):
    x = torch.from_numpy(data.images[data.labels == 0])
    return float(training_attribution(module, x, "gradient").detach().abs().mean())


def test_the_constraint_silences_attributions_on_healthy_slices():
    data = slice_dataset(make_cases(12, seed=3), slice_range=(6, 18, 1))
    test = slice_dataset(make_cases(4, seed=77))
    kw = dict(epochs=2, batch_size=16, data=data, seed=0, constraint_batch=4)
    free = train_classifier(constraint="none", **kw)
    constrained = train_classifier(constraint="gradient", alpha=5.0, t=20.0, **kw)
    assert free.history[-1]["barrier"] == 0.0 and constrained.history[-1]["barrier"] > 0
    # same network, data and seed: the barrier pushes the healthy slices' gradients towards 0
    assert _healthy_gradient(constrained.module, test) < 0.5 * _healthy_gradient(free.module, test)


def test_expected_gradients_constraint_on_tissue_probability_maps():
    from clinicalai.attribution import attribute
    from clinicalai.attribution.preprocess import prepare_input
    from clinicalai.models import parse_card

    data = slice_dataset(make_cases(4, seed=3), input_mode="tpm", slice_range=(8, 16, 1))
    assert data.images.shape[1] == 4  # CSF, grey, white matter, atypical
    res = train_classifier(constraint="expected-gradients", alpha=1.0, input_mode="tpm", epochs=1,
                           batch_size=16, data=data, seed=0, constraint_batch=4)
    card = res.card
    assert card["input"]["input_mode"] == "tpm" and card["input"]["channels"] == 4
    assert card["training"]["constraint"] == "expected-gradients" and res.history[-1]["barrier"] > 0
    case = phantom(11, pathological=True)
    # the card makes attribute() feed the tissue maps of the one image it is given
    prep = prepare_input(case.image, parse_card(card, "test card"))
    assert tuple(prep.tensor.shape) == (case.image.shape[0], 4) + case.image.shape[1:]
    m = attribute(res.module, case.image, "gradient", target="lesion", card=card)
    assert m.volume.same_grid(case.image) and np.isfinite(m.array).all() and np.abs(m.array).max() > 0


def test_mixed_family_draws_template_cases_from_the_training_stream():
    from clinicalai.attribution.constrained import concat_slices, data_description, make_mni_cases, training_slices
    from clinicalai.phantoms.mni import MNI_LICENSE

    pytest.importorskip("nilearn")
    cases = make_mni_cases(4, seed=5)
    info = [c.image.metadata["phantom"] for c in cases]
    assert [i["stream"] for i in info] == ["train"] * 4 and [i["seed"] for i in info] == [5, 6, 7, 8]
    assert {i["contrast"] for c, i in zip(cases, info) if c.pathological} == {"T1", "FLAIR"}
    assert [c.pathological for c in cases] == [False, True, False, True]
    phantoms = slice_dataset(make_cases(2, seed=5))
    mni = slice_dataset(cases, slice_range=None)
    mixed = concat_slices([phantoms, mni])
    assert mixed.images.shape[-2:] == mni.images.shape[-2:] != phantoms.images.shape[-2:]
    assert len(mixed) == len(phantoms) + len(mni) and set(mixed.case) == set(range(6))
    # the phantom slices sit centred in the larger frame; the padding is their background level
    ny, nx = phantoms.images.shape[-2:]
    y0, x0 = (mixed.images.shape[-2] - ny) // 2, (mixed.images.shape[-1] - nx) // 2
    np.testing.assert_array_equal(mixed.images[:len(phantoms), :, y0:y0 + ny, x0:x0 + nx], phantoms.images)
    assert mixed.lesion[:len(phantoms)].sum() == phantoms.lesion.sum()
    assert abs(float(mixed.images[0, 0, 0, 0]) - float(np.median(phantoms.images[0, 0, 0]))) < 0.5
    assert np.array_equal(training_slices("mix", 2, 4, seed=5).labels, mixed.labels)
    desc = data_description("mix", 2, 4, (24, 32, 32), 5)
    assert desc["template_licence"] == MNI_LICENSE and "training stream, seeds 5-8" in desc["data"]
    with pytest.raises(InputError):
        training_slices("template", 2, 4)
    with pytest.raises(InputError):
        training_slices("mix", 2, 0)


@pytest.fixture
def one_thread():
    """One torch thread, restored afterwards: CPU results are reproducible with one thread, and
    a second one on a loaded 2-core machine ran these tests 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_classifier_learns_on_the_mixed_family(one_thread):
    """A tiny training on brain-lesion and MNI-template phantoms (both contrasts) separates lesion
    from healthy slices of unseen cases: brain-lesion phantoms and FLAIR-like template phantoms.
    T1-like template lesions are left out of the check: even the full training detects them
    barely (docs/heldout.md), a few seconds of training not at all."""
    from clinicalai.attribution.constrained import concat_slices, make_mni_cases, training_slices

    pytest.importorskip("nilearn")
    data = training_slices("mix", n_cases=6, n_mni=10, seed=3)
    res = train_classifier(constraint="none", epochs=6, batch_size=16, data=data, seed=0,
                           augmentation="mild", family="mix", n_mni=10)
    assert res.card["training"]["family"] == "mix" and res.card["training"]["augmentation"]["rotate_deg"] == 15.0
    assert res.history[-1]["bce"] < res.history[0]["bce"]
    unseen = [c for c in make_mni_cases(16, seed=500) if c.image.metadata["phantom"]["contrast"] == "FLAIR"]
    template = slice_dataset(unseen, slice_range=None)
    assert template.labels.sum() >= 5
    assert slice_auc(res.module, template) > 0.75  # chance is 0.5
    assert slice_auc(res.module, concat_slices([slice_dataset(make_cases(4, seed=77)), template])) > 0.8


def test_template_figures_of_the_bundled_classifier(one_thread):
    """The held-out template figures (docs/heldout.md, scripts/heldout_figures.py) come from one
    function: the bundled model localises a FLAIR-like lesion, not the T1-like one of seed 1."""
    from clinicalai.attribution.constrained import template_attribution_auroc, template_summary
    from clinicalai.models import load_model

    pytest.importorskip("nilearn")
    lines = []
    figs = template_attribution_auroc(load_model("brain-lesion-classifier"), n=2, seed=0, log=lines.append)
    assert set(figs) == {"FLAIR", "T1"} and len(lines) == 4
    assert figs["FLAIR"]["integrated-gradients"][0] > 0.95 > figs["T1"]["integrated-gradients"][0]
    summary = template_summary(figs, 2, 0)
    assert summary["auroc"]["T1"]["gradcam"] == {"mean": round(figs["T1"]["gradcam"][0], 4), "std": 0.0, "n": 1}
    assert "held-out stream (seeds 0-1)" in summary["data"]


def test_finer_grid_phantoms_keep_the_field_of_view_and_the_lesion_area():
    """``grid_mm`` 2: the same field of view in twice the voxels per axis; a lesion slice needs
    the same lesion area (40 voxels of 2 mm = 10 of 4 mm); a 4 mm case resampled onto the grid
    keeps its geometry and lesion."""
    from clinicalai.attribution.constrained import on_grid, phantom_geometry

    assert phantom_geometry((24, 32, 32), 2.0) == ((24, 64, 64), (2.0, 2.0, 4.0))
    assert phantom_geometry((24, 32, 32), 4.0) == ((24, 32, 32), (4.0, 4.0, 4.0))
    with pytest.raises(InputError):
        phantom_geometry((24, 32, 32), 0.0)
    fine = make_cases(2, seed=3, grid_mm=2.0)[1]
    assert fine.image.shape == (24, 64, 64) and fine.image.spacing == (2.0, 2.0, 4.0)
    data = slice_dataset([fine], slice_range=(0, 24, 1))
    per_slice = fine.lesion.array.reshape(24, -1).sum(1)
    assert data.labels.sum() == (per_slice >= 40).sum() and len(data) == 24 - ((per_slice > 0) & (per_slice < 40)).sum()
    case = phantom(7, pathological=True)
    resampled = on_grid(case, 2.0)
    assert resampled.image.shape == (24, 64, 64) and resampled.lesion.spacing == (2.0, 2.0, 4.0)
    assert np.allclose(resampled.image.grid.direction, case.image.grid.direction)
    # the physical centre stays (resample_to_spacing): half a coarse voxel minus half a fine one
    assert np.allclose(np.array(resampled.image.origin) - np.array(case.image.origin), [-1.0, -1.0, 0.0])
    assert resampled.lesion.array.sum() * 16 == pytest.approx(case.lesion.array.sum() * 64, rel=0.1)
    assert on_grid(case, 4.0) is case


def test_classifier_on_a_2mm_grid_learns_and_its_card_resamples_the_input(one_thread):
    """A tiny training with 2 mm in-plane voxels separates lesion from healthy slices of unseen
    2 mm phantoms; its card's spacing makes ``attribute`` resample a 4 mm image to 2 mm and put
    the map back on the 4 mm grid."""
    from clinicalai.attribution import attribute
    from clinicalai.attribution.constrained import card_grid_mm
    from clinicalai.attribution.preprocess import prepare_input
    from clinicalai.models import parse_card

    data = slice_dataset(make_cases(12, seed=3, grid_mm=2.0), slice_range=(6, 18, 1))
    assert data.images.shape[-2:] == (64, 64) and 0 < data.labels.sum() < len(data)
    res = train_classifier(constraint="none", epochs=8, batch_size=16, data=data, seed=0, grid_mm=2.0)
    assert res.history[-1]["bce"] < res.history[0]["bce"]
    assert slice_auc(res.module, slice_dataset(make_cases(6, seed=77, grid_mm=2.0))) > 0.8  # chance is 0.5
    card = res.card
    assert card["input"]["spacing_mm"] == [2.0, 2.0] and card_grid_mm(card) == 2.0
    assert card_grid_mm({"input": {}}) == 4.0  # a card from before the option: the 4 mm phantoms
    case = phantom(11, pathological=True)
    prep = prepare_input(case.image, parse_card(card, "test card"))
    assert tuple(prep.tensor.shape) == (24, 1, 64, 64)
    m = attribute(res.module, case.image, "gradcam", target="lesion", card=card)
    assert m.volume.same_grid(case.image) and np.isfinite(m.array).all() and m.array.max() > 0


def test_wider_network_and_card_cam_layer(tmp_path, one_thread):
    """``widths`` build a wider ResNet, ``cam_layer`` is the card's Grad-CAM layer: a saved model
    loads with both, and Grad-CAM explains that layer by default; bad values fail before training."""
    from clinicalai.attribution import attribute
    from clinicalai.models import load_model, save_model

    data = slice_dataset(make_cases(4, seed=3), slice_range=(8, 16, 1))
    res = train_classifier(constraint="gradient", alpha=1.0, epochs=1, batch_size=16, data=data, seed=0,
                           constraint_batch=4, widths=(16, 32, 64, 64), cam_layer="layer3")
    assert res.card["architecture"]["kwargs"]["block_inplanes"] == [16, 32, 64, 64]
    assert res.card["cam_layer"] == "layer3" and res.module.layer1[0].conv1.out_channels == 16
    save_model(res.module, res.card, tmp_path / "wide.pt")
    model = load_model(tmp_path / "wide.pt", device="cpu")
    case = phantom(11, pathological=True)
    cam = attribute(model, case.image, "gradcam", target="lesion")
    assert cam.layer == "layer3" and cam.volume.same_grid(case.image)
    for bad, message in (({"widths": (8, 16, 0, 32)}, "4 positive block widths"),
                         ({"widths": (8, 16, 32)}, "4 positive block widths"),
                         ({"cam_layer": "fc"}, "Grad-CAM layer must be one of"),
                         ({"grid_mm": -2.0}, "positive number of mm")):
        with pytest.raises(InputError, match=message):
            train_classifier(epochs=1, n_cases=2, **bad)


def test_template_figures_use_the_cards_grid(tmp_path, one_thread):
    """The held-out template figures of a model with a 2 mm card are measured on 2 mm template
    phantoms, and their summary says so."""
    from clinicalai.attribution.constrained import template_attribution_auroc, template_summary
    from clinicalai.models import load_model, save_model

    pytest.importorskip("nilearn")
    data = slice_dataset(make_cases(4, seed=3, grid_mm=2.0), slice_range=(8, 16, 1))
    res = train_classifier(constraint="none", epochs=1, batch_size=16, data=data, seed=0, grid_mm=2.0)
    save_model(res.module, res.card, tmp_path / "fine.pt")
    lines = []
    figs = template_attribution_auroc(load_model(tmp_path / "fine.pt", device="cpu"), n=2, seed=0,
                                      methods=("gradcam",), log=lines.append)
    assert set(figs) == {"FLAIR", "T1"} and len(lines) == 2
    assert all(0.0 <= v[0] <= 1.0 for per in figs.values() for v in per.values())
    from clinicalai.attribution import attribute
    from clinicalai.attribution.metrics import score_map
    from clinicalai.phantoms.mni import mni_brain_case

    case = mni_brain_case(0, pathological=True, contrast="FLAIR", spacing=(2.0, 2.0, 2.0), stream="heldout")
    cam = attribute(load_model(tmp_path / "fine.pt", device="cpu"), case.image, "gradcam", target="lesion")
    assert figs["FLAIR"]["gradcam"][0] == score_map(cam.volume, case.lesion, mask=case.brain_mask,
                                                     pointing_tolerance=0)["auroc"]
    assert "2 mm voxels" in template_summary(figs, 2, 0, 2.0)["data"]


def test_healthy_twins_differ_from_their_lesioned_case_only_at_the_lesion():
    """A healthy twin is its lesioned case voxel for voxel (same deformation, grid, bias, noise)
    except around the lesion; :func:`twin_slice_dataset` gives one label-0 twin slice for each
    lesion slice of the lesioned template cases, and skips the healthy ones."""
    from scipy import ndimage

    from clinicalai.attribution.constrained import make_mni_cases, slice_dataset, training_slices, twin_slice_dataset
    from clinicalai.phantoms.mni import mni_brain_case

    pytest.importorskip("nilearn")
    sick = mni_brain_case(3, pathological=True, contrast="T1", spacing=(4.0, 4.0, 4.0), stream="train")
    twin = mni_brain_case(3, pathological=True, contrast="T1", spacing=(4.0, 4.0, 4.0), stream="train",
                          healthy_twin=True)
    lesion = sick.lesion.array > 0
    assert lesion.sum() > 0 and twin.lesion.array.sum() == 0 and not twin.pathological
    assert twin.image.metadata["phantom"]["healthy_twin"] and twin.image.metadata["phantom"]["lesions"] == []
    diff = np.abs(sick.image.array - twin.image.array)
    near = ndimage.binary_dilation(lesion, iterations=2)
    assert diff[~near].max() < 1e-3 * sick.image.array.max()  # only the lesion's blurred edge reaches further
    assert diff[lesion].mean() > 0.2 * sick.image.array[lesion].mean()  # the lesion is darker than its twin's tissue
    with pytest.raises(ValueError, match="healthy twin"):
        mni_brain_case(3, pathological=False, healthy_twin=True)

    cases = make_mni_cases(4, seed=2, grid_mm=8.0)
    twins = twin_slice_dataset(cases)
    mni = slice_dataset(cases, slice_range=None)
    lesioned = [i for i, c in enumerate(cases) if c.pathological]
    assert len(twins) == int(mni.labels.sum()) > 0 and not twins.labels.any() and not twins.lesion.any()
    assert set(np.asarray(twins.case).tolist()) <= set(lesioned)
    with pytest.raises(InputError, match="need --family mix"):
        training_slices("phantom", 2, 0, twins=True)


def test_share_of_t1_like_template_cases():
    """``t1_share`` spreads T1-like pairs evenly (0.5: in turn, as before; 0.75: three pairs of
    four); a share outside [0, 1] fails before any phantom is made."""
    from clinicalai.attribution.constrained import data_description, make_mni_cases, training_slices

    pytest.importorskip("nilearn")
    cases = make_mni_cases(8, seed=5, grid_mm=8.0, t1_share=0.75)
    assert [c.image.metadata["phantom"]["contrast"] for c in cases] == ["T1"] * 6 + ["FLAIR"] * 2
    assert [c.pathological for c in cases] == [False, True] * 4
    assert [c.image.metadata["phantom"]["contrast"] for c in make_mni_cases(4, seed=5, grid_mm=8.0)] == \
        ["T1", "T1", "FLAIR", "FLAIR"]
    assert "75% T1-like" in data_description("mix", 2, 8, (24, 32, 32), 5, 4.0, 0.75)["data"]
    for bad in (-0.1, 1.5):
        with pytest.raises(InputError, match="share of T1-like"):
            training_slices("mix", 2, 4, t1_share=bad)
