"""The cortical-folding evaluation and the latent analyses against hand-checked cases, and the
study's training defaults (latent 1728, 5 critic steps, lambda 10, sulcus weight 5)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from clinicalai.errors import InputError
from clinicalai.generative.data import GridSpec, brain_training_set
from clinicalai.generative.evaluate import (latent_analysis, sulcus_thickness, synthetic_anomaly_auroc,
                                            write_volume_sequence)
from clinicalai.generative.nets import build
from clinicalai.generative.package import sulcal_spec, validate_sulci
from clinicalai.generative.sulci import INSIDE, SULCUS, insert_blob, remove_structure, sulcal_case
from clinicalai.generative.train import TrainConfig, class_weights_for, train_generative
from clinicalai.models import load_model
from clinicalai.volume import Volume


def _plate(thickness: int, oblique: bool = False) -> np.ndarray:
    a = np.full((24, 24, 24), 11, np.int16)
    if oblique:  # a 45 degree sheet z = x + (0 .. t-1)
        for i in range(24):
            a[np.clip(np.arange(i, i + thickness), 0, 23), :, i] = SULCUS
    else:
        a[8:8 + thickness, 4:20, 4:20] = SULCUS
    return a


@pytest.mark.parametrize("t", [1, 2, 3])
def test_sulcus_thickness_of_plates(t):
    assert sulcus_thickness(_plate(t)) == pytest.approx(t)
    # a one-voxel sheet is 1 whatever its orientation; thicker oblique sheets about t
    assert sulcus_thickness(_plate(t, oblique=True)) == pytest.approx(t, abs=0.25)
    # so a reconstruction twice too thick has ratio 2
    if t == 2:
        assert sulcus_thickness(_plate(2)) / sulcus_thickness(_plate(1)) == pytest.approx(2.0)
    assert np.isnan(sulcus_thickness(np.zeros((4, 4, 4), np.int16)))


def test_sulcal_phantoms_are_one_voxel_skeletons():
    labels = sulcal_case(3, size=32).array
    assert set(np.unique(labels)) == {0, 11, 60}
    assert sulcus_thickness(labels) == pytest.approx(1.0, abs=0.05)


def test_removed_structures_of_study_sizes():
    labels = sulcal_case(3, size=32).array
    n_sulcus = int((labels == SULCUS).sum())
    for size in (200, 500, 800):
        new, removed = remove_structure(labels, size, np.random.default_rng(size))
        assert removed.sum() == size and (new == SULCUS).sum() == n_sulcus - size
        assert np.all(new[removed] == INSIDE) and np.all(labels[removed] == SULCUS)
        assert np.array_equal(new[~removed], labels[~removed])
    with pytest.raises(InputError, match="cannot remove"):
        remove_structure(labels, n_sulcus + 1, np.random.default_rng(0))


@pytest.mark.parametrize("size", [200, 500, 800])
def test_blobs_of_study_sizes(size):
    image = np.ones((40, 40, 40), np.float32)
    centre = np.zeros_like(image, bool)
    centre[18:22, 18:22, 18:22] = True
    hot, blob = insert_blob(image, size, np.random.default_rng(0), "hot", mask=centre)
    assert blob.sum() == pytest.approx(size, rel=0.1)
    assert np.allclose(hot[blob], 1.6) and np.array_equal(hot[~blob], image[~blob])
    cold, blob = insert_blob(image, size, np.random.default_rng(0), "cold", mask=centre)
    assert np.allclose(cold[blob], 0.4)
    with pytest.raises(InputError, match="hot"):
        insert_blob(image, size, np.random.default_rng(0), "warm")


def test_blob_auroc_per_study_size(ae_package, small_spec):
    # held-out healthy phantoms; the trained AE's score separates them from the same with a blob
    model = load_model(ae_package, device="cpu")
    healthy, _ = brain_training_set(8, small_spec, seed=11, pathological=False)
    rows = synthetic_anomaly_auroc(model.module, "ae", small_spec, healthy, seed=5)
    assert [(r["anomaly"], r["size"]) for r in rows] == [(a, s) for a in ("hot", "cold") for s in (200, 500, 800)]
    for r in rows:
        assert r["n"] == 8 and r["auroc"] >= 0.75, r
        assert r["score_anomalous"] > r["score_healthy"], r
    with pytest.raises(ValueError, match="does not apply"):
        synthetic_anomaly_auroc(model.module, "ae", small_spec, healthy, anomalies=["remove"])


def test_sulcal_validation_skips_sizes_a_small_crop_cannot_hold():
    # a 16^3 crop holds ~300 sulcus voxels: 500 and 800 cannot be removed, 200 can
    spec = sulcal_spec(16)
    module, _, _ = build("wgan-gp", spec, 8, (4, 8), (2, 2))
    out = validate_sulci(module.eval(), "wgan-gp", spec, n=4, seed=1)
    fewest = out["sulcus_voxels_min"]
    assert [r["size"] for r in out["removed_structure_auroc"]] == [s for s in (200, 500, 800) if s < fewest]
    assert out["skipped_sizes"] == [s for s in (200, 500, 800) if s >= fewest] and out["skipped_sizes"]


def test_volume_sequence_round_trip(tmp_path):
    a = np.deg2rad(25)
    direction = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rng = np.random.default_rng(0)
    vols = [Volume(rng.random((3, 4, 5)).astype(np.float32), spacing=(1.0, 2.0, 3.0), origin=(5.0, -2.0, 7.0),
                   direction=direction) for _ in range(3)]
    path = write_volume_sequence(vols, tmp_path / "s.seq.nrrd", [0.0, 0.5, 1.0], index_name="k/n")
    header = path.read_bytes().split(b"\n\n", 1)[0].decode()
    for line in ("dimension: 4", "sizes: 3 5 4 3", "kinds: list domain domain domain", "axis 0 index type:=numeric",
                 "axis 0 index values:=0 0.5 1", "DataNodeClassName:=vtkMRMLScalarVolumeNode"):
        assert line in header.splitlines(), line
    # ITK reads the list axis as the pixel components: one per item, geometry of the items
    image = sitk.ReadImage(str(path))
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert np.allclose(image.GetSpacing(), (1, 2, 3)) and np.allclose(image.GetOrigin(), (5, -2, 7))
    assert np.allclose(np.reshape(image.GetDirection(), (3, 3)), direction)
    arr = sitk.GetArrayFromImage(image)
    for k, v in enumerate(vols):
        assert np.array_equal(arr[..., k], v.array)
    labels = write_volume_sequence([v.with_array((v.array > 0.5).astype(np.uint8)) for v in vols],
                                   tmp_path / "l.seq.nrrd", labelmap=True)
    assert b"vtkMRMLLabelMapVolumeNode" in labels.read_bytes()[:1000]
    # bad input: one clear error, nothing written
    other = Volume(np.zeros((3, 4, 5), np.float32), spacing=(1.0, 1.0, 1.0))
    for args, message in (((vols + [other], tmp_path / "x.seq.nrrd"), "one grid"),
                          ((vols, tmp_path / "x.nrrd"), "seq.nrrd"),
                          (([], tmp_path / "x.seq.nrrd"), "at least one"),
                          ((vols, tmp_path / "x.seq.nrrd", [0, 1]), "index values")):
        with pytest.raises(InputError, match=message):
            write_volume_sequence(*args)
    assert not list(tmp_path.glob("x*")) and not list(tmp_path.glob(".x*"))


def test_latent_analysis_by_hand(tmp_path):
    spec = GridSpec((4.0, 4.0, 4.0), (8, 8, 8))
    torch.manual_seed(0)
    module, _, _ = build("wgan-gp", spec, 6, (4, 8), (2, 2))
    module.eval()
    with torch.no_grad():  # latent dimensions 0 and 1 have no effect on the generator
        module.generator.linear.weight[:, :2] = 0.0
    x = np.random.default_rng(1).random((6, 1, 8, 8, 8)).astype(np.float32)
    summary = latent_analysis(module, "wgan-gp", spec, x, tmp_path, groups=[0, 1] * 3, n_interp=4)
    json.dumps(summary)
    assert summary["dead_dimension_indices"] == [0, 1]
    assert summary["dead_dimensions"] == 2 and summary["dead_share"] == pytest.approx(2 / 6)
    ranked = [d["dim"] for d in summary["dimension_ranking"]]
    assert sorted(ranked) == list(range(6)) and set(ranked[-2:]) == {0, 1}
    assert summary["traversal_dimension"] == ranked[0]
    # interpolation u + k/n (v - u) between the codes of the first two volumes
    with torch.no_grad():
        z = module.encode(torch.from_numpy(x))
        u, v = z[0:1], z[1:2]
        expected = [module.decode(u + (k / 4) * (v - u))[0, 0].numpy() for k in range(5)]
        mean = module.decode(z.mean(0, keepdim=True))[0, 0].numpy()
    seq = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "interpolation.seq.nrrd")))
    assert seq.shape == (8, 8, 8, 5)
    for k in range(5):
        assert np.allclose(seq[..., k], expected[k], atol=1e-5)
        step = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "interpolation" / f"step_{k:02d}.nii.gz")))
        assert np.allclose(step, expected[k], atol=1e-5)
    assert np.allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mean_code.nii.gz"))), mean, atol=1e-5)
    traversal = sorted((tmp_path / "traversal").glob(f"dim_{ranked[0]}_step_*.nii.gz"))
    assert len(traversal) == 7
    first, last = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (traversal[0], traversal[-1]))
    assert not np.allclose(first, last)
    for png in ("codes_pca_tsne.png", "kmeans_silhouette.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary["kmeans_silhouette"]) <= {"2", "3", "4", "5"}


def test_training_defaults_are_the_studys():
    from clinicalai.cli import build_parser

    c = TrainConfig()
    assert (c.kind, c.latent_size, c.lr, c.epochs, c.n_critic, c.gp_lambda, c.adversarial) == \
        ("wgan-gp", 1728, 2e-4, 800, 5, 10.0, "wgan-gp")
    args = build_parser().parse_args(["train", "generative", "wgan-gp", "--phantoms", "4", "-o", "m.pt"])
    assert (args.latent_size, args.lr, args.epochs, args.n_critic, args.gp_lambda) == (1728, 2e-4, 800, 5, 10.0)
    for kind in ("wgan-gp", "ae", "vae", "f-anogan", "cyclegan"):
        assert build_parser().parse_args(["train", "generative", kind, "--phantoms", "4", "-o", "m.pt"]).kind == kind
    for bad in (dict(kind="gan"), dict(adversarial="lsgan"), dict(recon_loss="l1"), dict(n_critic=0)):
        with pytest.raises(InputError):
            TrainConfig(**bad)


def test_sulcus_class_weight():
    spec = sulcal_spec(16)
    assert class_weights_for(TrainConfig(), spec) == (1.0, 1.0, 5.0)  # labels 0, 11, 60
    assert class_weights_for(TrainConfig(recon_loss="ce"), spec) == (1.0, 1.0, 5.0)
    assert class_weights_for(TrainConfig(recon_loss="l2"), spec) is None
    assert class_weights_for(TrainConfig(), GridSpec((3.0,) * 3, (16,) * 3)) is None
    assert class_weights_for(TrainConfig(class_weights=(1.0, 2.0, 3.0)), spec) == (1.0, 2.0, 3.0)
    with pytest.raises(InputError, match="one weight per label"):
        class_weights_for(TrainConfig(class_weights=(1.0, 5.0)), spec)


def _count_steps(module_parts, run):
    """Optimizer steps per part (critic, generator, encoder) while ``run()`` trains."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = []
    handle = register_optimizer_step_post_hook(lambda opt, args, kwargs: steps.append(opt.param_groups[0]["params"][0]))
    try:
        res = run()
    finally:
        handle.remove()
    parts = {name: {id(p) for p in getattr(res.module, name).parameters()} for name in module_parts}
    return res, {name: sum(id(p) in ids for p in steps) for name, ids in parts.items()}


