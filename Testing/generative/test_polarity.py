"""Signed anomaly maps (``anomaly(..., polarity=)``, ``clinicalai anomaly --polarity``, a card's
``map_polarity``): a lesion of known sign (FLAIR hyperintense, T1 hypointense) is mapped by the
residual of that sign only, which ranks it higher than ``|residual|``; the volume score is the
unsigned one's whatever the map shows."""

import json

import numpy as np
import pytest

from clinicalai.attribution.metrics import score_map
from clinicalai.cli import main
from clinicalai.errors import InputError, ModelError
from clinicalai.generative import anomaly
from clinicalai.models import bundled_model, load_model, save_model
from clinicalai.phantoms.brain import brain_case
from clinicalai.phantoms.mni import mni_brain_case
from clinicalai.volume import read_volume, write_volume


def test_the_brighter_map_ranks_flair_lesions_higher():
    """The bundled FLAIR-like VAE (whole head) on held-out template cases: ``brighter`` ranks the
    lesion above ``both`` on average, ``darker`` below chance on every case; all maps >= 0 and on
    the input grid; one volume score for the three."""
    model = load_model(bundled_model("brain-vae-anomaly"), device="cpu")
    auroc = {"both": [], "brighter": [], "darker": []}
    for seed in (100, 101, 102, 103):
        case = mni_brain_case(seed, pathological=True, contrast="FLAIR", spacing=(2, 2, 3), stream="heldout")
        results = {p: anomaly(case.image, model, polarity=p) for p in auroc}
        assert len({round(r.score, 6) for r in results.values()}) == 1, "the volume score does not depend on the map"
        for p, r in results.items():
            assert r.map.same_grid(case.image, atol=1e-4) and float(np.min(r.map.array)) >= 0.0
            assert r.map.metadata["polarity"] == p
            auroc[p].append(score_map(r.map, case.lesion, mask=case.brain_mask, pointing_tolerance=0)["auroc"])
    assert np.mean(auroc["brighter"]) > np.mean(auroc["both"]) + 0.01, auroc
    assert max(auroc["darker"]) < 0.5, auroc


def test_polarity_from_the_card_and_its_errors(tmp_path, ae_package):
    card = json.loads(ae_package.with_suffix(".json").read_text())
    module = load_model(ae_package, device="cpu").module
    image = brain_case(3, pathological=True, lesion_radius_mm=(10.0, 14.0)).image
    save_model(module, {**card, "map_polarity": "brighter"}, tmp_path / "bright.pt")
    from_card = anomaly(image, tmp_path / "bright.pt")
    asked = anomaly(image, ae_package, polarity="brighter")
    assert from_card.map.metadata["polarity"] == "brighter"
    np.testing.assert_array_equal(from_card.map.array, asked.map.array)
    assert anomaly(image, tmp_path / "bright.pt", polarity="both").map.metadata["polarity"] == "both"  # the argument wins
    save_model(module, {**card, "map_polarity": "up"}, tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="map_polarity must be one of both, brighter, darker"):
        anomaly(image, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="polarity must be one of both, brighter, darker, got 'hot'"):
        anomaly(image, ae_package, polarity="hot")


def test_cli_polarity(tmp_path, ae_package, capsys):
    case = brain_case(3, pathological=True, lesion_radius_mm=(10.0, 14.0))
    write_volume(case.image, tmp_path / "img.nii.gz")
    out = tmp_path / "map.nii.gz"
    base = ["anomaly", str(tmp_path / "img.nii.gz"), "--model", str(ae_package), "-o", str(out), "--device", "cpu"]
    assert main(base + ["--polarity", "darker", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["map"]["polarity"] == "darker"
    assert read_volume(out).same_grid(case.image, atol=1e-4)
    capsys.readouterr()
    out.unlink()
    with pytest.raises(SystemExit):  # argparse: the choices in its usage line, nothing written
        main(base + ["--polarity", "hot"])
    assert "invalid choice: 'hot'" in capsys.readouterr().err and not out.exists()


def test_train_on_t1_like_template_phantoms_with_a_darker_map(tmp_path, capsys):
    """``train generative --family template --contrast T1 --map-polarity darker``: trained on
    T1-like template phantoms alone, validated on T1-like template phantoms, and the card makes
    its maps show the darker residual; the options that do not go together fail first."""
    model = tmp_path / "t1.pt"
    common = ["train", "generative", "ae", "--phantoms", "4", "--epochs", "2", "--batch-size", "2", "--channels", "4,8",
              "--size", "16", "--spacing", "8"]
    rc = main([*common, "--family", "template", "--contrast", "T1", "--map-polarity", "darker", "--validate", "4",
               "-o", str(model)])
    assert rc == 0, capsys.readouterr().err
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["training"]["family"] == "template" and card["training"]["contrast"] == "T1"
    assert "4 healthy MNI-template phantoms" in card["training"]["data"] and "T1-like" in card["training"]["data"]
    assert "McConnell" in card["training"]["template_licence"] and card["map_polarity"] == "darker"
    assert "T1-like" in card["validation"]["data"] and 0.0 <= card["validation"]["volume_auroc"] <= 1.0
    case = mni_brain_case(5, pathological=True, contrast="T1", spacing=(4, 4, 4))
    assert anomaly(case.image, model).map.metadata["polarity"] == "darker"
    capsys.readouterr()
    for extra, message in ((["--contrast", "T1"], "--contrast T1 is for --family template"),
                           (["--family", "template", "--input", "sulci"], "--family template trains on MNI-template"),
                           (["--input", "sulci", "--map-polarity", "darker"], "has no sign")):
        out = tmp_path / "bad.pt"
        rc = main([*common, *extra, "-o", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and message in err and len(err.splitlines()) == 1, (extra, err)
        assert not out.exists() and not out.with_suffix(".json").exists()
