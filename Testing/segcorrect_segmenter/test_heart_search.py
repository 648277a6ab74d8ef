"""Where the fine pass is cropped: when the coarse pass's largest component is not the heart,
the fine pass on that crop finds nothing of it, and the next component is tried
(docs/heldout.md, "Where is the heart")."""

import numpy as np

from clinicalai.models import BUNDLED_MODELS_DIR, load_model
from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case
from clinicalai.segcorrect.outputs import CONFIRMED_FRACTION, crop_confirmed, unconfirmed_heart_warning
from clinicalai.segcorrect.pipeline import run_segcorrect
from clinicalai.segcorrect.preprocess import frame_for_volume, frame_from_mask, to_network
from clinicalai.segcorrect.segmenter import (
    MAX_HEART_CANDIDATES,
    _heart_candidates,
    _predict_probs,
    find_heart,
    segment_volume,
    slice_intensities,
)
from clinicalai.volume import Volume


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _bundled():
    return load_model(BUNDLED_MODELS_DIR / "cardiac-unet.json", device="cpu")


def test_candidates_are_coarse_components_largest_first_without_specks():
    shape = (4, 128, 128)
    frame = frame_for_volume(shape, spacing=(1.0, 1.0, 5.0))
    assert (frame.height, frame.width) == (128, 128)  # network space is the image here
    probs = np.zeros((4, 4, 128, 128), np.float32)
    probs[:, 0] = 1.0
    blobs = {"heart": ((slice(0, 4), slice(10, 40), slice(10, 40)), 3),  # 3600 voxels
             "vessel": ((slice(0, 4), slice(70, 90), slice(70, 90)), 2),  # 1600
             "rib": ((slice(1, 3), slice(100, 120), slice(10, 30)), 1),  # 800
             "speck": ((slice(2, 3), slice(60, 64), slice(110, 114)), 1),  # 16: under a tenth
             "crumb": ((slice(0, 1), slice(120, 122), slice(120, 122)), 2)}  # 4
    for (zs, ys, xs), label in blobs.values():
        probs[zs, 0, ys, xs] = 0.0
        probs[zs, label, ys, xs] = 1.0
    candidates = _heart_candidates(probs, frame, shape)
    assert [int(c.sum()) for c in candidates] == [3600, 1600, 800][:MAX_HEART_CANDIDATES]
    assert candidates[0][0, 20, 20] and candidates[1][0, 80, 80]
    probs[:, 0], probs[:, 1:] = 1.0, 0.0
    assert _heart_candidates(probs, frame, shape) == []


def test_a_crop_the_fine_pass_does_not_confirm_gives_way_to_the_heart():
    """The bundled segmenter's own fine pass, on a crop set on a block of tissue away from the
    heart and on one set on the heart: the first finds (almost) none of its block, so the
    heart's crop is run and chosen, and the result segments the heart."""
    model = _bundled()
    case = heldout_cardiac_case(100)
    image, truth = case.image, case.labels.array
    heart = truth > 0
    ny, nx = image.shape[1:]
    ys, xs = np.nonzero(heart.any(0))
    # a block as tall and wide as the heart, in the in-plane quadrant farthest from it
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    y0 = 0 if ys.mean() > ny / 2 else ny - h
    x0 = 0 if xs.mean() > nx / 2 else nx - w
    decoy = np.zeros_like(heart)
    decoy[heart.any((1, 2)), y0:y0 + h, x0:x0 + w] = True
    assert not (decoy & heart).any()

    def fine_pass(k, candidate):
        crop = frame_from_mask(candidate, image.spacing, out_size=tuple(model.card.input.size))
        x = to_network(slice_intensities(image.array, model.card, crop=crop), crop, "image", normalize=False)[:, None]
        return crop, _predict_probs(model, x, 4, 16, None, None)

    found, search = find_heart([decoy, heart], fine_pass)
    assert len(search) == 2
    assert search[0]["confirmed"] < 0.1 and not search[0]["chosen"]
    assert search[1]["confirmed"] >= CONFIRMED_FRACTION and search[1]["chosen"]
    crop, probs = found
    assert crop == frame_from_mask(heart, image.spacing, out_size=tuple(model.card.input.size))
    # the heart first: one pass, nothing more tried
    found_first, search_first = find_heart([heart, decoy], fine_pass)
    assert len(search_first) == 1 and search_first[0]["chosen"]
    assert np.array_equal(found_first[1], probs)
    assert find_heart([], fine_pass) == (None, [])