@pytest.mark.parametrize("kind", ["wgan-gp", "f-anogan"])
def test_five_critic_steps_per_generator_step(kind, small_spec, brain_sets):
    # one epoch per phase, one minibatch per epoch (batch = the 4 volumes)
    cfg = TrainConfig(kind=kind, epochs=1 if kind == "wgan-gp" else 2, batch_size=4, latent_size=8,
                      channels=(4, 8), strides=(2, 2))
    assert cfg.n_critic == 5
    res, counts = _count_steps(("critic", "generator", "encoder"),
                               lambda: train_generative(cfg, small_spec, brain_sets["healthy"][:4]))
    # wgan-gp: joint; f-anogan: a WGAN epoch (no encoder), then an izi_f epoch (encoder only)
    assert counts == {"critic": 5, "generator": 1, "encoder": 1}
    assert res.history[0]["gradient_penalty"] > 0


def test_cyclegan_perceptual_term(small_spec, brain_sets):
    def run(weight):
        cfg = TrainConfig(kind="cyclegan", epochs=1, batch_size=2, channels=(4, 8), strides=(2,),
                          perceptual_weight=weight)
        return train_generative(cfg, small_spec, brain_sets["healthy"][:4], brain_sets["pathological"][:4])

    with_term, without = run(1.0), run(0.0)
    assert "perceptual" not in without.history[0]
    assert np.isfinite(with_term.history[0]["perceptual"]) and with_term.history[0]["perceptual"] > 0
    # the term changes what the generators learn (same seed, same data otherwise)
    a = torch.cat([p.flatten() for p in with_term.module.to_healthy.parameters()])
    b = torch.cat([p.flatten() for p in without.module.to_healthy.parameters()])
    assert not torch.allclose(a, b)
