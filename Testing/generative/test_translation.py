"""The cortical-folding study's V-Net translation (sulcal skeleton -> grey / white matter):
phantom pairs, a short training that learns, the command line, geometry and bad input."""

import json

import numpy as np
import pytest

from clinicalai.cli import main
from clinicalai.generative.sulci import SULCUS, TISSUE_VALUES, sulcal_translation_pair
from clinicalai.generative.translation import TISSUE_LABELS, tissue_dice
from clinicalai.volume import read_volume, write_volume

SIZE = 16
TRAIN, VALIDATE, SEED = 6, 2, 0


def _rule_of_thumb(skeleton: np.ndarray) -> np.ndarray:
    """What needs no learning: sulcus -> grey, the rest of the brain -> white."""
    return np.where(skeleton == SULCUS, TISSUE_VALUES[1], np.where(skeleton == 0, TISSUE_VALUES[2], 0))


def test_pairs_share_a_grid_and_the_skeleton_lies_in_grey_matter():
    skeleton, tissues = sulcal_translation_pair(3, size=32)
    assert skeleton.same_grid(tissues) and skeleton.shape == (32, 32, 32)
    s, t = np.asarray(skeleton.array), np.asarray(tissues.array)
    assert set(np.unique(s)) == {0, 11, 60} and set(np.unique(t)) == set(TISSUE_VALUES)
    assert (t[s == SULCUS] == TISSUE_VALUES[1]).all()  # a skeleton of the grey ribbon
    assert (t[s == 11] == 0).all()  # outside the brain is no tissue


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    out = tmp_path_factory.mktemp("translation") / "vnet.pt"
    rc = main(["train", "translation", "--phantoms", str(TRAIN), "--iterations", "12", "--size", str(SIZE),
               "--validate", str(VALIDATE), "--seed", str(SEED), "-o", str(out)])
    assert rc == 0
    return out


def test_a_short_training_learns_more_than_the_rule_of_thumb(translator):
    card = json.loads(translator.with_suffix(".json").read_text())
    assert card["task"] == "segmentation" and card["architecture"]["name"] == "monai.networks.nets.VNet"
    assert card["synthetic_demo"] and "not for clinical use" in card["intended_use"]
    assert card["training"]["command"].startswith("clinicalai train translation")
    dice = card["validation"]["dice"]
    baseline = []
    for seed in range(SEED + TRAIN, SEED + TRAIN + VALIDATE):  # the held-out phantoms of the card
        skeleton, tissues = sulcal_translation_pair(seed, size=SIZE)
        baseline.append(tissue_dice(_rule_of_thumb(np.asarray(skeleton.array)), np.asarray(tissues.array)))
    for label in TISSUE_LABELS:
        rule = float(np.mean([b[label["name"]] for b in baseline]))
        assert dice[label["name"]] > rule + 0.1, (label["name"], dice, rule)


def test_translate_puts_tissues_on_the_skeletons_own_grid(translator, tmp_path):
    from scipy.spatial.transform import Rotation

    from clinicalai.volume import Volume

    skeleton, tissues = sulcal_translation_pair(SEED + TRAIN, size=SIZE)  # held out
    # the same skeleton mirrored, on an oblique grid elsewhere: the answer follows its voxels
    oblique = Rotation.from_euler("xyz", [20, -15, 10], degrees=True).as_matrix()
    moved = Volume(np.asarray(skeleton.array)[::-1].copy(), spacing=skeleton.spacing, origin=(5.0, -7.0, 30.0),
                   direction=oblique, modality="SEG", units="label")
    write_volume(moved, tmp_path / "skeleton.nii.gz")
    rc = main(["translate", str(tmp_path / "skeleton.nii.gz"), "--model", str(translator), "--device", "cpu",
               "-o", str(tmp_path / "tissues.seg.nrrd")])
    assert rc == 0
    out = read_volume(tmp_path / "tissues.seg.nrrd")
    assert out.same_grid(read_volume(tmp_path / "skeleton.nii.gz"), atol=1e-5)
    assert set(np.unique(out.array)) <= set(TISSUE_VALUES)
    truth = np.asarray(tissues.array)[::-1]
    got = tissue_dice(np.asarray(out.array), truth)
    rule = tissue_dice(_rule_of_thumb(np.asarray(moved.array)), truth)
    assert got["white matter"] > rule["white matter"] and got["grey matter"] > rule["grey matter"], (got, rule)


def test_bad_input_and_wrong_models_are_refused_cleanly(translator, tmp_path, capsys):
    skeleton, _ = sulcal_translation_pair(1, size=SIZE)
    intensity = skeleton.with_array(np.random.default_rng(0).random(skeleton.shape).astype(np.float32))
    write_volume(intensity, tmp_path / "mri.nii.gz")
    out = tmp_path / "out.nii.gz"
    assert main(["translate", str(tmp_path / "mri.nii.gz"), "--model", str(translator), "-o", str(out)]) != 0
    assert "values [0, 11, 60]" in capsys.readouterr().err and not out.exists()
    # a segment command reads one intensity channel: the translator is no segmenter there
    assert main(["segment", str(tmp_path / "mri.nii.gz"), "--model", str(translator), "--no-correct", "-o", str(out)]) != 0
    assert "input channels" in capsys.readouterr().err and not out.exists()
    assert main(["train", "translation", "--size", "24", "-o", str(tmp_path / "x.pt")]) != 0
    assert "multiple of 16" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
    assert main(["train", "translation", "-o", str(tmp_path / "x.onnx")]) != 0
    assert "must end in .pt" in capsys.readouterr().err
