"""Synthetic corruptions: every kind changes a mask, is deterministic by seed, and mostly
breaks anatomical validity."""

import numpy as np
import pytest

from clinicalai.segcorrect.corruptions import (CORRUPTION_KINDS, CORRUPTIONS, EXTRA_CORRUPTION_KINDS, corrupt_slice,
                                               corrupt_volume)
from clinicalai.segcorrect.validity import check_slice


@pytest.mark.parametrize("kind", CORRUPTION_KINDS + EXTRA_CORRUPTION_KINDS)
def test_each_kind_changes_the_mask_deterministically(kind, heart):
    outs = [corrupt_slice(heart, seed, kinds=[kind], n=1) for seed in range(12)]
    for out, applied in outs:
        assert applied == [kind]
        assert out.shape == heart.shape and out.dtype == heart.dtype
        assert set(np.unique(out)) <= {0, 1, 2, 3}
    changed = [not np.array_equal(o, heart) for o, _ in outs]
    assert sum(changed) >= 10
    again, _ = corrupt_slice(heart, 5, kinds=[kind], n=1)
    assert np.array_equal(again, outs[5][0])
    invalid = sum(not check_slice(o).valid for o, _ in outs)
    assert invalid >= 3, f"{kind} should usually break anatomy, broke {invalid}/12"


def test_input_not_modified_and_bad_kind(heart):
    before = heart.copy()
    corrupt_slice(heart, 0, n=3)
    assert np.array_equal(before, heart)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_slice(heart, 0, kinds=["melt"])
    with pytest.raises(ValueError):
        corrupt_slice(heart[None], 0)


def test_corrupt_volume_leaves_empty_slices_and_is_seeded(heart):
    vol = np.stack([np.zeros_like(heart), heart, heart, heart, heart])
    a, kinds = corrupt_volume(vol, 3, probability=1.0)
    b, _ = corrupt_volume(vol, 3, probability=1.0)
    assert np.array_equal(a, b)
    assert kinds[0] == [] and np.array_equal(a[0], vol[0])
    assert all(k for k in kinds[1:])
    c, kinds_c = corrupt_volume(vol, 3, probability=0.0)
    assert np.array_equal(c, vol) and not any(kinds_c)


def test_extra_kinds_do_what_they_say(heart):
    """Speckle dropout removes part of one structure only; far blobs land away from the heart;
    a cavity patch puts a wrong label strictly inside the LV or RV."""
    from scipy import ndimage

    fg = heart > 0
    ys, xs = np.nonzero(fg)
    cy, cx, r = ys.mean(), xs.mean(), np.sqrt(fg.sum() / np.pi)
    for seed in range(8):
        rng = np.random.default_rng(seed)
        out = CORRUPTIONS["speckle_dropout"](heart, (1, 2, 3), rng)
        changed = out != heart
        assert changed.any() and (out[changed] == 0).all()
        assert len(np.unique(heart[changed])) == 1  # one structure
        lost = changed.sum() / (heart == heart[changed][0]).sum()
        assert 0.1 < lost < 0.45

        out = CORRUPTIONS["far_blobs"](heart, (1, 2, 3), np.random.default_rng(seed))
        changed = np.argwhere(out != heart)
        assert len(changed) and (np.hypot(changed[:, 0] - cy, changed[:, 1] - cx) > 1.5 * r).all()
        assert np.array_equal(out[fg], heart[fg])  # the heart itself is untouched

        out = CORRUPTIONS["cavity_patch"](heart, (1, 2, 3), np.random.default_rng(seed))
        changed = out != heart
        assert changed.any()
        cavity = int(np.unique(heart[changed])[0])
        assert cavity in (1, 3) and len(np.unique(heart[changed])) == 1
        assert (out[changed] != cavity).all() and (out[changed] > 0).all()
        assert not (changed & ~ndimage.binary_erosion(heart == cavity)).any()  # strictly inside


def test_default_draw_unchanged_by_the_extra_kinds(heart):
    """Earlier figures stay reproducible: the default kinds draw exactly as before, and the
    extra kinds only come in when asked for."""
    vol = np.stack([heart] * 6)
    a, kinds_a = corrupt_volume(vol, [3000, 0, 7], probability=1.0)
    b, kinds_b = corrupt_volume(vol, [3000, 0, 7], CORRUPTION_KINDS, probability=1.0)
    assert np.array_equal(a, b) and kinds_a == kinds_b
    assert not set(EXTRA_CORRUPTION_KINDS) & {k for ks in kinds_a for k in ks}
    _, kinds_all = corrupt_volume(np.stack([heart] * 40), 1, CORRUPTION_KINDS + EXTRA_CORRUPTION_KINDS,
                                  probability=1.0)
    assert set(EXTRA_CORRUPTION_KINDS) <= {k for ks in kinds_all for k in ks}


def test_cli_evaluate_segcorrect_corruptions(tmp_path, capsys):
    """``evaluate segcorrect --corruptions``: the kinds asked for are the ones drawn (and
    recorded); a bad name is one clear error and writes no report."""
    import json

    from clinicalai.cli import main

    rep = tmp_path / "far.json"
    args = ["evaluate", "segcorrect", "--phantoms", "1", "--seed", "1000", "--no-context", "--json", str(rep)]
    assert main([*args, "--corruptions", "far_blobs,cavity_patch", "--strategy", "evidence"]) == 0
    data = json.loads(rep.read_text())["data"]
    assert data["corruption_kinds"] == ["far_blobs", "cavity_patch"] and data["corrupted_slices"] > 0
    gated = json.loads(rep.read_text())["variants"]["cardiac-nvae"]
    assert gated["gated"]["dice"]["mean"] > gated["raw"]["dice"]["mean"]  # these two kinds are repairable
    bad = tmp_path / "bad.json"
    assert main([*args[:-1], str(bad), "--corruptions", "melt"]) != 0
    err = capsys.readouterr().err
    assert "--corruptions: unknown melt" in err and "Traceback" not in err and not bad.exists()


def test_corruption_kinds_parses_sets_and_lists(tmp_path):
    """``--corruptions`` means the same on the CLI and on ``scripts/segcorrect_rescore.py`` (one
    parser): a set name, a comma-separated list; a bad name is one clear error, and the script
    then records nothing."""
    import subprocess
    import sys
    from pathlib import Path

    from clinicalai.errors import InputError
    from clinicalai.segcorrect.corruptions import corruption_kinds

    assert corruption_kinds("default") == CORRUPTION_KINDS
    assert corruption_kinds("all") == CORRUPTION_KINDS + EXTRA_CORRUPTION_KINDS
    assert corruption_kinds(" far_blobs, holes ") == ("far_blobs", "holes")
    for bad in ("melt", "", "holes,melt"):
        with pytest.raises(InputError, match="--corruptions: unknown"):
            corruption_kinds(bad)
    script = Path(__file__).resolve().parents[2] / "scripts" / "segcorrect_rescore.py"
    records = tmp_path / "r.pkl"
    run = subprocess.run([sys.executable, str(script), "--corruptions", "melt", "--records", str(records)],
                         capture_output=True, text=True)
    assert run.returncode != 0 and "--corruptions: unknown melt" in run.stderr and "Traceback" not in run.stderr
    assert not records.exists()
