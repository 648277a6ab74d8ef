"""Models trained the MONAI way give MONAI's answer in ClinicalAI (issue: models from the outside world).

Tiny networks are trained here with MONAI's own pipeline (LoadImaged, EnsureChannelFirstd,
Orientationd(RAS), Spacingd, ScaleIntensityRanged, CropForegroundd), saved as a MONAI bundle,
as a ``.pt`` with a MONAI-layout card and as ``.onnx``, and run by the engine on axial,
sagittal (permuted axes), oblique, anisotropic NIfTI files and a DICOM series. The reference
is MONAI's own inference (sliding window, softmax, ``Invertd``) on the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clinicalai.cli import main as cli_main
from clinicalai.models import load_model
from clinicalai.models.layout import volume_from_metatensor
from clinicalai.segcorrect.segmenter import segment_volume
from clinicalai.volume import read_volume, reorient_to_axcodes, write_volume

sys.path.insert(0, str(Path(__file__).parent))
import monai_made as mm  # noqa: E402

# trains two tiny MONAI networks (about 10 s each on 2 cores)
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _rotation(degrees):
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()


#: the held-out test files: the same kind of anatomy stored as scanners store it
FILE_KINDS = {
    "axial": dict(),
    "oblique": dict(direction=_rotation([14, -9, 23])),
    "anisotropic": dict(shape_xyz=(54, 48, 12), spacing=(0.8, 0.85, 4.1)),
}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Train once: the segmenter, its three packages, the test files and MONAI's answers."""
    root = tmp_path_factory.mktemp("monai_made")
    items = mm.write_pairs(root / "train", [1, 2, 3, 4])
    net = mm.train_segmenter(items)
    bundle = mm.write_bundle(root / "seg-bundle", net)
    # the same network as .pt + card (MONAI layout) and as .onnx via clinicalai export
    from clinicalai.models.package import load_bundle

    card = load_bundle(bundle, device="cpu").card.to_dict()
    card.pop("bundle"), card.pop("sha256", None), card.pop("weights", None)
    from clinicalai.models import save_model

    pt = save_model(net, dict(card, name="tiny-monai-seg-pt"), root / "seg.pt")
    onnx = root / "seg-onnx.onnx"  # its own stem: the card is written beside it
    assert cli_main(["export", str(pt), "--to", "onnx", "-o", str(onnx), "--input-size", "16", "16", "16"]) == 0
    files = {}
    for i, (kind, geometry) in enumerate(FILE_KINDS.items()):
        img, lab = mm.phantom(200 + i, **geometry)
        files[kind] = (root / f"{kind}.nii.gz", lab)
        write_volume(img, files[kind][0])
    # sagittal: the axial phantom stored with index axes along A, S, L (a permuted file)
    img, lab = mm.phantom(210)
    files["sagittal"] = (root / "sagittal.nii.gz", reorient_to_axcodes(lab, "ASL")[0])
    write_volume(reorient_to_axcodes(img, "ASL")[0], files["sagittal"][0])
    img, lab = mm.phantom(220, direction=_rotation([0, 8, -12]))
    write_volume(img, root / "dicom")
    files["dicom"] = (root / "dicom", lab)
    reference = {kind: mm.monai_segment(str(path), net, reader="PydicomReader" if kind == "dicom" else None)
                 for kind, (path, _) in files.items()}
    return {"root": root, "net": net, "packages": {"bundle": bundle, "pt": pt, "onnx": onnx},
            "files": files, "reference": reference}


def _in_ras(volume):
    return reorient_to_axcodes(volume, "RAS")[0]


def test_the_monai_model_learned(made):
    """MONAI's own inference on held-out phantoms: well above chance for both structures."""
    dice = []
    for kind in ("axial", "oblique", "sagittal"):
        path, truth = made["files"][kind]
        ref = volume_from_metatensor(made["reference"][kind].argmax(0, keepdim=True), read_volume(path))
        dice.append(mm.dice_per_label(ref.array, truth.array))
    assert np.mean([d[1] for d in dice]) > 0.7 and np.mean([d[2] for d in dice]) > 0.5, dice


