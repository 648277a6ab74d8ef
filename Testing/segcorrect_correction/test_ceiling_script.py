"""scripts/segcorrect_ceiling.py: the bounds of a correction that changes invalid slices only."""

from __future__ import annotations

import numpy as np


def test_ceiling_rows_bound_the_correction_on_a_heldout_case(capsys, load_script):
    import clinicalai.segcorrect.pipeline as pipeline

    original = pipeline.candidates_for_slice
    script = load_script("segcorrect_ceiling")
    means, invalid = script.ceiling_rows(1, 2)
    assert pipeline.candidates_for_slice is original  # the recording is undone
    mean = {name: float(np.mean(list(per.values()))) for name, per in means.items()}
    assert set(mean) == {"raw", "evidence", "invalid -> truth", "valid -> truth", "invalid -> best candidate"}
    assert 0.0 < invalid < 1.0  # the held-out family leaves some raw slices invalid
    # truth on the invalid slices bounds every choice among candidates for them, and beats the raw mask
    for name in ("raw", "evidence", "invalid -> best candidate"):
        for k in ("RV", "MYO", "LV"):
            assert means["invalid -> truth"][k] >= means[name][k] - 1e-9
    assert mean["invalid -> truth"] > mean["raw"]
    assert mean["invalid -> best candidate"] >= mean["evidence"] - 0.005  # the oracle picks at least as well
    assert script.main(["--phantoms", "1", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "| invalid -> best candidate |" in out and "held-out family, seeds 2-2" in out
