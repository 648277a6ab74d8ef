"""SegCorrect as a user gets it, scored on the training and the held-out phantom family."""

from __future__ import annotations

import pytest

from clinicalai.errors import InputError
from clinicalai.models import load_model
from clinicalai.segcorrect.evaluate_segmenter import evaluate_segmenter, markdown_rows


@pytest.fixture(scope="module")
def segmenter():
    return load_model("cardiac-unet", device="cpu")


def test_heldout_family_is_scored_and_harder_than_the_training_family(segmenter):
    held = evaluate_segmenter(segmenter, family="heldout", n_cases=2, seed=0)
    train = evaluate_segmenter(segmenter, family="training", n_cases=2, seed=5000)
    for r in (held, train):
        assert set(r["raw"]["dice"]) == {"RV", "MYO", "LV", "mean"}
        assert 0.0 <= r["raw"]["validity_rate"] <= 1.0
        assert len(r["per_case"]) == 2 and r["data"]["synthetic"] is True
        assert all(c["crops_tried"] >= 1 for c in r["per_case"])  # the fine pass ran on a crop
    assert held["data"]["family"] == "heldout" and "final" not in held
    # the segmenter learned hearts, not just its generator: far above chance on unseen anatomy ...
    assert held["raw"]["dice"]["LV"] > 0.5
    # ... but the held-out family is what shows its limits (the point of keeping it apart)
    assert train["raw"]["dice"]["mean"] > held["raw"]["dice"]["mean"]
    table = markdown_rows(held)
    assert "segmenter (raw)" in table and f"{held['raw']['dice']['LV']:.3f}" in table


def test_unknown_family_and_no_cases_are_refused(segmenter):
    with pytest.raises(InputError, match="phantom family must be one of training, heldout"):
        evaluate_segmenter(segmenter, family="acdc", n_cases=1)
    with pytest.raises(InputError, match="at least one case"):
        evaluate_segmenter(segmenter, n_cases=0)


def test_evaluate_segmenter_and_segment_strategy_on_the_command_line(tmp_path, capsys):
    import json

    from clinicalai.cli import main
    from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case
    from clinicalai.volume import write_volume

    assert main(["evaluate", "segmenter", "--phantoms", "1", "--no-correct", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "heldout family, 1 synthetic phantoms from seed 0" in out and "segmenter (raw)" in out
    assert json.loads((tmp_path / "r.json").read_text())["data"]["family"] == "heldout"
    write_volume(heldout_cardiac_case(3).image, tmp_path / "heart.nii.gz")
    assert main(["segment", str(tmp_path / "heart.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--strategy", "evidence",
                 "--report", str(tmp_path / "s.json")]) == 0
    correction = json.loads((tmp_path / "s.json").read_text())["correction"]
    assert correction["settings"]["strategy"] == "evidence"
    chosen = [s for s in correction["slices"] if s["decision"] == "corrected"]
    assert chosen and all(s["source"] and s["candidates"] for s in chosen)
    assert correction["summary"]["valid_final"] >= correction["summary"]["valid_raw"]


def test_write_card_stores_the_heldout_figures_beside_the_weights(tmp_path, capsys):
    """`evaluate segmenter --write-card` (what `make models` runs after the cardiac-unet
    training): the card gains the figures of the report and still loads with the same weights;
    a wrong family or a model without a card beside it is refused before any work, and the
    card is left as it was."""
    import json
    import shutil

    from clinicalai.cli import main
    from clinicalai.models import bundled_model

    weights = bundled_model("cardiac-unet")
    model = tmp_path / "seg.pt"
    shutil.copy(weights, model)
    shutil.copy(weights.with_suffix(".json"), tmp_path / "seg.json")
    before = (tmp_path / "seg.json").read_text()

    assert main(["evaluate", "segmenter", "--phantoms", "1", "--family", "training", "--model", str(model),
                 "--write-card"]) == 1
    assert "needs --family heldout" in capsys.readouterr().err
    shutil.copy(weights, tmp_path / "bare.pt")
    assert main(["evaluate", "segmenter", "--phantoms", "1", "--model", str(tmp_path / "bare.pt"), "--write-card"]) != 0
    assert (tmp_path / "seg.json").read_text() == before

    assert main(["evaluate", "segmenter", "--phantoms", "1", "--model", str(model), "--write-card",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert "held-out figures written to" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    card = json.loads((tmp_path / "seg.json").read_text())
    held = card["heldout"]
    assert held["cases"] == 1 and held["seeds"] == [0, 0] and held["strategy"] == "gate"
    assert held["raw"]["dice"]["LV"] == round(report["raw"]["dice"]["LV"], 3)
    assert held["final"]["valid_slices"] == round(report["final"]["validity_rate"], 3)
    assert held["command"].startswith("clinicalai evaluate segmenter ") and "--write-card" in held["command"]
    # everything else of the card is as it was, and the model still loads (same sha256)
    assert {k: v for k, v in card.items() if k != "heldout"} == {k: v for k, v in json.loads(before).items() if k != "heldout"}
    assert load_model(str(model), device="cpu").card.sha256 == card["sha256"]
