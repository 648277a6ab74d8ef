"""Volume nodes <-> Volume: RAS geometry of oblique anisotropic volumes, Slicer's own readers."""

import numpy as np
import pytest

from clinicalai.errors import InputError
from clinicalai.mrml.volumes import add_volume_node, load_volume_file, node_to_volume, numpy_matrix, vtk_matrix
from clinicalai.volume import read_volume, write_volume


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_round_trip_keeps_voxels_and_geometry(ctx, oblique_volume, dtype):
    vol = oblique_volume.with_array((oblique_volume.array * 10).astype(dtype))
    node = add_volume_node(ctx.scene, vol, "oblique")
    back = node_to_volume(node)
    assert back.same_grid(vol, atol=1e-9)
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.modality == "MR"


def test_node_ras_matches_itk_physical_points(ctx, oblique_volume):
    """Independent check of the flip: SimpleITK's LPS point of a voxel, negated in x and y,
    is where Slicer's IJKToRAS puts that voxel."""
    node = add_volume_node(ctx.scene, oblique_volume, "oblique")
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    ijk_to_ras = numpy_matrix(m)
    image = oblique_volume.to_sitk()
    for ijk in [(0, 0, 0), (10, 8, 6), (3, 1, 5)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = (ijk_to_ras @ np.array([*ijk, 1.0]))[:3]
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-9)


@pytest.mark.parametrize("name", ["case.nii.gz", "case.nrrd", "dicom_series"])
def test_slicer_reader_gives_the_same_volume_as_read_volume(ctx, oblique_volume, tmp_path, name):
    vol = oblique_volume.with_array((oblique_volume.array * 100).astype(np.int16))  # DICOM holds integers
    path = write_volume(vol, tmp_path / name)
    ours = read_volume(path)
    node = load_volume_file(ctx, str(path))
    theirs = node_to_volume(node)
    assert theirs.same_grid(ours, atol=1e-4)  # DICOM stores positions as decimal strings
    assert theirs.same_grid(vol, atol=1e-4)
    np.testing.assert_array_equal(theirs.array, ours.array)
    assert "source" in theirs.metadata


def test_a_nifti2_file_slicer_cannot_read_loads_through_the_engine(ctx, oblique_volume, tmp_path):
    """Slicer's reader (ITK's NIfTI-1 IO) refuses NIfTI-2; the node is built from the engine's
    reader instead, on the same oblique anisotropic grid, as an image or as a label map."""
    import nibabel as nib

    labels = oblique_volume.with_array((oblique_volume.array > oblique_volume.array.mean()).astype(np.uint8))
    for vol, labelmap in ((oblique_volume.with_array(oblique_volume.array.astype(np.float32)), False), (labels, True)):
        path = tmp_path / f"two{int(labelmap)}.nii.gz"
        nib.save(nib.Nifti2Image(vol.array.transpose(2, 1, 0), np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.index_to_lps()), path)
        node = load_volume_file(ctx, str(path), labelmap=labelmap)
        assert node.IsA("vtkMRMLLabelMapVolumeNode") == labelmap
        back = node_to_volume(node)
        assert back.same_grid(vol, atol=1e-5)
        np.testing.assert_array_equal(back.array, vol.array)


def test_a_nifti_read_by_slicer_with_its_qform_carries_the_two_geometries_warning(ctx, oblique_volume, tmp_path):
    """Slicer's reader takes the scanner qform of a registered NIfTI (aligned sform); the node
    says what the engine's reader says, so the panels warn as the command line does."""
    import nibabel as nib

    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ oblique_volume.index_to_lps()
    moved = ras.copy()
    moved[:3, 3] += [3.0, 0.0, 4.0]
    image = nib.Nifti1Image(oblique_volume.array.transpose(2, 1, 0).astype(np.float32), None)
    image.set_qform(ras, 1)
    image.set_sform(moved, 2)
    path = tmp_path / "registered.nii.gz"
    image.to_filename(path)
    back = node_to_volume(load_volume_file(ctx, str(path)))
    assert back.same_grid(oblique_volume, atol=1e-4)  # the qform, as the engine reads it
    [warning] = back.metadata["warnings"]
    assert warning == read_volume(path).metadata["warnings"][0] and "5.0 mm apart" in warning


def test_linear_parent_transform_moves_the_volume(ctx, oblique_volume):
    node = add_volume_node(ctx.scene, oblique_volume, "moved")
    transform = ctx.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = np.eye(4)
    shift[:3, 3] = (5.0, -2.0, 7.0)  # RAS millimetres
    transform.SetMatrixTransformToParent(vtk_matrix(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = node_to_volume(node)
    np.testing.assert_allclose(np.array(moved.origin) - oblique_volume.origin, (-5.0, 2.0, 7.0), atol=1e-9)
    np.testing.assert_allclose(moved.direction, oblique_volume.direction, atol=1e-12)


def test_bad_nodes_give_clear_errors(ctx, tmp_path):
    with pytest.raises(InputError, match="no input volume"):
        node_to_volume(None)
    empty = ctx.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="no voxel data"):
        node_to_volume(empty)
    bad = tmp_path / "bad.nrrd"
    bad.write_text("not an image")
    with pytest.raises(InputError):
        load_volume_file(ctx, str(bad))
