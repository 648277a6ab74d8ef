"""Preprocessing: sizes, axis order, brain mask, and maps going back onto an oblique,
anisotropic PET grid exactly."""

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from clinicalai.errors import InputError
from clinicalai.pet.preprocess import DEMO_SIZE_XYZ, DEMO_SPACING_MM, compute_brain_mask, preprocess_pet
from clinicalai.phantoms.pet import pet_case
from clinicalai.volume import Volume

OBLIQUE = Rotation.from_euler("xyz", [12, -9, 20], degrees=True).as_matrix()


@pytest.fixture(scope="module")
def oblique_case():
    return pet_case(21, recurrence=True, scanner="A", direction=OBLIQUE, spacing=(1.8, 2.4, 3.2), shape=(46, 84, 100))


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_full_size_input_axis_order_and_range(oblique_case):
    pp = preprocess_pet(oblique_case.image)
    assert pp.input.shape == (1, 128, 128, 82)  # (C, X, Y, Z)
    assert pp.input.dtype == np.float32 and pp.input.min() == 0.0 and pp.input.max() == 1.0
    assert pp.net_suv.shape == (82, 128, 128) and pp.net_suv.spacing == (2.0, 2.0, 2.0)
    # the network array is the transposed Volume array: X along the grid's i axis (~ patient left)
    np.testing.assert_allclose(pp.input[0], (pp.net_suv.array.transpose(2, 1, 0) - pp.minmax[0]) / np.ptp(pp.minmax), atol=1e-6)
    assert abs(pp.net_suv.direction[0, 0]) > 0.9  # i axis ~ L after reorientation
    # brain centred: the mask centroid is the box centre within a voxel
    c = np.array(ndimage.center_of_mass(pp.net_brain_mask.array))
    assert np.all(np.abs(c - (np.array(pp.net_brain_mask.shape) - 1) / 2) <= 1.0)


def test_map_in_network_space_lands_on_the_original_grid_where_it_was(oblique_case):
    pet = oblique_case.image
    pp = preprocess_pet(pet, spacing_mm=DEMO_SPACING_MM, size_xyz=DEMO_SIZE_XYZ)
    assert pp.input.shape == (1, 32, 32, 21)
    # hot spot: the lesion centroid, in LPS mm, placed in network space as a small cube
    kz, jy, ix = ndimage.center_of_mass(oblique_case.lesion.array > 0)
    p = pet.index_to_lps() @ np.array([ix, jy, kz, 1.0])
    ijk = (np.linalg.inv(pp.net_suv.index_to_lps()) @ p)[:3]
    heat = np.zeros(pp.input.shape[1:], np.float32)
    i, j, k = np.round(ijk).astype(int)
    heat[i - 1:i + 2, j - 1:j + 2, k - 1:k + 2] = 1.0
    back = pp.to_input_grid(heat)
    assert back.same_grid(pet, atol=1e-9)  # the exact input grid, oblique and anisotropic
    assert back.shape == pet.shape
    com = ndimage.center_of_mass(back.array)
    q = pet.index_to_lps() @ np.array([com[2], com[1], com[0], 1.0])
    # within one network voxel (8 mm) of where it was
    assert np.linalg.norm(q[:3] - p[:3]) < 8.0
    # and the brain mask on the original grid matches the truth
    assert _dice(pp.brain_mask.array > 0, oblique_case.brain_mask.array > 0) > 0.85


def test_computed_and_given_brain_masks():
    case = pet_case(22, scanner="B")
    from clinicalai.pet.suv import to_suv

    suv, _ = to_suv(case.image)
    mask = compute_brain_mask(suv)
    assert _dice(mask.array > 0, case.brain_mask.array > 0) > 0.85
    pp = preprocess_pet(case.image, brain_mask=case.brain_mask, spacing_mm=DEMO_SPACING_MM, size_xyz=DEMO_SIZE_XYZ)
    assert pp.brain_mask_source == "given"
    assert np.array_equal(pp.brain_mask.array > 0, case.brain_mask.array > 0)


def test_clear_errors_for_unusable_images():
    case = pet_case(23)
    flat = Volume(case.image.array[40:41], modality="PT", units="BQML", metadata=case.image.metadata)
    with pytest.raises(InputError, match="2D"):
        preprocess_pet(flat)
    nan = case.image.with_array(np.where(case.image.array > 3000, np.nan, case.image.array))
    with pytest.raises(InputError, match="NaN"):
        preprocess_pet(nan)
    no_units = Volume(case.image.array)
    with pytest.raises(InputError, match="--units"):
        preprocess_pet(no_units)
    empty = np.zeros_like(case.brain_mask.array)
    with pytest.raises(InputError, match="empty"):
        preprocess_pet(case.image, brain_mask=case.brain_mask.with_array(empty))


def test_the_brain_mask_on_the_pet_grid_does_not_hang_on_float_noise_in_the_spacing():
    # 42 voxels of 4.8 mm under the 8 mm network grid (25 voxels, centred): every fifth plane
    # of PET voxels lies midway between two network voxels. A DICOM series and its NIfTI differ
    # in the spacing's last float digits; the mask mapped back, and so TBR, must not
    case = pet_case(3, recurrence=True, scanner="A", spacing=(4.8, 4.8, 5.0), shape=(46, 52, 42))
    suv = case.suv

    def mask(scale):
        v = suv.with_array(suv.array)
        v.spacing = tuple(s * scale for s in suv.spacing)
        return preprocess_pet(v, units="suv", spacing_mm=DEMO_SPACING_MM, size_xyz=DEMO_SIZE_XYZ).brain_mask.array

    exact = mask(1.0)
    assert exact.sum() > 1000
    for scale in (1 - 2e-7, 1 + 2e-7):
        np.testing.assert_array_equal(mask(scale), exact)
