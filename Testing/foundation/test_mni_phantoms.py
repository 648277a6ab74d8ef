"""The held-out brain phantom family on the MNI152 template (clinicalai.phantoms.mni)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("nilearn")

from clinicalai.phantoms.brain import BrainCase  # noqa: E402
from clinicalai.phantoms.mni import load_template, mni_brain_case, mni_pet_case, random_oblique  # noqa: E402
from clinicalai.phantoms.pet import PetCase  # noqa: E402

#: coarse grids keep every case well under a second
MR_SPACING = (3.0, 3.0, 5.0)
PET_SPACING = (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def oblique():
    return random_oblique(np.random.default_rng(3), 25.0)


def test_templates_load_offline(monkeypatch):
    """nilearn's MNI152 templates come from its wheel: no network, no data folder needed."""
    import socket

    from nilearn import datasets

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    for load in (datasets.load_mni152_template, datasets.load_mni152_gm_template,
                 datasets.load_mni152_wm_template, datasets.load_mni152_brain_mask):
        img = load(resolution=2)
        assert img.shape[:3] == (99, 117, 95) and float(img.get_fdata().max()) > 0.5
    tpl = load_template()
    brain_ml = float((tpl.brain >= 0.5).sum()) * np.prod(tpl.spacing) / 1000
    assert 1200 < brain_ml < 2300
    # MNI coordinates survive the RAS -> LPS conversion: the right caudate head (RAS 12, 12, 9) is grey matter
    ijk = np.linalg.solve(tpl.direction @ np.diag(tpl.spacing), np.array([-12.0, -12.0, 9.0]) - tpl.origin)
    k, j, i = np.round(ijk[::-1]).astype(int)
    assert tpl.gm[k, j, i] > 0.8


def test_same_seed_same_case():
    a, b = mni_brain_case(7, spacing=MR_SPACING), mni_brain_case(7, spacing=MR_SPACING)
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.lesion.array, b.lesion.array)
    p, q = mni_pet_case(7, spacing=PET_SPACING), mni_pet_case(7, spacing=PET_SPACING)
    np.testing.assert_array_equal(p.image.array, q.image.array)
    assert p.image.metadata["pet"] == q.image.metadata["pet"]
    assert not np.array_equal(mni_brain_case(8, spacing=MR_SPACING).image.array, a.image.array)


def test_geometry_is_exact_on_image_and_masks(oblique):
    mr = mni_brain_case(1, spacing=(2.5, 2.5, 6.0), direction=oblique, pathological=True)
    pet = mni_pet_case(1, spacing=(3.0, 3.0, 3.5), direction=oblique)
    assert isinstance(mr, BrainCase) and isinstance(pet, PetCase)
    for case_vols in ((mr.image, mr.lesion, mr.brain_mask, mr.tissues), (pet.image, pet.suv, pet.lesion, pet.brain_mask)):
        first = case_vols[0]
        np.testing.assert_allclose(first.direction, oblique, atol=1e-12)
        for v in case_vols[1:]:
            assert v.same_grid(first, atol=0.0)
    np.testing.assert_allclose(mr.image.spacing, (2.5, 2.5, 6.0))
    np.testing.assert_allclose(pet.image.spacing, (3.0, 3.0, 3.5))
    # the grid is centred on the head whatever the direction: the brain lies inside, off the borders
    for v in (mr.brain_mask, pet.brain_mask):
        a = v.array
        assert 900 < a.sum() * np.prod(v.spacing) / 1000 < 2500
        assert not a[0].any() and not a[-1].any()


def test_random_grids_cover_the_documented_range():
    spacings = [mni_brain_case(s, spacing=None).image.spacing for s in range(6)]
    assert all(1.0 <= sp[0] <= 2.0 and 1.0 <= sp[2] <= 7.0 for sp in spacings)
    assert max(sp[2] for sp in spacings) > 3.0


@pytest.mark.parametrize("seed", range(4))
def test_lesions_lie_in_the_brain_and_healthy_cases_have_none(seed):
    sick = mni_brain_case(seed, spacing=MR_SPACING, pathological=True)
    les, brain = sick.lesion.array > 0, sick.brain_mask.array > 0
    assert les.any() and np.all(brain[les])
    wm = sick.tissues.array == 3
    assert (wm | ndimage.binary_dilation(wm, iterations=1))[les].mean() > 0.5  # white matter, mostly
    healthy = mni_brain_case(seed, spacing=MR_SPACING, pathological=False)
    assert not healthy.pathological and not healthy.lesion.array.any()
    for kind in ("normal", "asymmetric"):
        assert not mni_pet_case(seed, recurrence=False, kind=kind, spacing=PET_SPACING).lesion.array.any()
    rec = mni_pet_case(seed, recurrence=True, spacing=PET_SPACING)
    assert rec.label == 1 and rec.lesion.array.any() and np.all(rec.brain_mask.array[rec.lesion.array > 0] > 0)


