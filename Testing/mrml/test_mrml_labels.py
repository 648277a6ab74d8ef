"""Result keys reach the GUIs' tables as words (issue #16 item 9): one mapping,
:mod:`clinicalai.labels`, for the PET results table (desktop and browser) and the panels'
table headers."""

from clinicalai.attribution.metrics import SCORE_KEYS
from clinicalai.labels import LABELS, label
from clinicalai.mrml.pet_logic import _result_rows


def test_every_metric_and_static_key_has_words():
    static = {"SUVmax": 3.2, "background_SUVmean": 1.1, "TBRmax": 2.9, "TBRmean": 1.8, "lesion_voi": "threshold",
              "lesion_volume_ml": 2.5, "uptake_units": "SUVbw"}
    rows = _result_rows({"probability": 0.8, "label": "recurrence", "static": static})
    names = [r["quantity"] for r in rows]
    assert "background SUVmean" in names and "lesion volume (mL)" in names and "lesion VOI" in names
    assert not any("_" in n for n in names), names
    for key in SCORE_KEYS:
        assert key in LABELS and "_" not in label(key)
    assert label("pointing_game") == "pointing game" and label("some_new_key") == "some new key"


def test_labels_file_is_ascii():
    import clinicalai.labels as module

    open(module.__file__, encoding="ascii").read()


def test_every_attribution_method_has_a_title():
    from clinicalai.attribution.methods import METHODS

    for name in METHODS:
        assert name in LABELS and LABELS[name] != name, name
    assert label("integrated-gradients") == "Integrated gradients"
