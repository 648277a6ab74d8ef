"""Whole-field generative models: trained on random windows, read through sliding windows, so a
lesion anywhere in the head is mapped (a centre-crop model maps only the middle of the head)."""

import json

import numpy as np
import pytest
import torch

from clinicalai.cli import main as cli_main
from clinicalai.errors import Cancelled, InputError, ModelError
from clinicalai.generative import anomaly
from clinicalai.generative.data import GridSpec, brain_training_set, stack_padded, to_model_grid
from clinicalai.generative.train import TrainConfig, _window_sampler, train_generative
from clinicalai.models import load_model, read_card, save_model
from clinicalai.phantoms.brain import brain_case
from clinicalai.progress import CancelToken
from clinicalai.volume import Volume

#: 16^3 windows of 6 mm (96 mm) on phantom heads of 128 x 192 x 192 mm (``SHAPE`` voxels of 2 mm)
WHOLE = GridSpec((6.0, 6.0, 6.0), (16, 16, 16), field_of_view="whole")
CENTRE = GridSpec((6.0, 6.0, 6.0), (16, 16, 16))
SHAPE = (64, 96, 96)
TINY = dict(kind="ae", epochs=15, batch_size=4, lr=1e-3, channels=(8, 16), strides=(2, 2), seed=0)
LESIONS = {"lesion_radius_mm": (10.0, 14.0)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One tiny AE trained on random windows, packaged twice: read whole (sliding windows) and
    read as a centre crop (the same weights), so the field of view is the only difference."""
    folder = tmp_path_factory.mktemp("whole")
    healthy, _ = brain_training_set(16, WHOLE, seed=1, pathological=False, shape=SHAPE)
    torch.manual_seed(0)
    res = train_generative(TrainConfig(**TINY), WHOLE, healthy)
    out = {"history": res.history}
    for name, spec in (("whole", WHOLE), ("centre", CENTRE)):
        card = {"name": f"tiny-{name}", "task": "anomaly-detection", "format": "state_dict",
                "architecture": {"name": res.architecture, "kwargs": res.kwargs}, "input": spec.card_input(),
                "generative_kind": "ae", "synthetic_demo": True, **spec.card_extra()}
        out[name] = folder / f"tiny-{name}.pt"
        save_model(res.module, card, out[name])
    return out


def _off_centre(case, pad: int = 48):
    """The case with ``pad`` empty voxels after the head along x: the head sits off the array
    centre, as in a large field of view, and the centre crop misses part of it."""
    def shifted(vol):
        arr = np.pad(np.asarray(vol.array), ((0, 0), (0, 0), (0, pad)))
        return Volume(arr, vol.spacing, vol.origin, vol.direction, vol.modality, vol.units)
    return shifted(case.image), shifted(case.lesion), shifted(case.brain_mask)


def test_whole_field_training_set_is_the_head_padded_not_cropped():
    healthy, cases = brain_training_set(3, WHOLE, seed=1, pathological=False, shape=SHAPE)
    # 64 x 96 x 96 voxels of 2 mm -> 21 x 32 x 32 of 6 mm: larger than the 16^3 window, uncropped
    assert healthy.shape == (3, 1, 21, 32, 32)
    one = to_model_grid(cases[0].image, WHOLE)
    centre = to_model_grid(cases[0].image, CENTRE)
    # the same intensity scale as the centre crop the window-sized models see
    assert one.scale == pytest.approx(centre.scale)
    padded = stack_padded([np.ones((1, 8, 9, 10), np.float32), np.ones((1, 10, 8, 8), np.float32)])
    assert padded.shape == (2, 1, 10, 9, 10) and padded[0].sum() == 8 * 9 * 10 and padded[1, 0, :, 8, :].sum() == 0
    assert padded[1, 0, :, :, 0].sum() == 0 and padded[1].sum() == 10 * 8 * 8


def test_training_windows_are_random_window_sized_and_seeded():
    x = torch.arange(2 * 21 * 32 * 32, dtype=torch.float32).reshape(2, 1, 21, 32, 32)
    draw = _window_sampler(WHOLE, seed=3)
    first = [draw(x) for _ in range(4)]
    assert all(w.shape == (2, 1, 16, 16, 16) and type(w) is torch.Tensor for w in first)
    assert len({float(w[0, 0, 0, 0, 0]) for w in first}) > 1  # windows move
    again = _window_sampler(WHOLE, seed=3)
    assert all(torch.equal(a, again(x)) for a in first)  # and repeat with the seed
    assert _window_sampler(CENTRE, seed=3)(x) is x


def test_whole_field_model_maps_a_lesion_the_centre_crop_cannot_see(models):
    whole, centre = load_model(models["whole"], device="cpu"), load_model(models["centre"], device="cpu")
    assert models["history"][-1]["reconstruction"] < 0.5 * models["history"][0]["reconstruction"]
    seen_whole, seen_centre, unseen = [], [], []
    for seed in range(300, 305):
        image, lesion, brain = _off_centre(brain_case(seed, pathological=True, shape=SHAPE, **LESIONS))
        rw = anomaly(image, whole, lesion=lesion, mask=brain)
        rc = anomaly(image, centre, lesion=lesion, mask=brain)
        assert rw.map.same_grid(image) and rw.reconstruction.same_grid(image)
        inside, les = brain.array > 0, lesion.array > 0
        # the whole brain is mapped; the centre read leaves part of it (and of the lesions) at 0
        assert (rw.map.array[inside] > 0).mean() > 0.99
        assert (rc.map.array[inside] > 0).mean() < 0.8
        unseen.append(float((rc.map.array[les] == 0).mean()))
        seen_whole.append(rw.lesion_scores["auroc"])
        seen_centre.append(rc.lesion_scores["auroc"])
    assert max(unseen) > 0.5, unseen
    assert np.mean(seen_whole) > 0.8 and np.mean(seen_whole) > np.mean(seen_centre) + 0.1, (seen_whole, seen_centre)


def test_whole_field_progress_cancel_and_oblique_grid(models):
    whole = load_model(models["whole"], device="cpu")
    a = np.deg2rad(25.0)
    direction = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    case = brain_case(310, shape=SHAPE, spacing=(2.0, 2.0, 3.5), direction=direction, pathological=True, **LESIONS)
    calls = []
    res = anomaly(case.image, whole, progress=lambda f, m: calls.append((f, m)))
    assert res.map.same_grid(case.image) and np.isfinite(res.map.array).all() and res.score > 0
    windows = [f for f, m in calls if "sliding windows" in m]
    assert windows and windows == sorted(windows) and calls[-1][0] == 1.0
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        anomaly(case.image, whole, cancel=token)


def test_field_of_view_in_the_card_and_its_errors(models, tmp_path):
    card = read_card(models["whole"].with_suffix(".json"))
    assert card.extra_get("field_of_view") == "whole" and GridSpec.from_card(card).whole
    assert GridSpec.from_card(read_card(models["centre"].with_suffix(".json"))).field_of_view == "centre"
    with pytest.raises(InputError, match="field of view must be one of"):
        GridSpec((3.0,) * 3, (8,) * 3, field_of_view="half")
    with pytest.raises(InputError, match="intensity models"):
        GridSpec((2.0,) * 3, (8,) * 3, "labels", (0, 11, 60), field_of_view="whole")
    bad = json.loads(models["whole"].with_suffix(".json").read_text())
    bad["field_of_view"] = "everywhere"
    path = tmp_path / "bad.pt"
    path.write_bytes(models["whole"].read_bytes())
    path.with_suffix(".json").write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="field_of_view"):
        anomaly(brain_case(1).image, load_model(path, device="cpu"))
    small = np.zeros((2, 1, 16, 16, 15), np.float32)
    with pytest.raises(InputError, match="or larger"):
        train_generative(TrainConfig(**TINY), WHOLE, small)


def test_cli_trains_validates_and_evaluates_a_whole_field_vae(tmp_path, capsys):
    # a VAE has a fixed-size latent: it must only ever see windows (training, validation, evaluation)
    out = tmp_path / "whole-vae.pt"
    rc = cli_main(["train", "generative", "vae", "--phantoms", "4", "--epochs", "1", "--size", "8", "--spacing", "6",
                   "--channels", "4,8", "--latent-size", "8", "--field-of-view", "whole", "--validate", "4",
                   "-o", str(out)])
    assert rc == 0, capsys.readouterr()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["field_of_view"] == "whole" and "volume_auroc" in card["validation"]
    report_dir = tmp_path / "eval"
    rc = cli_main(["evaluate", "generative", "--model", str(out), "--phantoms", "4", "--sizes", "20", "-o",
                   str(report_dir)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((report_dir / "report.json").read_text())
    assert report["synthetic_anomalies"] and "map_auroc" in report["phantom_lesions"]
    bad = tmp_path / "sulci.pt"
    assert cli_main(["train", "generative", "ae", "--input", "sulci", "--phantoms", "4", "--field-of-view", "whole",
                     "-o", str(bad)]) != 0
    assert "for brain intensity models" in capsys.readouterr().err and not bad.exists()
