"""Files as scanners and other tools write them: rounded DICOM positions, cine files, cut-off
and corrupt files, NRRD headers pointing elsewhere, declared sizes that would blow memory.

Every file here is written by real writers (SimpleITK, pydicom, nibabel headers, gzip) and
then damaged the way files get damaged (cut off in a copy, rounded by a scanner, edited by
hand); nothing is mocked.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from foundation_helpers import OBLIQUE, make_volume
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from clinicalai.cli import main
from clinicalai.errors import InputError
from clinicalai.volume import Volume, read_volume, write_volume
from clinicalai.volume.dicom_checks import check_not_time_series
from clinicalai.volume.dicom_writer import write_dicom_series
from clinicalai.volume.integrity import MAX_VOXEL_BYTES_ENV, check_image_file

# ------------------------------------------------------------------------------ DICOM helpers


def _oblique_series(tmp_path: Path, n: int = 12, thickness: float = 7.0, name: str = "series") -> list[Path]:
    """A complete oblique MR series, ``thickness`` mm apart, one file per slice (sorted by position)."""
    arr = np.random.default_rng(4).integers(0, 1500, size=(n, 16, 18)).astype(np.int16)
    vol = Volume(arr, spacing=(1.25, 1.25, thickness), origin=(-31.27, 12.84, 40.51), direction=OBLIQUE, modality="MR")
    folder = write_dicom_series(vol, tmp_path / name)
    files = sorted(folder.iterdir())
    return sorted(files, key=lambda f: float(np.dot(_normal(f), pydicom.dcmread(f).ImagePositionPatient)))


def _normal(f: Path) -> np.ndarray:
    iop = np.asarray(pydicom.dcmread(f, stop_before_pixels=True).ImageOrientationPatient, float)
    return np.cross(iop[:3], iop[3:])


def _edit(f: Path, **tags) -> None:
    ds = pydicom.dcmread(f)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(f)


def _round_positions(files: list[Path], step_mm: float = 0.1) -> None:
    """Round ImagePositionPatient to ``step_mm`` per coordinate, as some scanners write it."""
    for f in files:
        ds = pydicom.dcmread(f)
        _edit(f, ImagePositionPatient=[round(float(v) / step_mm) * step_mm for v in ds.ImagePositionPatient])


def _positions_along_normal(files: list[Path]) -> np.ndarray:
    n = _normal(files[0])
    return np.sort([float(np.dot(n, pydicom.dcmread(f).ImagePositionPatient)) for f in files])


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# ------------------------------------------------------------------------------ slice jitter


def test_rounded_oblique_positions_are_read_as_itk_reads_them(tmp_path):
    files = _oblique_series(tmp_path)
    _round_positions(files)
    gaps = np.diff(_positions_along_normal(files))
    assert 0.005 < np.abs(gaps / gaps.mean() - 1).max() < 0.05  # a few % of jitter, as the scanner's
    vol = read_volume(files[0].parent)
    ref = Volume.from_sitk(_sitk_series(files[0].parent))
    # the grid is ITK's: first slice's origin, mean spacing (first-to-last / (n - 1))
    np.testing.assert_allclose(vol.spacing, ref.spacing, atol=1e-9)
    np.testing.assert_allclose(vol.origin, ref.origin, atol=1e-9)
    np.testing.assert_allclose(vol.direction, ref.direction, atol=1e-9)
    assert np.array_equal(vol.array, ref.array)
    pos = _positions_along_normal(files)
    assert vol.spacing[2] == pytest.approx((pos[-1] - pos[0]) / (len(files) - 1), abs=1e-3)
    np.testing.assert_allclose(vol.origin, pydicom.dcmread(files[0]).ImagePositionPatient, atol=1e-6)
    [warning] = vol.metadata["warnings"]
    assert "irregular" in warning and "mm" in warning and "\n" not in warning
    jitter_pct = 100 * np.abs(gaps - gaps.mean()).max() / gaps.mean()
    assert f"{jitter_pct:.1f} %" in warning


def test_exact_positions_give_no_warning(tmp_path):
    files = _oblique_series(tmp_path, n=5)
    assert "warnings" not in read_volume(files[0].parent).metadata


def test_missing_slice_in_a_rounded_series_is_named(tmp_path):
    files = _oblique_series(tmp_path)
    _round_positions(files)
    pos = _positions_along_normal(files)
    files[5].unlink()
    with pytest.raises(InputError) as info:
        read_volume(files[0].parent)
    msg = str(info.value)
    assert "1 missing slice" in msg and "between slices 4 and 5" in msg
    assert f"{pos[4]:.2f}" in msg and f"{pos[6]:.2f}" in msg  # the positions either side of the hole
    assert "expected 7.0" in msg and "\n" not in msg


def test_two_missing_slices_and_an_uneven_gap(tmp_path):
    files = _oblique_series(tmp_path)
    files[4].unlink()
    files[5].unlink()
    with pytest.raises(InputError, match=r"2 missing slice\(s\): between slices 3 and 4 .* gap is 21\.000 mm"):
        read_volume(files[0].parent)
    files = _oblique_series(tmp_path, name="uneven")
    ds = pydicom.dcmread(files[6])
    shift = 0.7 * _normal(files[6])  # 10 % of a 7 mm slice: more than jitter
    _edit(files[6], ImagePositionPatient=[float(p) + s for p, s in zip(ds.ImagePositionPatient, shift)])
    with pytest.raises(InputError, match=r"uneven slice spacing: between slices 5 and 6 .* gap is 7\.700 mm, expected 7\.000"):
        read_volume(files[0].parent)


def test_duplicate_positions_are_refused_with_the_files(tmp_path):
    files = _oblique_series(tmp_path, n=6)
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(files[0].parent / "copy.dcm")
    with pytest.raises(InputError, match=r"same position \(duplicated slices\): .*\.dcm and .*\.dcm"):
        read_volume(files[0].parent)


def test_mixed_orientations_are_refused(tmp_path):
    files = _oblique_series(tmp_path, n=6)
    ds = pydicom.dcmread(files[3])
    iop = np.asarray(ds.ImageOrientationPatient, float)
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    row = c * iop[:3] + s * np.cross(iop[:3], iop[3:])  # row direction turned 5 degrees out of plane
    _edit(files[3], ImageOrientationPatient=[*row, *iop[3:]])
    with pytest.raises(InputError, match=r"mixes slice orientations: 1 of its 6 images .* turned by 5\.0 deg"):
        read_volume(files[0].parent)


def test_slices_shifted_in_plane_are_refused(tmp_path):
    """A tilted-gantry stack: each slice shifted within its plane; a rectangular grid would
    misplace every slice but the first."""
    files = _oblique_series(tmp_path, n=6)
    row = np.asarray(pydicom.dcmread(files[0]).ImageOrientationPatient[:3], float)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        _edit(f, ImagePositionPatient=[float(p) + 0.8 * k * r for p, r in zip(ds.ImagePositionPatient, row)])
    with pytest.raises(InputError, match=r"shifted within their plane by up to 4\.00 mm"):
        read_volume(files[0].parent)


# ------------------------------------------------------------------------------ time series


def _file_meta(sop_class: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _image_dataset(sop_class: str, frames: int, rows: int = 12, cols: int = 14) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "MR", "cine^phantom", "1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.arange(frames * rows * cols, dtype=np.int16).tobytes()
    return ds


def write_classic_cine(path: Path, frames: int = 10, frame_time_ms: float = 70.0) -> Path:
    """A classic multi-frame MR file: NumberOfFrames + FrameTime, one position for all frames."""
    ds = _image_dataset("1.2.840.10008.5.1.4.1.1.4", frames)
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [-50.0, -60.0, 10.0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1.5, 1.5], 8.0
    ds.FrameTime = frame_time_ms
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0018, 0x1063)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_enhanced_mr(path: Path, positions: list[list[float]]) -> Path:
    """An Enhanced MR file with one PlanePositionSequence per frame."""
    ds = _image_dataset("1.2.840.10008.5.1.4.1.1.4.1", len(positions))
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [1.5, 1.5], 8.0
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for k, p in enumerate(positions):
        item, plane, content = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = p
        content.TemporalPositionIndex = k + 1
        item.PlanePositionSequence = DicomSequence([plane])
        item.FrameContentSequence = DicomSequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_classic_multiframe_cine_is_recognised_as_time(tmp_path):
    cine = write_classic_cine(tmp_path / "cine" / "cine.dcm")
    # what ITK alone makes of it: ten "slices" FrameTime = 70 "mm" apart
    assert sitk.ReadImage(str(cine)).GetSpacing()[2] == pytest.approx(70.0)
    for given in (cine, cine.parent):
        with pytest.raises(InputError) as info:
            read_volume(given)
        msg = str(info.value)
        assert "time series of 10 frames at one position, 70 ms apart (cine), not a 3D volume" in msg
        assert "70 mm" not in msg and "70.000 mm" not in msg and "\n" not in msg


def test_enhanced_multiframe_at_one_or_few_positions_is_time(tmp_path):
    one = write_enhanced_mr(tmp_path / "one" / "e.dcm", [[0.0, 0.0, 5.0]] * 8)
    with pytest.raises(InputError, match="time series of 8 frames at one position"):
        read_volume(one)
    two = write_enhanced_mr(tmp_path / "two" / "e.dcm", [[0.0, 0.0, 5.0], [0.0, 0.0, 13.0]] * 4)
    with pytest.raises(InputError, match="time series of 8 frames at 2 positions"):
        read_volume(two)
    stack = write_enhanced_mr(tmp_path / "stack" / "e.dcm", [[0.0, 0.0, 5.0 + 8 * k] for k in range(8)])
    check_not_time_series(pydicom.dcmread(stack), stack.name)  # a stack of slices is not time


def test_single_frame_files_at_one_position_are_cine(tmp_path):
    """Cine exported as one file per phase: every image at the same position."""
    files = _oblique_series(tmp_path, n=5)
    first = pydicom.dcmread(files[0])
    for k, f in enumerate(files):
        _edit(f, ImagePositionPatient=list(first.ImagePositionPatient), TriggerTime=40.0 * k)
    with pytest.raises(InputError, match=r"time series of 5 images at one position \(cine\)"):
        read_volume(files[0].parent)


# ------------------------------------------------------------------------------ cut-off files


def _cut(path: Path, keep: float = 1 / 3) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture
def image() -> Volume:
    return make_volume(np.int16, shape=(12, 20, 24))


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "raw.nrrd", "gzip.nrrd", "m.seg.nrrd"])
def test_cut_off_files_are_refused(tmp_path, image, name):
    vol = image.with_array((image.array > 0).astype(np.uint8)) if name.endswith(".seg.nrrd") else image
    path = tmp_path / name
    write_volume(vol, path, compress=not name.startswith("raw"))
    assert np.array_equal(read_volume(path).array, vol.array)  # whole: reads back
    _cut(path, 0.9 if name.endswith(".seg.nrrd") else 1 / 3)  # a .seg.nrrd is mostly header
    if name.endswith(".nii.gz"):  # what SimpleITK alone does: zero-fills the rest and returns
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[-1].max() == 0
    declared = vol.array.size * vol.array.dtype.itemsize
    with pytest.raises(InputError) as info:
        read_volume(path)
    msg = str(info.value)
    assert msg.startswith(f"{name} is cut off: the header says {declared:,} bytes of voxels, the file holds ")
    held = int(msg.split("the file holds ")[1].split(";")[0].replace(",", ""))
    assert 0 <= held < declared
    assert "\n" not in msg


def test_nrrd_cut_off_in_or_right_after_its_header(tmp_path):
    labels = np.zeros((6, 8, 9), np.uint8)
    labels[2:4, 3:6, 3:7] = 1
    write_volume(make_volume(np.uint8, shape=(6, 8, 9)).with_array(labels), tmp_path / "m.seg.nrrd")
    data = (tmp_path / "m.seg.nrrd").read_bytes()
    end = data.index(b"\n\n") + 2
    (tmp_path / "m.seg.nrrd").write_bytes(data[: data.index(b"sizes:") + 9])  # stops inside "sizes:"
    with pytest.raises(InputError, match=r"m\.seg\.nrrd is cut off inside its NRRD header"):
        read_volume(tmp_path / "m.seg.nrrd")
    (tmp_path / "m.seg.nrrd").write_bytes(data[:end])
    with pytest.raises(InputError, match=r"m\.seg\.nrrd is cut off: the header says 432 bytes of voxels, the file holds 0"):
        read_volume(tmp_path / "m.seg.nrrd")


def test_cut_off_detached_nrrd_data_file(tmp_path, image):
    write_volume(image, tmp_path / "v.nrrd", compress=False)
    header, _, data = (tmp_path / "v.nrrd").read_bytes().partition(b"\n\n")
    (tmp_path / "v.nhdr").write_bytes(header + b"\ndata file: v.raw\n")
    (tmp_path / "v.raw").write_bytes(data)
    assert np.array_equal(read_volume(tmp_path / "v.nhdr").array, image.array)
    _cut(tmp_path / "v.raw", 0.5)
    with pytest.raises(InputError, match=r"v\.nhdr is cut off: the header says 11,520 bytes of voxels, the file holds 5,760"):
        read_volume(tmp_path / "v.nhdr")


def test_corrupt_gzip_is_refused(tmp_path, image):
    path = tmp_path / "v.nii.gz"
    write_volume(image, path)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"v\.nii\.gz is corrupt: its compressed data cannot be decompressed"):
        read_volume(path)


def test_dicom_slice_with_short_pixel_data(tmp_path):
    files = _oblique_series(tmp_path, n=5)
    files[2].write_bytes(files[2].read_bytes()[:-200])  # a copy that stopped early, inside the pixels
    with pytest.raises(InputError, match=rf"{files[2].name} is cut off: the header says 576 bytes of voxels, the file holds 376"):
        read_volume(files[0].parent)
    files = _oblique_series(tmp_path, n=5, name="short_element")
    ds = pydicom.dcmread(files[1])
    ds.PixelData = ds.PixelData[:400]  # an element shorter than Rows x Columns x 2 bytes
    ds.save_as(files[1])
    with pytest.raises(InputError, match=rf"{files[1].name} is cut off: the header says 576 bytes of voxels, the file holds 400"):
        read_volume(files[0].parent)


def test_segment_command_refuses_a_cut_off_image(tmp_path, capsys):
    image = tmp_path / "case.nii.gz"
    write_volume(make_volume(np.float32, shape=(16, 32, 32)), image)
    _cut(image)
    out = tmp_path / "out.nii.gz"
    code = main(["segment", str(image), "-o", str(out), "--no-correct"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code not in (0, None)
    assert len(lines) == 1 and "Traceback" not in err
    assert "case.nii.gz is cut off" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


# ------------------------------------------------------------------------------ NRRD data files


def _detached(tmp_path: Path, image: Volume, data_file: str, folder: str = "upload") -> Path:
    """A header-only .nrrd (as an upload) whose voxels come from ``data_file``."""
    write_volume(image, tmp_path / "whole.nrrd", compress=False)
    header, _, data = (tmp_path / "whole.nrrd").read_bytes().partition(b"\n\n")
    (tmp_path / "secret.raw").write_bytes(data)  # outside the upload folder
    (tmp_path / folder).mkdir(exist_ok=True)
    path = tmp_path / folder / "h.nrrd"
    path.write_bytes(header + f"\ndata file: {data_file}\n".encode())
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "list"])
def test_nrrd_data_file_outside_its_folder_is_refused(tmp_path, image, how):
    secret = tmp_path / "secret.raw"
    if how == "absolute":
        path = _detached(tmp_path, image, str(secret))
    elif how == "dotdot":
        path = _detached(tmp_path, image, "../secret.raw")
    elif how == "symlink":
        path = _detached(tmp_path, image, "inside.raw")
        (path.parent / "inside.raw").symlink_to(secret)
    else:
        path = _detached(tmp_path, image, "LIST")
        path.write_bytes(path.read_bytes() + f"{secret}\n".encode())
    if how != "list":  # what ITK alone does: reads the voxels wherever the header points
        assert sitk.ReadImage(str(path)).GetSize() == (24, 20, 12)
    with pytest.raises(InputError, match=r"h\.nrrd: its header reads voxels from .* outside its own folder"):
        read_volume(path)
    with pytest.raises(InputError, match="outside its own folder"):
        check_image_file(path)  # the check Slicer-side loaders call before Slicer reads the file


def test_nrrd_data_files_inside_the_folder_are_read(tmp_path, image):
    write_volume(image, tmp_path / "whole.nrrd", compress=False)
    header, _, data = (tmp_path / "whole.nrrd").read_bytes().partition(b"\n\n")
    folder = tmp_path / "case"
    (folder / "data").mkdir(parents=True)
    plane = image.array[0].nbytes
    for k in range(image.shape[0]):
        (folder / "data" / f"slice{k:03d}.raw").write_bytes(data[k * plane : (k + 1) * plane])
    (folder / "pattern.nhdr").write_bytes(header + f"\ndata file: data/slice%03d.raw 0 {image.shape[0] - 1} 1 2\n".encode())
    listing = "".join(f"data/slice{k:03d}.raw\n" for k in range(image.shape[0]))
    (folder / "list.nhdr").write_bytes(header + b"\ndata file: LIST 2\n" + listing.encode())
    for name in ("pattern.nhdr", "list.nhdr"):
        back = read_volume(folder / name)
        assert np.array_equal(back.array, image.array)
        np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-9)
    (folder / "data" / "slice005.raw").unlink()
    with pytest.raises(InputError, match=r"the data file 'data/slice005\.raw' its header names does not exist"):
        read_volume(folder / "list.nhdr")


# ------------------------------------------------------------------------------ budget and bombs


def _nifti_header_bytes(shape, dtype=np.float32) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = 352
    return hdr.binaryblock + b"\x00" * 4


def test_declared_size_over_the_budget_is_refused_before_reading(tmp_path):
    big = (2000, 2000, 2000)  # 32 GB of float32 declared by a 1 kB file
    (tmp_path / "big.nii").write_bytes(_nifti_header_bytes(big) + b"\x00" * 1000)
    (tmp_path / "big.nii.gz").write_bytes(gzip.compress(_nifti_header_bytes(big) + b"\x00" * 1000))
    (tmp_path / "big.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2000 2000 2000\nencoding: raw\n\n" + b"\x00" * 1000)
    for name in ("big.nii", "big.nii.gz", "big.nrrd"):
        with pytest.raises(InputError, match=rf"{name} declares 2000 x 2000 x 2000 voxels \(29\.8 GiB\), over the 4\.0 GiB"):
            read_volume(tmp_path / name)


def test_budget_is_overridable_by_environment(tmp_path, monkeypatch, image):
    write_volume(image, tmp_path / "v.nii.gz")
    files = _oblique_series(tmp_path, n=4)
    monkeypatch.setenv(MAX_VOXEL_BYTES_ENV, "5000")  # below the 11,520 bytes of v.nii.gz
    with pytest.raises(InputError, match=rf"v\.nii\.gz declares 24 x 20 x 12 voxels \(11\.2 KiB\), over the 4\.9 KiB .*{MAX_VOXEL_BYTES_ENV}"):
        read_volume(tmp_path / "v.nii.gz")
    monkeypatch.setenv(MAX_VOXEL_BYTES_ENV, "2000")  # below the 4 x 576 bytes of the series
    with pytest.raises(InputError, match=r"series declares 18 x 16 x 4 voxels"):
        read_volume(files[0].parent)
    monkeypatch.setenv(MAX_VOXEL_BYTES_ENV, "20000")
    assert read_volume(tmp_path / "v.nii.gz").shape == image.shape
    monkeypatch.setenv(MAX_VOXEL_BYTES_ENV, "lots")
    with pytest.raises(InputError, match=f"{MAX_VOXEL_BYTES_ENV} must be a positive whole number"):
        read_volume(tmp_path / "v.nii.gz")


def _gzip_stream(head: bytes, zeros: int) -> bytes:
    """gzip of ``head`` + ``zeros`` zero bytes, compressed piecewise (never all in memory)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [comp.compress(head)]
    block = b"\x00" * 2**20
    for _ in range(zeros // len(block)):
        out.append(comp.compress(block))
    out.append(comp.flush())
    return b"".join(out)


@pytest.mark.parametrize("name", ["bomb.nii.gz", "bomb.nrrd"])
def test_gzip_bomb_is_refused_while_streaming(tmp_path, name):
    """64 MiB of zeros (64 kB compressed) behind a header declaring 1,000 bytes: refused after
    ~1 MiB of decompression, with bounded memory."""
    if name.endswith(".nii.gz"):
        data = _gzip_stream(_nifti_header_bytes((10, 10, 10), np.uint8), 64 * 2**20)
    else:
        data = b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 10 10 10\nencoding: gzip\n\n" + _gzip_stream(b"", 64 * 2**20)
    (tmp_path / name).write_bytes(data)
    assert len(data) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=rf"{name} holds more compressed data than its header declares \(1,000 bytes"):
            read_volume(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_multi_member_gzip_is_whole(tmp_path, image):
    """gzip streams may be concatenated (pigz, appended writes); zlib and ITK read them all."""
    write_volume(image, tmp_path / "v.nii")
    raw = (tmp_path / "v.nii").read_bytes()
    half = len(raw) // 2
    (tmp_path / "m.nii.gz").write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    assert np.array_equal(read_volume(tmp_path / "m.nii.gz").array, image.array)


def test_nifti_header_garbage_is_one_line(tmp_path):
    (tmp_path / "x.nii").write_bytes(b"\x00" * 400)
    (tmp_path / "y.nii.gz").write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 400))
    for name in ("x.nii", "y.nii.gz"):
        with pytest.raises(InputError, match=rf"{name}: cannot be read as an image"):
            read_volume(tmp_path / name)


