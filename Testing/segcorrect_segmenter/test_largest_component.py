"""The largest-component post-processing of segment_volume (MONAI KeepLargestConnectedComponent
per structure on the whole 3D label volume), switched on by the model card or the caller."""

import json
import shutil

import numpy as np
import pytest
from monai.transforms import KeepLargestConnectedComponent
from scipy import ndimage

from clinicalai.errors import ModelError
from clinicalai.models import BUNDLED_MODELS_DIR, load_model
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.segcorrect.demo import DEMO_SEED
from clinicalai.segcorrect.segmenter import keep_largest_components, keeps_largest_component, segment_volume
from clinicalai.volume import Volume


def _components(mask: np.ndarray) -> int:
    """Connected components of a 3D bool mask, full (26-) connectivity as MONAI's default."""
    return int(ndimage.label(mask, structure=np.ones((3, 3, 3)))[1])


def _heart_with_island(direction: np.ndarray) -> Volume:
    """A synthetic RV / MYO / LV label volume (z, y, x) on an oblique, anisotropic grid, with an
    LV island far from the heart and a one-voxel RV speck."""
    a = np.zeros((10, 64, 64), np.uint8)
    zz, yy, xx = np.mgrid[:10, :64, :64]
    r = np.hypot(yy - 30, xx - 30)
    body = (zz >= 2) & (zz <= 7)
    a[body & (r < 12)] = 2
    a[body & (r < 8)] = 3
    a[body & (np.hypot(yy - 30, xx - 47) < 7) & (r >= 12)] = 1
    a[4:6, 55:60, 3:8] = 3  # island: two slices of LV in a far corner
    a[8, 2, 60] = 1
    return Volume(a, spacing=(1.4, 1.2, 8.0), origin=(-10.0, 25.0, 40.0), direction=direction,
                  modality="SEG", units="label", metadata={"segments": [{"name": "RV"}, {"name": "MYO"}, {"name": "LV"}]})


def test_islands_far_from_the_heart_go_and_the_heart_and_geometry_stay(monkeypatch, oblique):
    labels = _heart_with_island(oblique)
    before = labels.array.copy()
    calls = []
    monai_call = KeepLargestConnectedComponent.__call__

    def spy(self, img):
        calls.append((tuple(self.applied_labels), self.independent, tuple(img.shape)))
        return monai_call(self, img)

    monkeypatch.setattr(KeepLargestConnectedComponent, "__call__", spy)
    out = keep_largest_components(labels, [1, 2, 3])
    # MONAI's transform does the work: one call, per label independently, on the whole volume
    assert calls == [((1, 2, 3), True, (1,) + labels.shape)]
    np.testing.assert_array_equal(labels.array, before)  # the input is not changed in place
    assert out.array[4:6, 55:60, 3:8].max() == 0 and out.array[8, 2, 60] == 0
    heart = np.ones_like(before, bool)
    heart[4:6, 55:60, 3:8] = False
    heart[8, 2, 60] = False
    np.testing.assert_array_equal(out.array[heart], before[heart])
    assert all(_components(out.array == v) == 1 for v in (1, 2, 3))
    assert _components(before == 3) == 2 and _components(before == 1) == 2
    assert out.same_grid(labels) and out.array.dtype == np.uint8 and out.array.shape == labels.shape
    assert out.modality == "SEG" and out.metadata == labels.metadata


def test_a_label_not_asked_for_keeps_its_islands(oblique):
    labels = _heart_with_island(oblique)
    out = keep_largest_components(labels, [1])
    assert out.array[4:6, 55:60, 3:8].min() == 3 and out.array[8, 2, 60] == 0


def _bundled_copy(tmp_path, postprocessing=None):
    """The bundled cardiac-unet in a folder of its own, its card with ``postprocessing`` set
    (or removed when None)."""
    src = BUNDLED_MODELS_DIR / "cardiac-unet.json"
    card = json.loads(src.read_text())
    card.pop("postprocessing", None)
    if postprocessing is not None:
        card["postprocessing"] = postprocessing
    shutil.copy(BUNDLED_MODELS_DIR / card["weights"], tmp_path / card["weights"])
    (tmp_path / "cardiac-unet.json").write_text(json.dumps(card))
    return load_model(tmp_path / "cardiac-unet.json", device="cpu")


