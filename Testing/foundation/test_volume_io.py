"""Round trips of oblique, anisotropic volumes through every format; DICOM series checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from foundation_helpers import OBLIQUE, make_volume

from clinicalai.errors import InputError
from clinicalai.volume import Volume, list_dicom_series, read_volume, write_volume
from clinicalai.volume.dicom_writer import write_dicom_series


def assert_same_geometry(a: Volume, b: Volume, atol: float = 1e-6) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol, rtol=0)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol, rtol=0)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol, rtol=0)


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "v.nrrd"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_file_round_trip_is_exact(tmp_path, name, dtype):
    vol = make_volume(dtype)
    write_volume(vol, tmp_path / name)
    back = read_volume(tmp_path / name)
    assert_same_geometry(vol, back)
    assert back.array.dtype == vol.array.dtype
    assert np.array_equal(back.array, vol.array)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_seg_nrrd_keeps_segments(tmp_path):
    labels = np.zeros((7, 9, 11), np.uint8)
    labels[1:3, 2:5, 3:7] = 1
    labels[3:5, 4:7, 1:4] = 3
    vol = make_volume(np.uint8).with_array(labels)
    segments = [
        {"name": "left ventricle", "value": 3, "color": (0.9, 0.1, 0.2)},
        {"name": "myocardium", "value": 1, "color": (0.2, 0.7, 0.3)},
    ]
    write_volume(vol, tmp_path / "m.seg.nrrd", segments=segments)
    back = read_volume(tmp_path / "m.seg.nrrd")
    assert_same_geometry(vol, back)
    assert np.array_equal(back.array, labels)
    assert back.modality == "SEG"
    got = {s["value"]: s for s in back.metadata["segments"]}
    assert set(got) == {1, 3}
    assert got[3]["name"] == "left ventricle" and got[1]["name"] == "myocardium"
    np.testing.assert_allclose(got[3]["color"], (0.9, 0.1, 0.2), atol=1e-6)
    # a second write without explicit segments reuses the metadata read back
    write_volume(back, tmp_path / "again.seg.nrrd")
    again = read_volume(tmp_path / "again.seg.nrrd")
    assert [s["name"] for s in again.metadata["segments"]] == [s["name"] for s in back.metadata["segments"]]


def test_seg_nrrd_refuses_fractional_labels(tmp_path):
    with pytest.raises(InputError, match="integer labels"):
        write_volume(make_volume(np.float32), tmp_path / "bad.seg.nrrd")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16])
def test_dicom_round_trip_integer_exact(tmp_path, dtype):
    vol = make_volume(dtype, modality="MR")
    write_volume(vol, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    assert_same_geometry(vol, back)
    assert np.array_equal(back.array, vol.array)
    assert back.modality == "MR"
    # other tools see the same grid: SimpleITK's own series reader on our files
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "series")))
    assert_same_geometry(Volume.from_sitk(reader.Execute()), vol)


def test_dicom_round_trip_float_within_half_a_step(tmp_path):
    vol = make_volume(np.float32, modality="CT")
    write_volume(vol, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    assert_same_geometry(vol, back)
    step = (vol.array.max() - vol.array.min()) / 65534.0
    assert np.max(np.abs(back.array - vol.array)) <= 0.5 * step + 1e-6


def test_dicom_geometry_matches_simpleitk_series_reader(tmp_path):
    """A series written by SimpleITK itself (its DicomSeriesFromArray recipe, no ClinicalAI
    code) reads back with the geometry of SimpleITK's own ImageSeriesReader."""
    arr = np.random.default_rng(1).integers(0, 2000, size=(6, 10, 12)).astype(np.int16)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.8, 1.1, 2.7))
    image.SetOrigin((10.0, -20.5, 33.0))
    image.SetDirection(tuple(OBLIQUE.reshape(-1)))
    folder = tmp_path / "sitk"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    series_tags = {
        "0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
        "0008|103e": "written by SimpleITK",
        "0020|0037": "\\".join(map(str, (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7]))),
    }
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        for tag, value in series_tags.items():
            s.SetMetaData(tag, value)
        s.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        s.SetMetaData("0020|0013", str(k))
        s.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.3.{k}")
        writer.SetFileName(str(folder / f"{k}.dcm"))
        writer.Execute(s)
    reference = sitk.ImageSeriesReader()
    reference.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    ref = reference.Execute()
    ours = read_volume(folder)
    assert_same_geometry(ours, Volume.from_sitk(ref))
    np.testing.assert_allclose(ours.spacing, (0.8, 1.1, 2.7), atol=1e-6)
    np.testing.assert_allclose(ours.direction, OBLIQUE, atol=1e-6)
    assert np.array_equal(ours.array, sitk.GetArrayFromImage(ref))
    assert ours.metadata["dicom"]["SeriesDescription"] == "written by SimpleITK"


def _two_series_folder(tmp_path: Path) -> tuple[Path, list]:
    a = make_volume(np.int16, shape=(4, 6, 7), modality="MR", seed=1)
    b = make_volume(np.uint8, shape=(5, 6, 7), modality="CT", seed=2)
    write_dicom_series(a, tmp_path / "a", series_description="T1 axial")
    write_dicom_series(b, tmp_path / "b", series_description="CT bone")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for sub in ("a", "b"):
        for f in (tmp_path / sub).iterdir():
            shutil.copy(f, mixed / f"{sub}_{f.name}")
    return mixed, [a, b]


