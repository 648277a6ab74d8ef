"""The bundled demo models and run_demo."""

import json

from clinicalai.generative import list_anomaly_models
from clinicalai.generative.demo import run_demo
from clinicalai.models import BUNDLED_MODELS_DIR, load_model, read_card
from clinicalai.volume import read_volume

BUNDLED = list_anomaly_models()


def test_bundled_cards_are_honest():
    assert {m["kind"] for m in BUNDLED} >= {"ae", "vae", "f-anogan", "cyclegan", "wgan-gp"}
    total = 0
    for item in BUNDLED:
        card = read_card(item["card"])
        assert card.synthetic_demo and "not for clinical use" in card.intended_use
        assert card.training["command"].startswith("clinicalai train generative")
        assert card.validation, item["name"]
        total += (BUNDLED_MODELS_DIR / card.weights).stat().st_size
        load_model(item["path"], device="cpu")  # sha256 and architecture check
    assert total < 10 * 2 ** 20


def test_run_demo(tmp_path):
    summary = run_demo(tmp_path)
    image = read_volume(tmp_path / "image.nii.gz")
    assert set(summary["models"]) == {m["name"] for m in BUNDLED}
    for name, item in summary["models"].items():
        m = read_volume(tmp_path / f"{name}_map.nii.gz")
        if item["kind"] != "wgan-gp":  # the sulcal model maps a skeleton crop
            assert m.same_grid(image, atol=1e-4)
        assert item["auroc"] is not None and item["auroc"] > 0.5, (name, item)
    assert json.loads((tmp_path / "generative_summary.json").read_text())["case_seed"] == summary["case_seed"]