@pytest.mark.parametrize("package", ["bundle", "pt", "onnx"])
@pytest.mark.parametrize("kind", ["axial", "sagittal", "oblique", "anisotropic", "dicom"])
def test_engine_matches_monai(made, package, kind):
    path, _ = made["files"][kind]
    model = load_model(made["packages"][package], device="cpu")
    assert model.card.input.layout.kind == "monai" and model.card.input.layout.axcodes == "RAS"
    image = read_volume(path)
    out = segment_volume(image, model)
    assert out.labels.same_grid(image)  # on the input grid, exactly
    ref = made["reference"][kind]
    # compare in one frame (RAS), so a DICOM series' slice order cannot hide or fake a match
    ref_probs = [_in_ras(volume_from_metatensor(ref, image, channel=c)) for c in range(3)]
    eng_probs = [_in_ras(out.labels.with_array(out.probabilities[c])) for c in range(3)]
    assert ref_probs[0].same_grid(eng_probs[0], atol=1e-4)
    diff = max(float(np.abs(a.array - b.array).max()) for a, b in zip(ref_probs, eng_probs))
    assert diff < 1e-4, f"probabilities differ by {diff}"
    ref_labels = np.argmax(np.stack([p.array for p in ref_probs]), 0)
    dice = mm.dice_per_label(_in_ras(out.labels).array, ref_labels)
    assert min(dice.values()) >= 0.99, dice


def test_cli_segment_with_a_bundle_gives_monais_labels(made, tmp_path):
    path, _ = made["files"]["sagittal"]
    out = tmp_path / "mask.nii.gz"
    assert cli_main(["segment", str(path), "--model", str(made["packages"]["bundle"]), "--no-correct", "-o", str(out)]) == 0
    mask = read_volume(out)
    ref = volume_from_metatensor(made["reference"]["sagittal"].argmax(0, keepdim=True), read_volume(path))
    assert mask.same_grid(ref, atol=1e-4)
    assert min(mm.dice_per_label(mask.array, ref.array).values()) >= 0.99


def test_without_the_layout_the_answer_is_wrong(made):
    """The same weights read as an engine-layout model (the old behaviour) disagree with MONAI:
    the parity above is the layout's doing."""
    from clinicalai.models import read_card

    pt = made["packages"]["pt"]
    card = json.loads(pt.with_suffix(".json").read_text())
    card["input"]["layout"] = {"kind": "engine"}
    wrong = made["root"] / "engine-layout.pt"
    wrong.write_bytes(pt.read_bytes())
    wrong.with_suffix(".json").write_text(json.dumps(dict(card, weights=wrong.name)))
    assert read_card(wrong.with_suffix(".json")).input.layout.kind == "engine"
    path, _ = made["files"]["sagittal"]
    image = read_volume(path)
    out = segment_volume(image, load_model(wrong, device="cpu"))
    ref = volume_from_metatensor(made["reference"]["sagittal"].argmax(0, keepdim=True), image)
    assert min(mm.dice_per_label(out.labels.array, ref.array).values()) < 0.9


# ----------------------------------------------------------------------------- classification
@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("monai_cls")
    items = []
    for s in range(8):
        img, _ = mm.phantom(300 + s, with_sphere=bool(s % 2))
        write_volume(img, root / f"c{s}.nii.gz")
        items.append({"image": str(root / f"c{s}.nii.gz"), "label": s % 2})
    net = mm.train_classifier(items)
    return {"net": net, "bundle": mm.write_bundle(root / "cls-bundle", net, task="classification", crop=False),
            "root": root}


def test_classifier_bundle_learned_and_gradient_matches_monai(classifier):
    import torch

    from clinicalai.attribution.core import attribute

    root, net = classifier["root"], classifier["net"]
    model = load_model(classifier["bundle"], device="cpu")
    assert model.card.task == "classification" and model.card.input.layout.kind == "monai"
    correct = 0
    for s in range(4):
        img, _ = mm.phantom(400 + s, direction=_rotation([0, 0, 30 * s]), with_sphere=bool(s % 2))
        path = root / f"held{s}.nii.gz"
        write_volume(img, path)
        image = read_volume(path)
        ref_map, k = mm.monai_gradient(str(path), net)
        result = attribute(model, image, "gradient", normalization="none")
        correct += int(k == s % 2)
        assert result.target == k  # the engine predicts the class MONAI predicts
        assert result.volume.same_grid(image)
        ref = volume_from_metatensor(ref_map, image).array
        scale = float(np.abs(ref).max())
        assert scale > 0 and float(np.abs(result.volume.array - ref).max()) < 1e-4 * scale
    assert correct >= 3  # learned (chance: 2 of 4)
    # Grad-CAM of the same model lands on the input grid, in the right axis order: it agrees with
    # MONAI's own GradCAM on the network input, put back with Invertd
    from monai.transforms import Invertd
    from monai.visualize import GradCAM

    path = root / "held1.nii.gz"
    pre = mm.monai_transforms(crop=False)
    d = pre({"image": str(path)})
    # identity post-processing: MONAI's default rescales to 1..0 (inverted, for display)
    cam = GradCAM(nn_module=net, target_layers="layer4", postprocessing=lambda m: m)(d["image"][None].as_tensor().float())
    d["cam"] = d["image"].clone()
    d["cam"].data = torch.as_tensor(cam[0])
    ref_cam = volume_from_metatensor(Invertd(keys="cam", transform=pre, orig_keys="image")(d)["cam"],
                                     read_volume(path)).array
    ours = attribute(model, read_volume(path), "gradcam", layer="layer4").volume.array
    corr = np.corrcoef(ours.ravel(), ref_cam.ravel())[0, 1]
    assert corr > 0.99, corr


