"""Named baselines of Integrated Gradients (zero, blur, mean, mirror): what they are, where they
come from (argument, model card, command line), and why ``blur`` and ``mirror`` exist: a dark lesion."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from clinicalai.attribution import attribute
from clinicalai.attribution.methods import (BASELINES, baseline_tensor, blurred_baseline,
                                            foreground_mean_baseline, mirrored_baseline)
from clinicalai.attribution.metrics import score_map
from clinicalai.cli import main
from clinicalai.errors import InputError, ModelError
from clinicalai.volume import Volume, read_volume, write_volume

SIZE = 24
SPACING = (2.0, 2.0, 4.0)  # mm, ITK order (x, y, z)
CARD = {"name": "dark-lesion-toy", "task": "classification", "format": "torchscript", "spatial_dims": 2,
        "input": {"channels": 1, "normalization": {"kind": "zscore"}}, "classes": ["healthy", "lesion"]}


def _slice(rng, lesion: bool):
    """One 24x24 slice: a bright disc ("brain", ~1.0) on a dark background (~0.1), with a
    darker spot (0.6, like a T1 lesion) of radius 2-3 voxels somewhere inside when ``lesion``.
    After the z-score the spot lies near 0, as a T1-like lesion does: (x - 0) is ~0 there.
    Returns (image, lesion mask, brain mask)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    brain = (yy - 11.5) ** 2 + (xx - 11.5) ** 2 < 10.5 ** 2
    img = np.where(brain, 1.0, 0.1) + rng.normal(0, 0.03, (SIZE, SIZE))
    mask = np.zeros((SIZE, SIZE), bool)
    if lesion:
        r = rng.uniform(2.0, 3.0)
        cy, cx = rng.uniform(7, 16, size=2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) & brain
        img[mask] = 0.6 + rng.normal(0, 0.03, int(mask.sum()))
    return img.astype(np.float32), mask, brain


def _zscore(a):
    nz = a[a != 0]
    return (a - nz.mean()) / (nz.std() or 1.0)


