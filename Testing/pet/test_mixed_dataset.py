"""The PET demo's mixed training set (clinicalai.phantoms.pet_mix): both phantom families,
MNI-template cases only from the "train" stream (issue 19). No training here."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nilearn")

from clinicalai.errors import InputError  # noqa: E402
from clinicalai.pet.train import read_pet_csv  # noqa: E402
from clinicalai.phantoms.mni import MNI_LICENSE, case_rng, mni_pet_case  # noqa: E402
from clinicalai.phantoms.pet_mix import SEED_STRIDE, data_description, is_mni_pair, write_mixed_pet_dataset  # noqa: E402
from clinicalai.volume import read_volume  # noqa: E402

#: a coarse grid keeps the template cases quick
PET_SPACING = (4.0, 4.0, 4.0)


def test_mni_share_is_spread_evenly():
    """``is_mni_pair`` gives the asked share of label pairs, none at 0 and all at 1."""
    for fraction, pairs, expected in ((0.0, 10, 0), (1.0, 10, 10), (0.5, 10, 5), (1 / 3, 30, 10)):
        assert sum(is_mni_pair(p, fraction) for p in range(pairs)) == expected


def test_training_stream_never_gives_a_heldout_pet_case():
    """The PET training stream is another random stream than the held-out one: the seeds a demo
    data set draws (``7 * 100003 + i``) start no held-out stream of the seeds the figures use,
    and the same seed gives another case in each."""
    demo = {tuple(case_rng("PET", "train", 7 * SEED_STRIDE + i).integers(0, 2 ** 62, 2)) for i in range(200)}
    heldout = {tuple(case_rng("PET", "heldout", s).integers(0, 2 ** 62, 2)) for s in range(200)}
    assert len(demo) == len(heldout) == 200 and not demo & heldout
    for seed in (0, 1):
        trained = mni_pet_case(seed, recurrence=True, spacing=PET_SPACING, stream="train")
        held = mni_pet_case(seed, recurrence=True, spacing=PET_SPACING)
        assert trained.info["stream"] == "train" and held.info["stream"] == "heldout"
        assert trained.image.shape != held.image.shape or not np.array_equal(trained.image.array, held.image.array)
        assert trained.info["region_radius_mm"] != held.info["region_radius_mm"]


def test_mixed_writer_gives_labelled_cases_of_both_families(tmp_path):
    """Four cases: an ellipsoid pair (scanner A) and an MNI-template pair (the train stream),
    each a non-recurrence and a recurrence, readable by the PET trainer's CSV reader."""
    csv_path = write_mixed_pet_dataset(tmp_path / "mix", n=4, seed=3, mni_fraction=0.5)
    rows = read_pet_csv(csv_path)
    assert [r.label for r in rows] == [0, 1, 0, 1]
    assert [r.scanner for r in rows] == ["A", "A", "MNI", "MNI"]
    for i, row in enumerate(rows):
        image = read_volume(row.path)
        brain = read_volume(row.brain_mask)
        assert image.array.max() > 0 and brain.array.sum() > 0 and image.shape == brain.shape
        if row.scanner == "MNI":
            case = mni_pet_case(3 * SEED_STRIDE + i, recurrence=bool(i % 2), stream="train")
            assert case.info["kind"] == ("recurrence" if i % 2 else case.info["kind"])
            np.testing.assert_allclose(image.array, case.image.array, rtol=1e-5)
            np.testing.assert_allclose(image.spacing, case.image.spacing, atol=1e-5)
            held = mni_pet_case(3 * SEED_STRIDE + i, recurrence=bool(i % 2))
            assert held.image.shape != image.shape or not np.allclose(held.image.array, image.array)
    card = data_description(4, 3, 0.5)  # what a card trained on this set says, licence included
    assert "2 clinicalai.phantoms.pet " in card["data"]
    assert "2 clinicalai.phantoms.mni" in card["data"] and card["template_licence"] == MNI_LICENSE


def test_mixed_writer_refuses_a_bad_share(tmp_path):
    """A share outside [0, 1] is one clear error, and nothing is written."""
    with pytest.raises(InputError, match="mni_fraction"):
        write_mixed_pet_dataset(tmp_path / "bad", n=4, mni_fraction=1.5)
    assert not (tmp_path / "bad").exists()


def test_train_demo_grid_keeps_the_field_of_view_and_refuses_bad_options(tmp_path, capsys):
    """``--spacing-mm`` changes the voxel, not the 256 x 256 x 168 mm field of view (8 mm: the
    bundled 32 x 32 x 21); a voxel or share out of range stops before any phantom is written."""
    from clinicalai.pet.preprocess import DEMO_SIZE_XYZ
    from clinicalai.pet.train_demo import demo_size_xyz, main

    assert demo_size_xyz(8.0) == DEMO_SIZE_XYZ and demo_size_xyz(6.0) == (43, 43, 28)
    for bad, word in ((["--spacing-mm", "1"], "--spacing-mm"), (["--family", "mix", "--mni-fraction", "2"], "--mni-fraction")):
        with pytest.raises(SystemExit) as exc:
            main(bad + ["--out", str(tmp_path / "out")])
        assert exc.value.code == 2 and word in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_card_heldout_script_writes_the_figures_and_refuses_other_json(tmp_path, load_script, capsys):
    """scripts/pet_card_heldout.py puts the --pet-only figures into each fold card's
    ``heldout`` (the rest of the card unchanged) and refuses a JSON made with another --n."""
    import json
    import shutil

    from clinicalai.models import BUNDLED_MODELS_DIR

    script = load_script("pet_card_heldout")
    card = tmp_path / "pet-cnn3d-fold0.json"
    shutil.copy2(BUNDLED_MODELS_DIR / card.name, card)
    before = json.loads(card.read_text())
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps({"n": 4, "n_pos": 2, "n_neg": 2, "auc": 0.87654, "neg_mean": 0.2, "cam_within": 0.5,
                                   "per_kind": {"trc": 0.11111}}))
    run = [str(figures), "--seed", "3", "--models", str(tmp_path)]
    assert script.main(run + ["--n", "4"]) == 0
    after = json.loads(card.read_text())
    assert after["heldout"]["auc"] == 0.877 and after["heldout"]["per_kind"] == {"trc": 0.111}
    assert "--n 4 --seed 3" in after["heldout"]["command"]
    assert {k: v for k, v in after.items() if k != "heldout"} == {k: v for k, v in before.items() if k != "heldout"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        script.main(run + ["--n", "16"])
    assert bad.value.code == 2 and "--n 16" in capsys.readouterr().err and json.loads(card.read_text()) == after
