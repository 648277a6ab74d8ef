"""Augmentation, cancellation and command-line error paths (cheap checks)."""

import pytest
import torch

from clinicalai.cli import main
from clinicalai.errors import Cancelled
from clinicalai.progress import CancelToken


def test_augmentation_keeps_shape_and_changes_values():
    from clinicalai.pet.train import augmentation

    torch.manual_seed(0)
    aug = augmentation(prob=1.0, elastic=False)
    aug.set_random_state(seed=1)
    x = torch.rand(1, 22, 22, 14)
    outs = [torch.as_tensor(aug(x)) for _ in range(3)]
    assert all(o.shape == x.shape for o in outs)
    assert all(not torch.allclose(o, x) for o in outs)


def test_cancel_stops_prediction():
    from clinicalai.pet.workflow import load_pet_models, predict_pet
    from clinicalai.phantoms.pet import pet_case

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        predict_pet(pet_case(66, spacing=(4.0, 4.0, 4.0), shape=(36, 54, 48)).image, load_pet_models(device="cpu"),
                    cancel=token)


def test_bundled_demo_models_are_labelled_as_such():
    from clinicalai.pet.workflow import bundled_pet_models, load_pet_models

    paths = bundled_pet_models()
    assert len(paths) >= 2 and sum(p.stat().st_size for p in paths) < 10 * 2**20
    for m in load_pet_models(paths, device="cpu"):
        assert m.card.synthetic_demo and "not for clinical use" in m.card.intended_use
        assert m.card.validation["fold"]["validation_auc"] is not None
        assert "python -m clinicalai.pet.train_demo" in m.card.training["command"]


@pytest.mark.parametrize("argv,needle", [
    (["train", "pet", "--csv", "{tmp}/none.csv", "--out", "{tmp}/o", "--arch", "alexnet"], "unknown PET architecture"),
    (["train", "pet", "--csv", "{tmp}/none.csv", "--out", "{tmp}/o"], "no such CSV"),
    (["evaluate", "pet", "--csv", "{tmp}/bad.csv"], "no 'label' column"),
    (["pet", "{tmp}/missing.nii.gz", "--units", "suv"], "no such file"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, argv, needle):
    (tmp_path / "bad.csv").write_text("path,scanner\na.nii.gz,A\n")
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o").exists()