@pytest.fixture(scope="module")
def dark_lesion_classifier():
    """A tiny 2D CNN trained (seeded, about a second) to tell slices with a dark spot from
    slices without: the dark lesion is what drives its output."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = [_slice(rng, bool(i % 2)) for i in range(256)]
    x = torch.from_numpy(np.stack([_zscore(d[0]) for d in data])[:, None])
    y = torch.tensor([i % 2 for i in range(256)])
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    test = [_slice(np.random.default_rng(100 + i), True) for i in range(8)]
    with torch.no_grad():
        p = torch.softmax(net(torch.from_numpy(np.stack([_zscore(t[0]) for t in test])[:, None])), 1)[:, 1]
    assert float(p.min()) > 0.5, "the toy classifier must find the dark lesions it is explained on"
    return net


def _volume(arr, **kw):
    return Volume(np.asarray(arr, np.float32)[None], spacing=SPACING, origin=(3.0, -7.0, 11.0), modality="MR", **kw)


def test_blur_scores_a_dark_lesion_higher_than_zero(dark_lesion_classifier):
    aurocs = {"zero": [], "blur": [], "mean": [], "mirror": []}
    for i in range(6):
        img, lesion, brain = _slice(np.random.default_rng(200 + i), True)
        for name in aurocs:
            # sigma 4 mm = 2 voxels, about the lesion's radius
            res = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1,
                            card=CARD, baseline=name, n_steps=16, **({"sigma_mm": 4.0} if name == "blur" else {}))
            assert res.options["baseline"] == name
            aurocs[name].append(score_map(res.volume, _volume(lesion.astype(np.uint8)),
                                          mask=_volume(brain.astype(np.uint8)), pointing_tolerance=0)["auroc"])
    zero, blur, mean = (float(np.mean(aurocs[k])) for k in ("zero", "blur", "mean"))
    # (x - 0) is ~0 on the dark lesion: the zero baseline credits the tissue around it instead
    # (below chance); the blurred image and the flat foreground are brighter there than the
    # lesion, so (x - baseline) is large on it
    assert zero < 0.5, aurocs
    assert blur > zero + 0.3 and mean > zero + 0.3, aurocs
    assert all(b > z for b, z in zip(aurocs["blur"], aurocs["zero"])), aurocs
    # the mirror puts the other side's healthy tissue where the lesion is (a lesion across the
    # midline meets itself there: not every case)
    assert float(np.mean(aurocs["mirror"])) > zero + 0.2, aurocs


def test_baselines_have_the_input_shape_and_the_blur_is_in_mm():
    torch.manual_seed(1)
    x = torch.rand(3, 2, 6, 10, 12)
    for name in BASELINES:
        b = baseline_tensor(x, name, sigma_mm=4.0, spacing_mm=(4.0, 2.0, 1.0))
        assert b.shape == x.shape and b.dtype == x.dtype
    from monai.transforms import GaussianSmooth

    b = blurred_baseline(x, sigma_mm=4.0, spacing_mm=(4.0, 2.0, 1.0))
    # sigma in voxels per axis = 4 mm / voxel size: 1, 2 and 4 voxels
    assert torch.allclose(b[2], torch.as_tensor(GaussianSmooth(sigma=[1.0, 2.0, 4.0])(x[2])), atol=1e-6)
    assert not torch.allclose(b, blurred_baseline(x, sigma_mm=4.0))  # 1 mm voxels: another blur
    assert torch.equal(baseline_tensor(x, "zeros"), torch.zeros_like(x))  # the older spelling


def test_mean_baseline_flattens_the_foreground_and_keeps_the_background():
    img, _, brain = _slice(np.random.default_rng(5), True)
    x = torch.from_numpy(np.stack([img, img[::-1].copy()])[:, None])
    b = foreground_mean_baseline(x)
    fg = torch.from_numpy(np.stack([brain, brain[::-1].copy()])[:, None])
    assert torch.equal(b[~fg], x[~fg])  # background untouched: no attribution there
    inside = b[fg]
    assert float(inside.max() - inside.min()) < 1e-6  # one value over the batch (a volume's slices)
    assert abs(float(inside[0]) - float(x[fg].mean())) < 0.02


def test_blur_and_mean_maps_keep_the_geometry_of_an_oblique_input(dark_lesion_classifier):
    img, _, _ = _slice(np.random.default_rng(7), True)
    theta = np.deg2rad(30)
    direction = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    vol = Volume(np.stack([img, img, img]), spacing=SPACING, origin=(3.0, -7.0, 11.0), direction=direction, modality="MR")
    for name in ("blur", "mean"):
        res = attribute(dark_lesion_classifier, vol, "integrated-gradients", target=1, card=CARD, baseline=name, n_steps=4)
        assert res.volume.same_grid(vol) and res.volume.shape == vol.shape
        assert np.isfinite(res.array).all() and float(np.abs(res.array).max()) > 0
    assert res.options["baseline"] == "mean" and "sigma_mm" not in res.options


def test_the_card_sets_the_default_baseline_and_an_argument_overrides_it(dark_lesion_classifier):
    img, _, _ = _slice(np.random.default_rng(8), True)
    card = {**CARD, "attribution": {"baseline": "blur", "blur_sigma_mm": 6}}
    res = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1, card=card, n_steps=4)
    assert res.options["baseline"] == "blur" and res.options["sigma_mm"] == 6.0
    explicit = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1, card=card,
                         n_steps=4, baseline="blur", sigma_mm=6.0)
    assert np.array_equal(res.array, explicit.array)
    zero = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1, card=card,
                     n_steps=4, baseline="zero")
    assert zero.options["baseline"] == "zero" and not np.allclose(zero.array, res.array)
    # no card entry: zero, as before
    plain = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1, card=CARD, n_steps=4)
    assert plain.options["baseline"] == "zero" and np.array_equal(plain.array, zero.array)


def test_occlusion_with_the_blur_baseline_finds_a_dark_lesion(dark_lesion_classifier):
    """Occlusion's patch takes the blurred image (the tissue around it) when asked: a dark spot
    lying near 0 after the z-score changes nothing when replaced by 0, but brightens when replaced
    by its surroundings. The card's IG default does not reach occlusion."""
    card = {**CARD, "attribution": {"baseline": "blur", "blur_sigma_mm": 8.0}}
    aurocs = {"zero": [], "blur": []}
    for i in range(8):
        img, lesion, brain = _slice(np.random.default_rng(300 + i), True)
        for name in aurocs:
            # sigma 8 mm = 4 voxels: the blurred patch is the tissue around the 2-3 voxel spot
            res = attribute(dark_lesion_classifier, _volume(img), "occlusion", target=1, card=CARD, patch=3, stride=1,
                            **({"baseline": "blur", "sigma_mm": 8.0} if name == "blur" else {}))
            aurocs[name].append(score_map(res.volume, _volume(lesion.astype(np.uint8)),
                                          mask=_volume(brain.astype(np.uint8)), pointing_tolerance=0)["auroc"])
        if i == 0:
            assert res.options["baseline"] == "blur" and res.options["sigma_mm"] == 8.0
            default = attribute(dark_lesion_classifier, _volume(img), "occlusion", target=1, card=card, patch=3,
                                stride=1)
            number = attribute(dark_lesion_classifier, _volume(img), "occlusion", target=1, card=CARD, patch=3,
                               stride=1, baseline=0.0)
            assert "baseline" not in default.options and np.array_equal(default.array, number.array)
    zero, blur = float(np.mean(aurocs["zero"])), float(np.mean(aurocs["blur"]))
    assert blur > 0.8 and blur > zero + 0.08, aurocs
    assert sum(b > z for b, z in zip(aurocs["blur"], aurocs["zero"])) >= 7, aurocs


