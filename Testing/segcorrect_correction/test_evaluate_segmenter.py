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