def test_two_series_error_lists_both_and_pick_by_uid(tmp_path):
    mixed, (a, b) = _two_series_folder(tmp_path)
    series = list_dicom_series(mixed)
    assert len(series) == 2
    with pytest.raises(InputError) as info:
        read_volume(mixed)
    msg = str(info.value)
    assert "\n" not in msg
    for s in series:
        assert s["uid"] in msg
    assert "T1 axial" in msg and "CT bone" in msg
    by_desc = {s["description"]: s["uid"] for s in series}
    got = read_volume(mixed, series_uid=by_desc["CT bone"])
    assert got.shape == b.shape and np.array_equal(got.array, b.array)
    assert_same_geometry(got, b)
    with pytest.raises(InputError, match="no DICOM series with SeriesInstanceUID"):
        read_volume(mixed, series_uid="1.2.3.4")


def _series(tmp_path: Path, name: str = "s", n: int = 6) -> tuple[Path, list]:
    vol = make_volume(np.int16, shape=(n, 5, 6), modality="MR")
    folder = write_dicom_series(vol, tmp_path / name)
    return folder, sorted(folder.iterdir())


def test_missing_slice_is_a_clear_error(tmp_path):
    folder, files = _series(tmp_path)
    files[2].unlink()
    with pytest.raises(InputError, match=r"1 missing slice"):
        read_volume(folder)


def test_uneven_spacing_is_a_clear_error(tmp_path):
    folder, files = _series(tmp_path)
    ds = pydicom.dcmread(files[3])
    normal = np.cross(np.asarray(ds.ImageOrientationPatient[:3], float), np.asarray(ds.ImageOrientationPatient[3:], float))
    ds.ImagePositionPatient = [float(p) + 0.4 * float(n) for p, n in zip(ds.ImagePositionPatient, normal)]
    ds.save_as(files[3])
    with pytest.raises(InputError, match="uneven slice spacing"):
        read_volume(folder)


def test_duplicate_slice_is_a_clear_error(tmp_path):
    folder, files = _series(tmp_path)
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(folder / "copy.dcm")
    with pytest.raises(InputError, match="same position"):
        read_volume(folder)


def test_pet_series_tags_are_read(tmp_path):
    vol = make_volume(np.uint16, modality="PT")
    write_dicom_series(vol, tmp_path / "pet", extra_tags={"0054|1001": "BQML", "0010|1030": "72.5"})
    back = read_volume(tmp_path / "pet")
    assert back.modality == "PT" and back.units == "BQML"
    assert back.metadata["pet"]["Units"] == "BQML"
    assert back.metadata["pet"]["PatientWeight"] == pytest.approx(72.5)


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("notes.txt", b"hello", "unsupported image type"),
        ("broken.nii.gz", b"not a nifti file at all", "cannot be read as an image"),
        ("missing.nrrd", None, "no such file"),
    ],
)
def test_bad_files_are_input_errors(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(InputError, match=match):
        read_volume(p)


def test_folder_without_dicom_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path / "empty")


def test_four_d_and_two_d_images(tmp_path):
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))] * 3), str(tmp_path / "t.nii.gz"))
    with pytest.raises(InputError, match="4D image with 3 time points"):
        read_volume(tmp_path / "t.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 6), np.float32)), str(tmp_path / "flat.nrrd"))
    flat = read_volume(tmp_path / "flat.nrrd")
    with pytest.raises(InputError, match="2D image"):
        flat.require_volumetric()


def test_write_failure_leaves_nothing(tmp_path):
    vol = make_volume(np.int32).with_array(np.full((7, 9, 11), 2**20, np.int32))
    with pytest.raises(InputError):
        write_volume(vol, tmp_path / "too_big")  # DICOM: 16-bit only
    assert not any(tmp_path.iterdir())



def test_one_file_of_a_series_reads_its_own_series(tmp_path):
    mixed, (a, b) = _two_series_folder(tmp_path)
    one_of_b = sorted(mixed.glob("b_*.dcm"))[0]
    got = read_volume(one_of_b)
    assert np.array_equal(got.array, b.array)
    (tmp_path / "fake.dcm").write_text("not dicom")
    with pytest.raises(InputError, match="not a readable DICOM file"):
        read_volume(tmp_path / "fake.dcm")


def test_multi_layer_segmentation_is_refused_clearly(tmp_path):
    layers = sitk.GetImageFromArray(np.zeros((4, 5, 6, 2), np.uint8), isVector=True)
    sitk.WriteImage(layers, str(tmp_path / "overlap.seg.nrrd"))
    with pytest.raises(InputError, match="2 layers"):
        read_volume(tmp_path / "overlap.seg.nrrd")


def test_dicom_series_never_replaces_a_folder_holding_other_files(tmp_path):
    """A series folder is replaced as a whole; a folder given by mistake (a project folder)
    is refused and left untouched."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("precious")
    (project / "scans").mkdir()
    vol = make_volume(np.int16, modality="MR")
    with pytest.raises(InputError, match="holds files other than a DICOM series"):
        write_volume(vol, project)
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt", "scans"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        write_volume(vol, tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"
    # an earlier series (only .dcm files) is replaced by the new one
    write_volume(make_volume(np.int16, shape=(4, 9, 11), modality="MR", seed=3), tmp_path / "series")
    write_volume(vol, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    assert back.shape == vol.shape and np.array_equal(back.array, vol.array)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