@pytest.mark.parametrize("card_entry, message", [
    ({"baseline": "noise"}, "unknown baseline in the model card's attribution.baseline 'noise'"),
    ({"blur_sigma_mm": -2}, "attribution.blur_sigma_mm must be a positive number"),
    ("blur", "'attribution' must be an object"),
])
def test_a_bad_card_entry_is_one_clear_error(dark_lesion_classifier, card_entry, message):
    img, _, _ = _slice(np.random.default_rng(9), True)
    with pytest.raises((InputError, ModelError), match=message):
        attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", card={**CARD, "attribution": card_entry})


def test_a_bad_baseline_name_errors_without_output(dark_lesion_classifier, tmp_path, capsys):
    img, _, _ = _slice(np.random.default_rng(10), True)
    with pytest.raises(InputError, match="unknown baseline 'noise'; choose one of zero, blur, mean"):
        attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", card=CARD, baseline="noise")
    for sigma in (0, -1.0, "8", float("nan")):
        with pytest.raises(InputError, match="sigma must be a positive number of mm"):
            attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", card=CARD, baseline="blur", sigma_mm=sigma)
    # the command line (bundled classifier): the name is refused before the image is read
    write_volume(_volume(img), tmp_path / "image.nii.gz")
    out = tmp_path / "map.nii.gz"
    for argv, message in ((["--baseline", "noise"], "unknown baseline 'noise'"),
                          (["--baseline", "blur", "--blur-sigma", "0"], "--blur-sigma must be a positive number")):
        rc = main(["explain", str(tmp_path / "image.nii.gz"), "--method", "integrated-gradients", "-o", str(out),
                   "--device", "cpu", *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and message in err and len(err.splitlines()) == 1
        assert not out.exists()


def test_a_blur_sigma_without_the_blur_baseline_is_one_clear_error(dark_lesion_classifier, tmp_path, capsys):
    """A sigma that no blur baseline takes would change nothing; it is refused, in the engine
    and on the command line, before anything is written. The card's blur default takes one."""
    img, _, _ = _slice(np.random.default_rng(11), True)
    for method, options, card in (("integrated-gradients", {"baseline": "zero"}, CARD),
                                  ("integrated-gradients", {"baseline": "mean"}, CARD),
                                  ("integrated-gradients", {}, CARD),  # no card default: zero
                                  ("occlusion", {"patch": 3}, {**CARD, "attribution": {"baseline": "blur"}})):
        with pytest.raises(InputError, match="sigma_mm is the width of the blur baseline"):
            attribute(dark_lesion_classifier, _volume(img), method, target=1, card=card, sigma_mm=6.0, **options)
    res = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1, n_steps=4,
                    card={**CARD, "attribution": {"baseline": "blur"}}, sigma_mm=6.0)
    assert res.options["baseline"] == "blur" and res.options["sigma_mm"] == 6.0
    write_volume(_volume(img), tmp_path / "image.nii.gz")
    out = tmp_path / "map.nii.gz"
    for argv in (["--method", "gradcam"], ["--method", "occlusion"], ["--method", "occlusion", "--baseline", "mean"],
                 ["--method", "integrated-gradients", "--baseline", "zero"]):
        rc = main(["explain", str(tmp_path / "image.nii.gz"), *argv, "--blur-sigma", "4", "-o", str(out), "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and "--blur-sigma is the width of the blur baseline" in err and len(err.splitlines()) == 1, (argv, err)
        assert not out.exists()


def test_explain_with_the_blur_baseline_records_it(tmp_path, capsys):
    from clinicalai.phantoms.mni import mni_brain_case

    case = mni_brain_case(3, pathological=True, contrast="T1", spacing=(4.0, 4.0, 4.0), stream="heldout")
    write_volume(case.image, tmp_path / "t1.nii.gz")
    out = tmp_path / "ig.nii.gz"
    rc = main(["explain", str(tmp_path / "t1.nii.gz"), "--method", "integrated-gradients", "--baseline", "blur",
               "--blur-sigma", "12", "--steps", "4", "--target", "lesion", "-o", str(out),
               "--json", str(tmp_path / "r.json"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["options"]["baseline"] == "blur" and record["options"]["sigma_mm"] == 12.0
    assert read_volume(out).same_grid(case.image, atol=1e-4)


def test_explain_occlusion_takes_a_named_baseline(tmp_path, capsys):
    """``explain --method occlusion --baseline blur`` fills the patch with the blurred image and
    records it; ``reference`` is integrated gradients' only and fails before any file is written."""
    from clinicalai.phantoms.mni import mni_brain_case

    case = mni_brain_case(3, pathological=True, contrast="T1", spacing=(4.0, 4.0, 4.0), stream="heldout")
    write_volume(case.image, tmp_path / "t1.nii.gz")
    out = tmp_path / "occ.nii.gz"
    common = ["explain", str(tmp_path / "t1.nii.gz"), "--method", "occlusion", "--patch", "8", "--stride", "8",
              "--target", "lesion", "-o", str(out), "--device", "cpu"]
    rc = main(common + ["--baseline", "reference"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "occlusion's baseline must be zero, blur or mean" in err and len(err.splitlines()) == 1
    assert not out.exists()
    rc = main(common + ["--baseline", "blur", "--blur-sigma", "12", "--json", str(tmp_path / "r.json")])
    assert rc == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["options"]["baseline"] == "blur" and record["options"]["sigma_mm"] == 12.0
    assert read_volume(out).same_grid(case.image, atol=1e-4)


def test_the_mirror_baseline_mirrors_about_the_head_not_the_array_and_finds_left_right():
    # a disc off the array's centre (columns 4-20 of 30) with a spot on its left: the baseline
    # is the disc mirrored about its own centre, the spot on the other side
    yy, xx = np.mgrid[:24, :30]
    disc = (yy - 11.5) ** 2 + (xx - 12.0) ** 2 < 8.0 ** 2
    img = np.where(disc, 1.0, 0.0).astype(np.float32)
    img[10:13, 7:9] = 0.3
    x = torch.from_numpy(np.stack([img, img])[:, None])
    b = mirrored_baseline(x, 3)[0, 0].numpy()
    np.testing.assert_array_equal(b > 0.5, disc & ~((yy >= 10) & (yy < 13) & (xx >= 16) & (xx < 18)))
    assert float(b[11, 7]) == 1.0 and float(b[11, 16]) == pytest.approx(0.3)
    # attribute() mirrors along the image's left-right axis, whatever the array order: a
    # volume whose array columns run anterior-posterior and rows left-right
    from clinicalai.attribution.core import _left_right_axis
    from clinicalai.attribution.preprocess import prepare_input

    swapped = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # grid x -> P, grid y -> L
    vol = Volume(img[None].repeat(3, 0), spacing=SPACING, direction=swapped, modality="MR")
    from clinicalai.models.card import parse_card

    prep = prepare_input(vol, parse_card(CARD))
    axis = _left_right_axis(prep)
    assert abs(np.asarray(prep.net_volume.direction)[0, 3 - axis]) > 0.99  # that tensor axis runs left-right


def test_integrated_gradients_with_the_mirror_baseline_keeps_the_geometry(dark_lesion_classifier):
    img, _, _ = _slice(np.random.default_rng(9), True)
    res = attribute(dark_lesion_classifier, _volume(img), "integrated-gradients", target=1, card=CARD,
                    baseline="mirror", n_steps=4)
    assert res.options["baseline"] == "mirror" and res.volume.same_grid(_volume(img))
    assert np.isfinite(res.array).all() and float(np.abs(res.array).max()) > 0