def test_a_confirmed_crop_wins_over_a_larger_unconfirmed_one():
    """The rule itself, with a fine pass that labels a fixed mask (network space = the image):
    a wide candidate holding the heart and more gets more voxels labelled in all (8600) but only
    a fifth of itself; the heart's own candidate, tried next, is confirmed and chosen."""
    shape = (4, 128, 128)
    frame = frame_for_volume(shape, spacing=(1.0, 1.0, 5.0))
    fine_labels = np.zeros(shape, np.uint8)
    fine_labels[:, 20:50, 20:50] = 2  # the heart, 3600 voxels
    fine_labels[:, 60:85, 20:70] = 1  # something else the fine pass also labels, 5000 voxels
    probs = np.moveaxis(np.eye(4, dtype=np.float32)[fine_labels], -1, 1)  # (z, C, y, x) one-hot
    wide = np.zeros(shape, bool)
    wide[:, :100, :] = True
    heart = fine_labels == 2
    passes = []

    def fine_pass(k, candidate):
        passes.append(k)
        return frame, probs

    found, search = find_heart([wide, heart], fine_pass)
    assert passes == [0, 1]
    assert search[0]["confirmed"] < CONFIRMED_FRACTION < search[1]["confirmed"]
    assert search[0]["voxels"] * search[0]["confirmed"] > search[1]["voxels"]  # more voxels in all ...
    assert [t["chosen"] for t in search] == [False, True]  # ... yet the confirmed crop wins
    # nothing confirmed: the crop that labels the most of its candidate
    strip = np.zeros(shape, bool)
    strip[:, :, :10] = True  # labelled nowhere
    found, search = find_heart([wide, strip], fine_pass)
    assert [t["chosen"] for t in search] == [True, False]
    # ... and, given the voxel volume, the largest part of what its fine pass found is tried
    # once more when it could be a heart (5000 voxels of 4 uL: 20 mL), not when it is a speck
    found, search = find_heart([wide, strip], fine_pass, voxel_ml=0.004)
    assert len(search) == 3 and search[2]["refined"] and search[2]["voxels"] == 5000
    assert search[2]["chosen"] and search[2]["confirmed"] == 1.0
    _, search = find_heart([wide, strip], fine_pass, voxel_ml=0.001)  # 5 mL: not tried
    assert len(search) == 2 and search[0]["chosen"]


def test_a_very_wide_field_of_view_is_cropped_again_on_the_fine_pass():
    """Held-out seed 101 inside a field of view three times as wide (665 mm), the rest noise at
    the level of its edges: the coarse pass labels a component ten times the heart, its fine pass
    confirms a tenth of it but finds the heart, and the crop set on that is confirmed."""
    model = _bundled()
    case = heldout_cardiac_case(101)
    a, truth = case.image.array, case.labels.array
    z, ny, nx = a.shape
    rng = np.random.default_rng(0)
    edge = np.concatenate([a[:, :4].ravel(), a[:, -4:].ravel()])
    wide = rng.normal(edge.mean(), edge.std(), (z, 3 * ny, 3 * nx)).astype(a.dtype)
    wide[:, ny:2 * ny, nx:2 * nx] = a
    wide_truth = np.zeros(wide.shape, truth.dtype)
    wide_truth[:, ny:2 * ny, nx:2 * nx] = truth
    image = Volume(wide, spacing=case.image.spacing, origin=case.image.origin, direction=case.image.direction)
    seg = segment_volume(image, model)
    first, last = seg.heart_search[0], seg.heart_search[-1]
    assert first["confirmed"] < CONFIRMED_FRACTION and not first["chosen"]
    assert last.get("refined") and last["chosen"] and last["confirmed"] >= CONFIRMED_FRACTION
    scores = [_dice(seg.labels.array == v, wide_truth == v) for v in (1, 2, 3)]
    assert min(scores) > 0.9, scores
    assert not any("confirm" in w for w in run_segcorrect(image, model, None).warnings)


def test_a_plain_stack_runs_one_confirmed_fine_pass_and_reports_it():
    model = _bundled()
    case = heldout_cardiac_case(101)
    seg = segment_volume(case.image, model)
    assert len(seg.heart_search) == 1
    (only,) = seg.heart_search
    assert only["chosen"] and only["confirmed"] >= CONFIRMED_FRACTION and only["voxels"] > 1000
    scores = [_dice(seg.labels.array == v, case.labels.array == v) for v in (1, 2, 3)]
    assert min(scores) > 0.8, scores
    result = run_segcorrect(case.image, model, None)
    assert result.to_dict()["segmentation"]["heart_search"] == seg.heart_search
    assert not any("confirm" in w for w in result.warnings)
    assert segment_volume(case.image, model, two_pass=False).heart_search == []


def test_a_search_that_confirms_nothing_warns_the_user():
    tries = [{"voxels": 2000, "found": 40, "confirmed": 0.02, "chosen": False},
             {"voxels": 900, "found": 279, "confirmed": 0.31, "chosen": True}]
    sentence = unconfirmed_heart_warning(tries)
    assert sentence is not None and "31%" in sentence and "2 place(s)" in sentence
    assert unconfirmed_heart_warning(tries + [{"voxels": 500, "found": 250, "confirmed": CONFIRMED_FRACTION,
                                               "chosen": False}]) is None
    assert unconfirmed_heart_warning([]) is None
    # the warning decides on exact counts, as the search does: 12500 of 25001 voxels is under
    # one half although its rounded fraction reads 0.5
    edge = {"voxels": 25001, "found": 12500, "confirmed": round(12500 / 25001, 4), "chosen": True}
    assert edge["confirmed"] == CONFIRMED_FRACTION and not crop_confirmed(12500, 25001)
    assert unconfirmed_heart_warning([edge]) is not None