def test_slicer_loaders_get_the_same_checks(slicer_context, tmp_path, image):
    """Slicer's own readers (used by the browser app and the MRML logic) never see a cut-off
    volume or a segmentation whose header points outside its folder."""
    from clinicalai.mrml.segmentations import load_segmentation_file
    from clinicalai.mrml.volumes import load_volume_file

    scene = slicer_context.scene
    before = scene.GetNumberOfNodes()
    write_volume(image, tmp_path / "v.nii.gz")
    _cut(tmp_path / "v.nii.gz")
    with pytest.raises(InputError, match=r"v\.nii\.gz is cut off"):
        load_volume_file(slicer_context, str(tmp_path / "v.nii.gz"))
    seg = _detached(tmp_path, image.with_array((image.array > 0).astype(np.uint8)), str(tmp_path / "secret.raw"))
    with pytest.raises(InputError, match="outside its own folder"):
        load_segmentation_file(slicer_context, str(seg))
    assert scene.GetNumberOfNodes() == before


def test_a_slope_per_slice_as_pet_scanners_write_it_keeps_every_slice_s_values(tmp_path):
    """PET scanners scale each slice to its own maximum (a RescaleSlope per file). ITK takes the
    volume's pixel type from the first file: with slope 1 there, it cast every other slice to
    integers, and a slice whose values lie below 1 read as zeros."""
    from clinicalai.phantoms.pet import write_pet_dicom

    rng = np.random.default_rng(3)
    true = rng.uniform(0, 1, size=(5, 8, 9)) * np.array([32767, 3000, 7, 20000, 0.5])[:, None, None]
    true[0] = np.round(true[0])  # slope 1: the first file stores its values as they are
    folder = write_pet_dicom(Volume(true.astype(np.float32), spacing=(2, 2, 3), modality="PT"), tmp_path / "pet",
                             tags={"Units": "BQML"})
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        k = int(ds.InstanceNumber) - 1
        slope = 1.0 if k == 0 else float(true[k].max()) / 32767
        ds.RescaleSlope = f"{slope:.10g}"
        ds.PixelData = np.round(true[k] / slope).astype(np.int16).tobytes()
        ds.save_as(f)
    volume = read_volume(folder)
    relative = np.abs(volume.array - true).max(axis=(1, 2)) / true.max(axis=(1, 2))
    assert relative.max() < 1e-4, relative  # one int16 step of each slice's own range
