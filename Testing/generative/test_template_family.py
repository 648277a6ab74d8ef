"""``clinicalai train generative --family mix``: healthy MNI-template phantoms of the training
stream beside the brain-lesion phantoms (issue 19). A tiny run learns the template anatomy;
the template cases never come from the held-out stream; the card says what was drawn."""

import json

import numpy as np
import pytest

from clinicalai.cli import main as cli_main
from clinicalai.generative.data import brain_training_set, mni_training_set, to_model_grid
from clinicalai.generative.package import Source, load_training_data
from clinicalai.generative.train import TrainConfig, train_generative

pytest.importorskip("nilearn")

TINY = dict(kind="ae", epochs=30, batch_size=4, lr=1e-3, channels=(8, 16), strides=(2, 2), seed=0)


def _recon_error(module, x: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error per volume of ``x`` ``(N, 1, z, y, x)``."""
    import torch

    with torch.no_grad():
        r = module(torch.from_numpy(x)).numpy()
    return ((r - x) ** 2).mean(axis=(1, 2, 3, 4))


def test_template_cases_come_from_the_training_stream(small_spec):
    x, cases = mni_training_set(3, small_spec, seed=2, pathological=None)
    assert x.shape == (3, *small_spec.in_shape)
    info = [c.image.metadata["phantom"] for c in cases]
    assert [i["stream"] for i in info] == ["train"] * 3
    assert [i["seed"] for i in info] == [200006, 200007, 200008]
    assert [i["contrast"] for i in info] == ["FLAIR"] * 3
    assert [c.pathological for c in cases] == [False, True, False]
    assert all(np.allclose(c.image.spacing, small_spec.spacing_mm) for c in cases)
    # the held-out case of the same seed is another case
    from clinicalai.phantoms.mni import mni_brain_case

    held = mni_brain_case(200006, pathological=False, contrast="FLAIR", spacing=small_spec.spacing_mm)
    assert held.image.metadata["phantom"]["stream"] == "heldout"
    assert not np.allclose(to_model_grid(held.image, small_spec).tensor, x[0])


def test_mix_learns_the_template_anatomy(small_spec):
    """On healthy held-out template cases a tiny AE trained on the mix reconstructs better than
    the same AE trained on as many brain-lesion phantoms alone; its loss falls; on a lesioned
    template case its residual is larger in the lesions than in the rest of the brain."""
    from clinicalai.phantoms.mni import MNI_LICENSE, mni_brain_case

    healthy, path, described = load_training_data(Source(phantoms=8, family="mix", mni=8, seed=3), small_spec, "ae")
    assert healthy.shape == (16, *small_spec.in_shape) and path is None
    assert described["family"] == "mix" and described["mni"] == 8
    assert described["template_licence"] == MNI_LICENSE
    assert "8 healthy brain-lesion phantoms; 8 healthy MNI-template phantoms" in described["data"]
    assert "training stream, seeds 300009-300016" in described["data"]
    phantoms_only, _ = brain_training_set(16, small_spec, seed=3, pathological=False)

    mix = train_generative(TrainConfig(**TINY), small_spec, healthy)
    plain = train_generative(TrainConfig(**TINY), small_spec, phantoms_only)
    assert mix.history[-1]["reconstruction"] < 0.5 * mix.history[0]["reconstruction"]

    grid = small_spec.spacing_mm
    well = np.stack([to_model_grid(mni_brain_case(s, pathological=False, contrast="FLAIR", spacing=grid).image,
                                   small_spec).tensor for s in range(4)])
    err_mix, err_plain = _recon_error(mix.module, well), _recon_error(plain.module, well)
    assert (err_mix < err_plain).all(), (err_mix, err_plain)
    sick = mni_brain_case(4, pathological=True, contrast="FLAIR", spacing=grid, n_lesions=3,
                          lesion_radius_mm=(12.0, 14.0), direction=np.eye(3))
    import torch

    x = to_model_grid(sick.image, small_spec).tensor[None]
    with torch.no_grad():
        residual = ((mix.module(torch.from_numpy(x)).numpy() - x) ** 2)[0, 0]
    # on the grid of the image (same spacing, axis-aligned) the model grid is a crop of it
    lesion = to_model_grid(sick.lesion, small_spec).volume.array > 0
    brain = to_model_grid(sick.brain_mask, small_spec).volume.array > 0
    assert lesion.sum() > 5
    assert residual[lesion].mean() > 2 * residual[brain & ~lesion].mean()


def test_cyclegan_mix_adds_lesioned_template_cases(small_spec):
    healthy, path, described = load_training_data(Source(phantoms=2, family="mix", mni=2, seed=0), small_spec,
                                                   "cyclegan")
    assert healthy.shape[0] == path.shape[0] == 4
    assert "+ 2 lesioned MNI-template phantoms" in described["data"]
    assert "seeds 100003-100004" in described["data"]  # seed + 1, as the pathological brain phantoms


@pytest.mark.parametrize("extra, message", [
    (["--phantoms", "4", "--family", "mix", "--mni", "1"], "at least 2 MNI-template phantoms"),
    (["--phantoms", "4", "--family", "mix", "--input", "sulci"], "needs --phantoms N and --input brain"),
    (["--data", "{tmp}", "--family", "mix"], "needs --phantoms N and --input brain"),
])
def test_bad_mix_options_fail_cleanly(tmp_path, capsys, extra, message):
    out = tmp_path / "m.pt"
    argv = ["train", "generative", "ae", *[e.format(tmp=tmp_path) for e in extra], "--epochs", "1", "-o", str(out)]
    assert cli_main(argv) != 0
    assert message in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_cli_records_the_mix_in_the_card(tmp_path):
    out = tmp_path / "mix-ae.pt"
    rc = cli_main(["train", "generative", "ae", "--phantoms", "2", "--family", "mix", "--mni", "2", "--epochs", "1",
                   "--size", "16", "--spacing", "6", "--channels", "8,16", "--threads", "1", "--validate", "0",
                   "-o", str(out)])
    assert rc == 0
    training = json.loads(out.with_suffix(".json").read_text())["training"]
    assert training["family"] == "mix" and training["mni"] == 2 and training["threads"] == 1
    assert "McConnell Brain Imaging Centre" in training["template_licence"]
    assert "--family mix --mni 2" in training["command"]


def test_heldout_anomaly_figures_of_a_candidate(tmp_path, ae_package, capsys, load_script):
    """``scripts/heldout_figures.py --anomaly-only``: a missing candidate stops before any work;
    a candidate file gets its row and, with --write-card, its card's ``heldout`` entry."""
    import shutil

    script = load_script("heldout_figures")
    with pytest.raises(SystemExit, match="no anomaly model file"):
        script.main(["--anomaly-only", "--anomaly-model", str(tmp_path / "missing.pt")])
    model = tmp_path / "cand.pt"
    shutil.copy(ae_package, model)
    shutil.copy(ae_package.with_suffix(".json"), model.with_suffix(".json"))
    assert script.main(["--anomaly-only", "--n", "1", "--seed", "0", "--anomaly-model", str(model), "--write-card"]) == 0
    assert f"| {model} |" in capsys.readouterr().out
    heldout = json.loads(model.with_suffix(".json").read_text())["heldout"]
    assert heldout["seed"] == 0 and heldout["healthy"] == heldout["lesioned"] == 1
    assert heldout["map_auroc_brain"]["cases"] == 1 and 0.0 <= heldout["map_auroc_brain"]["mean"] <= 1.0
    assert heldout["volume_auroc"] in (0.0, 1.0)  # one healthy and one lesioned case
    assert "--anomaly-only" in heldout["command"]