def test_lesion_contrast_follows_the_sequence():
    for contrast, brighter in (("FLAIR", True), ("T1", False)):
        c = mni_brain_case(11, spacing=(2.0, 2.0, 3.0), pathological=True, contrast=contrast, n_lesions=2,
                           lesion_radius_mm=(8.0, 10.0))
        img = c.image.array
        core = ndimage.binary_erosion(c.lesion.array > 0)
        wm = ndimage.binary_erosion(c.tissues.array == 3) & (c.lesion.array == 0)
        assert (np.median(img[core]) > np.median(img[wm])) == brighter, contrast


def test_pet_striatum_brighter_than_cortex_and_suv_tags_convert():
    from clinicalai.pet.suv import to_suv
    from clinicalai.phantoms.mni import _striata

    case = mni_pet_case(2, recurrence=False, kind="normal", spacing=(2.0, 2.0, 2.0), direction=np.eye(3))
    suv, conversion = to_suv(case.image)
    np.testing.assert_allclose(suv.array, case.suv.array, rtol=2e-3, atol=1e-3)
    brain = case.brain_mask.array > 0
    assert 0.6 < np.median(suv.array[brain]) < 1.6 and 1.5 < suv.array.max() < 6.0
    # striatum vs cortex, measured in MNI space: where the template's striatum model is (no deformation at the centre)
    from clinicalai.volume import Volume, resample_to_grid

    tpl = load_template()
    right, left = _striata()
    striatum = resample_to_grid(tpl.volume(np.maximum(right, left)), case.suv.grid).array > 0.7
    cortex = resample_to_grid(tpl.volume(tpl.gm), case.suv.grid).array > 0.7
    cortex &= ~ndimage.binary_dilation(striatum, iterations=6)
    assert isinstance(case.suv, Volume) and striatum.sum() > 50
    assert np.mean(suv.array[striatum]) > 1.4 * np.mean(suv.array[cortex])


def test_pet_kinds_and_labels():
    kinds = [mni_pet_case(s, spacing=PET_SPACING).info["kind"] for s in range(12)]
    assert {"recurrence"} < set(kinds)
    asym = mni_pet_case(5, recurrence=False, kind="asymmetric", spacing=PET_SPACING)
    assert asym.label == 0 and 0.55 <= asym.info["striatal_asymmetry"] <= 0.85
    with pytest.raises(ValueError):
        mni_pet_case(0, recurrence=True, kind="trc")


def test_training_and_heldout_streams_never_give_the_same_case():
    """A trainer draws from the "train" stream, the evaluations from "heldout": no seed pair of
    the two gives the same random stream, and the held-out cases are those of the first release."""
    from clinicalai.phantoms.mni import MNI_SEED_TAG, STREAMS, case_rng

    assert len(set(STREAMS.values())) == len(STREAMS)  # one number per (modality, stream)
    seeds = range(200)
    for modality in ("MR", "PET"):
        train = {tuple(case_rng(modality, "train", s).integers(0, 2 ** 62, 2)) for s in seeds}
        heldout = {tuple(case_rng(modality, "heldout", s).integers(0, 2 ** 62, 2)) for s in seeds}
        assert len(train) == len(heldout) == len(seeds) and not train & heldout
        # the held-out stream is the one docs/heldout.md measured: default_rng([tag, 1 or 2, seed])
        first = np.random.default_rng([MNI_SEED_TAG, 1 if modality == "MR" else 2, 5]).random(3)
        np.testing.assert_array_equal(case_rng(modality, "heldout", 5).random(3), first)
    held, default = mni_brain_case(3, spacing=MR_SPACING, stream="heldout"), mni_brain_case(3, spacing=MR_SPACING)
    np.testing.assert_array_equal(held.image.array, default.image.array)
    trained = mni_brain_case(3, spacing=MR_SPACING, stream="train")
    assert trained.image.metadata["phantom"]["stream"] == "train"
    assert default.image.metadata["phantom"]["stream"] == "heldout"
    assert not np.array_equal(trained.image.array, held.image.array)
    assert mni_pet_case(3, spacing=PET_SPACING, stream="train").info["stream"] == "train"
    for bad in (dict(stream="test"), dict(stream="train", seed=-1)):
        with pytest.raises(ValueError):
            case_rng("MR", bad["stream"], bad.get("seed", 0))