@pytest.mark.skipif(not (BUNDLED_MODELS_DIR / "cardiac-unet.json").is_file(), reason="bundled cardiac-unet not installed")
def test_segment_volume_applies_the_step_only_when_the_card_or_caller_asks(tmp_path):
    # the demo phantom, on which the bundled U-Net draws a few voxels of a structure apart
    # from the heart (docs/segmentation.md)
    image = cardiac_case(DEMO_SEED, "ED").image
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    off_model = _bundled_copy(tmp_path / "off")
    on_model = _bundled_copy(tmp_path / "on", {"keep_largest_component": True})
    assert not keeps_largest_component(off_model.card) and keeps_largest_component(on_model.card)
    off = segment_volume(image, off_model)
    # off: the labels are the network's own argmax, islands and all
    np.testing.assert_array_equal(off.labels.array, off.probabilities.argmax(0))
    assert max(_components(off.labels.array == v) for v in (1, 2, 3)) > 1
    assert "keep_largest_component_s" not in off.timings
    on = segment_volume(image, on_model)
    assert all(_components(on.labels.array == v) == 1 for v in (1, 2, 3))
    np.testing.assert_array_equal(on.labels.array, keep_largest_components(off.labels, [1, 2, 3]).array)
    assert on.labels.same_grid(image) and on.labels.metadata == off.labels.metadata
    # probabilities and confidence stay the network's own
    np.testing.assert_array_equal(on.probabilities, off.probabilities)
    np.testing.assert_array_equal(on.slice_confidence, off.slice_confidence)
    # the caller overrides the card either way
    np.testing.assert_array_equal(segment_volume(image, on_model, keep_largest=False).labels.array, off.labels.array)
    np.testing.assert_array_equal(segment_volume(image, off_model, keep_largest=True).labels.array, on.labels.array)


@pytest.mark.skipif(not (BUNDLED_MODELS_DIR / "cardiac-unet.json").is_file(), reason="bundled cardiac-unet not installed")
def test_a_card_value_that_is_not_a_boolean_is_refused(tmp_path):
    model = _bundled_copy(tmp_path, {"keep_largest_component": "yes"})
    with pytest.raises(ModelError, match="keep_largest_component must be true or false"):
        segment_volume(cardiac_case(1, size=(64, 64), n_slices=6).image, model)


@pytest.mark.skipif(not (BUNDLED_MODELS_DIR / "cardiac-unet.json").is_file(), reason="bundled cardiac-unet not installed")
def test_segment_command_option_overrides_the_card(tmp_path):
    from clinicalai.cli import main
    from clinicalai.volume import read_volume, write_volume

    case = cardiac_case(DEMO_SEED, "ED")
    write_volume(case.image, tmp_path / "image.nii.gz")
    _bundled_copy(tmp_path)  # a card without the key
    model = str(tmp_path / "cardiac-unet.json")
    for flag, name in ((None, "card.nii.gz"), ("--keep-largest-component", "on.nii.gz")):
        argv = ["segment", str(tmp_path / "image.nii.gz"), "-o", str(tmp_path / name), "--model", model, "--no-correct"]
        assert main(argv + ([flag] if flag else [])) == 0
    card, on = (read_volume(tmp_path / n) for n in ("card.nii.gz", "on.nii.gz"))
    assert max(_components(card.array == v) for v in (1, 2, 3)) > 1
    assert all(_components(on.array == v) == 1 for v in (1, 2, 3))
    assert on.same_grid(case.image)


def test_the_trainer_writes_the_card_key():
    import argparse

    from clinicalai.models import parse_card
    from clinicalai.segcorrect.segmenter import architecture_spec, segmenter_card
    from clinicalai.segcorrect.segmenter_cli import add_train_segmenter_arguments

    spec = architecture_spec("unet", (8, 16, 32))
    on = parse_card(segmenter_card(spec, "m", True, {}, {}, keep_largest=True), "m")
    off = parse_card(segmenter_card(spec, "m", True, {}, {}), "m")
    assert keeps_largest_component(on) and not keeps_largest_component(off)
    assert on.extra_get("postprocessing") == {"keep_largest_component": True} and off.extra_get("postprocessing") is None
    p = argparse.ArgumentParser()
    add_train_segmenter_arguments(p)
    assert p.parse_args(["--phantoms", "4", "-o", "m.pt", "--keep-largest-component"]).keep_largest_component
    assert not p.parse_args(["--phantoms", "4", "-o", "m.pt"]).keep_largest_component


def test_the_3d_path_takes_the_step_too(oblique):
    from clinicalai.models import bundled_model
    from clinicalai.phantoms.tubular import tubular_case

    model = load_model(bundled_model("ct-ducts-unet3d"), device="cpu")
    assert not keeps_largest_component(model.card)  # a duct tree may have one part per side
    case = tubular_case(5001, spacing=(0.9, 0.9, 1.4), direction=oblique)
    # a short duct-dark tube where the parenchyma is farthest from the tree: a second component
    image = case.image.array.copy()
    far = ndimage.distance_transform_edt(case.labels.array == 0)[5:-5, 5:-5, 5:-5]
    z, y, x = np.array(np.unravel_index(np.argmax(far), far.shape)) + 5
    image[z - 5:z + 5, y - 2:y + 2, x - 2:x + 2] = np.median(image[case.labels.array == 1])
    image = case.image.with_array(image)
    off = segment_volume(image, model)
    on = segment_volume(image, model, keep_largest=True)
    assert _components(off.labels.array == 1) > 1
    assert _components(on.labels.array == 1) == 1 and on.labels.same_grid(case.image)
    np.testing.assert_array_equal(on.labels.array, keep_largest_components(off.labels, [1]).array)
