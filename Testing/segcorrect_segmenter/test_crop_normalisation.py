"""The fine pass normalised on the heart box (card ``input.normalization.region: "crop"``): what
lies outside the box cannot change the contrast the network sees inside it, and a held-out stack
whose whole-volume percentiles broke the bundled segmenter is segmented (docs/heldout.md,
"Normalised on the crop")."""

import json
import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from clinicalai.models import BUNDLED_MODELS_DIR, load_model
from clinicalai.models.card import Normalization
from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case
from clinicalai.segcorrect.preprocess import SliceFrame
from clinicalai.segcorrect.segmenter import segment_volume, slice_intensities


class _Card:
    """The part of a card slice_intensities reads."""

    def __init__(self, **normalization):
        self.input = type("Input", (), {"normalization": Normalization(**normalization)})()


def _volume_with_bright_corner(corner_value: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.normal(100.0, 20.0, size=(6, 80, 90)).astype(np.float32)
    a[:, 30:50, 35:60] += 150.0  # the "heart"
    a[:, :25, :25] = corner_value  # far from it: another organ, a marker, a wide field of view
    return a


def test_region_is_a_percentile_option_and_defaults_to_the_volume():
    assert Normalization(kind="percentile").region is None
    assert Normalization(kind="percentile", lower=1, upper=99, region="crop").region == "crop"
    with pytest.raises(ValidationError, match="region"):
        Normalization(kind="zscore", region="crop")
    with pytest.raises(ValidationError):
        Normalization(kind="percentile", region="heart")


def test_crop_percentiles_ignore_what_lies_outside_the_box():
    box = SliceFrame(y0=25, x0=28, height=32, width=40, in_shape=(80, 90))
    crop_card, volume_card = _Card(kind="percentile", region="crop"), _Card(kind="percentile")
    dark, bright = _volume_with_bright_corner(0.0), _volume_with_bright_corner(5000.0)
    inside = (slice(None), slice(25, 57), slice(28, 68))
    a = slice_intensities(dark, crop_card, crop=box)[inside]
    b = slice_intensities(bright, crop_card, crop=box)[inside]
    np.testing.assert_array_equal(a, b)
    assert a.min() == 0.0 and a.max() == 1.0 and 0.2 < a.mean() < 0.8
    # the whole-volume rule (the default, and any card without region) lets the corner move it
    c = slice_intensities(dark, volume_card, crop=box)[inside]
    d = slice_intensities(bright, volume_card, crop=box)[inside]
    assert np.abs(c - d).max() > 0.3
    np.testing.assert_array_equal(slice_intensities(dark, volume_card), slice_intensities(dark, volume_card, crop=box))
    # no box yet (the coarse pass): the whole volume either way
    np.testing.assert_array_equal(slice_intensities(bright, crop_card), slice_intensities(bright, volume_card))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_bundled_segmenter_normalised_on_the_crop_segments_a_wide_held_out_stack(tmp_path):
    """Held-out seed 4 (a 424 x 447 mm field of view): with the whole volume's percentiles the
    bundled weights labelled most of its heart RV (RV 0.45, MYO 0.07, LV 0.26); with the card's
    crop rule every structure is found."""
    case = heldout_cardiac_case(4)
    bundled = load_model(BUNDLED_MODELS_DIR / "cardiac-unet.json", device="cpu")
    assert bundled.card.input.normalization.region == "crop"
    labels = segment_volume(case.image, bundled).labels.array
    truth = case.labels.array
    scores = [_dice(labels == v, truth == v) for v in (1, 2, 3)]
    assert min(scores) > 0.85, scores
    # the same weights with the card's rule switched back to the whole volume
    for name in ("cardiac-unet.pt", "cardiac-unet.json"):
        shutil.copy(BUNDLED_MODELS_DIR / name, tmp_path / name)
    card = json.loads((tmp_path / "cardiac-unet.json").read_text())
    del card["input"]["normalization"]["region"]
    (tmp_path / "cardiac-unet.json").write_text(json.dumps(card))
    whole = segment_volume(case.image, load_model(tmp_path / "cardiac-unet.json", device="cpu")).labels.array
    assert _dice(whole == 2, truth == 2) < scores[1] - 0.3
