"""Each generative model learns on phantoms: after a short run its volume score separates
phantoms with lesions from healthy ones (AUROC well above chance)."""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from clinicalai.generative import anomaly
from clinicalai.models import LoadedModel, parse_card

from clinicalai.generative.evaluate import latent_analysis, synthetic_anomaly_auroc
from clinicalai.generative.package import sulcal_set, sulcal_spec
from clinicalai.generative.train import TrainConfig, train_generative, volume_scores

# short CPU runs on the 16^3 grid (a few seconds each)
RUNS = {
    "ae": dict(epochs=10),
    "vae": dict(epochs=10, latent_size=32),
    "wgan-gp": dict(epochs=12, latent_size=32),
    "f-anogan": dict(epochs=40, latent_size=32),
    "cyclegan": dict(epochs=20, batch_size=2),
}


@pytest.mark.parametrize("kind", list(RUNS))
def test_score_separates_lesioned_phantoms(kind, small_spec, brain_sets):
    options = {"batch_size": 4, "lr": 1e-3, "channels": (8, 16), "strides": (2, 2), "seed": 0, **RUNS[kind]}
    cfg = TrainConfig(kind=kind, **options)
    res = train_generative(cfg, small_spec, brain_sets["healthy"],
                           brain_sets["pathological"] if kind == "cyclegan" else None)
    assert res.epochs_run == RUNS[kind]["epochs"]
    if kind == "cyclegan":
        # the CycleGAN's strength is its map (the volume score of a short run is weak, see
        # docs/generative.md): per-voxel AUROC of the lesions; an untrained (identity)
        # generator's map is 0 everywhere, AUROC 0.5
        loaded = LoadedModel(card=parse_card({
            "name": "t", "task": "anomaly-detection", "format": "state_dict",
            "architecture": {"name": res.architecture}, "input": small_spec.card_input(),
            "generative_kind": kind}), backend="torch", path=Path("."), module=res.module)
        aurocs = [anomaly(c.image, loaded, lesion=c.lesion, mask=c.brain_mask).lesion_scores["auroc"]
                  for c in brain_sets["cases"] if c.pathological]
        auroc = float(np.mean(aurocs))
    else:
        scores = volume_scores(res.module, kind, brain_sets["test"], labels=False)
        auroc = roc_auc_score(brain_sets["y"], scores)
    assert auroc >= 0.75, f"{kind}: AUROC {auroc:.2f} after {res.epochs_run} epochs"
    if kind in ("ae", "vae"):
        # reconstruction improved from the first to the last epoch
        assert res.history[-1]["reconstruction"] < 0.5 * res.history[0]["reconstruction"]


def test_sulcal_wgan_gp_and_latent_analyses(tmp_path):
    spec = sulcal_spec(16)
    train = sulcal_set(12, spec, seed=1)
    assert train.shape == (12, 3, 16, 16, 16)
    cfg = TrainConfig(kind="wgan-gp", epochs=12, batch_size=4, lr=1e-3, latent_size=16, channels=(8, 16),
                      strides=(2, 2), adversarial_weight=0.1)
    res = train_generative(cfg, spec, train)
    first, last = res.history[0]["reconstruction"], res.history[-1]["reconstruction"]
    assert last < 0.85 * first
    test = sulcal_set(8, spec, seed=2)
    rows = synthetic_anomaly_auroc(res.module, "wgan-gp", spec, test, sizes=(40,), seed=3)
    assert rows[0]["anomaly"] == "remove" and 0.0 <= rows[0]["auroc"] <= 1.0
    summary = latent_analysis(res.module, "wgan-gp", spec, test, tmp_path, groups=[0, 1] * 4, n_interp=4)
    assert len(list((tmp_path / "interpolation").glob("step_*.nii.gz"))) == 5
    assert (tmp_path / "mean_code.nii.gz").is_file() and (tmp_path / "codes_pca_tsne.png").stat().st_size > 1000
    assert (tmp_path / "kmeans_silhouette.png").is_file()
    assert len(list((tmp_path / "traversal").glob("*.nii.gz"))) == 7
    assert 0.0 <= summary["dead_share"] <= 1.0 and summary["latent_size"] == 16
    ranks = [d["sensitivity"] for d in summary["dimension_ranking"]]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > 0
    assert summary["thickness_ratio"] is None or summary["thickness_ratio"] > 0


@pytest.mark.parametrize("adversarial", ["gan", "wgan-clip"])
def test_other_adversarial_losses_run(adversarial, small_spec, brain_sets):
    cfg = TrainConfig(kind="wgan-gp", epochs=2, batch_size=8, lr=1e-3, latent_size=8, channels=(4, 8),
                      strides=(2, 2), adversarial=adversarial, n_critic=2, clip_value=0.01)
    res = train_generative(cfg, small_spec, brain_sets["healthy"][:8])
    assert "gradient_penalty" not in res.history[-1] and np.isfinite(res.history[-1]["critic"])
    if adversarial == "wgan-clip":
        assert all(p.abs().max() <= 0.01 + 1e-7 for p in res.module.critic.parameters())