def test_unsupported_bundle_transform_is_named(tmp_path, made):
    bundle = tmp_path / "b"
    import shutil

    shutil.copytree(made["packages"]["bundle"], bundle)
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    inference["preprocessing"]["transforms"].insert(4, {"_target_": "HistogramNormalized", "keys": "image"})
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    from clinicalai.errors import ModelError

    with pytest.raises(ModelError, match="HistogramNormalized cannot be honoured"):
        load_model(bundle, device="cpu")
    inference["preprocessing"]["transforms"][4] = {"_target_": "Spacingd", "keys": "image", "pixdim": "$[1, 2, 3]"}
    (bundle / "configs" / "inference.json").write_text(json.dumps(inference))
    with pytest.raises(ModelError, match="expression"):
        load_model(bundle, device="cpu")


def test_cards_written_by_the_engine_say_their_layout(tmp_path):
    """Trainers' cards (save_model) carry input.layout, so a reader never has to guess."""
    import torch

    from clinicalai.models import save_model

    net = torch.nn.Conv3d(1, 2, 1)
    card = {"name": "t", "task": "segmentation", "labels": [{"name": "x", "value": 1}], "spatial_dims": 3,
            "architecture": {"name": "monai.networks.nets.BasicUNet", "kwargs": {}}}
    save_model(net, card, tmp_path / "t.pt")  # the card only is looked at (the weights need not fit)
    assert json.loads((tmp_path / "t.json").read_text())["input"]["layout"] == {"kind": "engine"}
    for path in (ROOT / "Resources" / "Models").glob("*.json"):
        assert json.loads(path.read_text())["input"]["layout"]["kind"] == "engine", path.name


def test_cli_explain_with_a_classifier_bundle_matches_monai(classifier, tmp_path):
    img, _ = mm.phantom(450, direction=_rotation([5, 0, -20]), with_sphere=True)
    path = tmp_path / "case.nii.gz"
    write_volume(img, path)
    out = tmp_path / "map.nii.gz"
    assert cli_main(["explain", str(path), "--model", str(classifier["bundle"]), "--method", "gradient",
                     "--normalization", "none", "-o", str(out)]) == 0
    ref_map, _ = mm.monai_gradient(str(path), classifier["net"])
    ref = volume_from_metatensor(ref_map, read_volume(path)).array
    got = read_volume(out)
    assert got.same_grid(read_volume(path), atol=1e-4)
    assert float(np.abs(got.array - ref).max()) < 1e-4 * float(np.abs(ref).max())


@pytest.mark.parametrize("bundled", ["pet-cnn3d-fold0", "brain-ae-anomaly"])
def test_workflows_with_their_own_pipeline_refuse_a_monai_layout(bundled, tmp_path):
    """PetRecurrence and the anomaly maps run only models trained on the engine's own
    preprocessing: a MONAI-layout card is refused by name, not run the wrong way."""
    from clinicalai.errors import ModelError

    src = ROOT / "Resources" / "Models" / bundled
    card = json.loads(src.with_suffix(".json").read_text())
    card["input"]["layout"] = {"kind": "monai", "axcodes": "RAS"}
    (tmp_path / f"{bundled}.pt").write_bytes(src.with_suffix(".pt").read_bytes())
    (tmp_path / f"{bundled}.json").write_text(json.dumps(card))
    model = load_model(tmp_path / f"{bundled}.pt", device="cpu")
    with pytest.raises(ModelError, match="MONAI input layout"):
        if bundled.startswith("pet"):
            from clinicalai.pet.workflow import check_pet_models

            check_pet_models([model])
        else:
            from clinicalai.generative.anomaly import resolve_anomaly_model

            resolve_anomaly_model(model)
