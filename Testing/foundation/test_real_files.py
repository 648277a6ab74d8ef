"""Files this project did not make: the real scanner and tool files that pydicom's and nibabel's
wheels ship as their own test data (NEMA WG04 CT and MR slices in every transfer syntax, RT
dose / plan / structure sets, structured reports, a DICOM SEG from dcmqi, Siemens mosaic
diffusion slices, a real T1 brain, NIfTI-2), and DICOM SEG files written by highdicom.

Each must either read with the geometry its own header states, or be refused with one
InputError naming the file; never a traceback from GDCM, never a volume with made-up geometry.
The files are read where they are installed (never downloaded: pydicom fetches more test
files from the internet on demand, these are the ones inside its wheel).
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from foundation_helpers import OBLIQUE, make_volume

from clinicalai.cli import main
from clinicalai.errors import InputError
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.volume import Volume, place_on_grid, read_volume, write_volume
from clinicalai.volume.dicom_seg import write_dicom_seg
from clinicalai.volume.dicom_writer import write_dicom_series

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_FILES = Path(nib.__file__).parent / "tests" / "data"

#: one slice of NEMA's MR1_UNC in each transfer syntax pydicom ships it in: one image, so
#: every decoder (RLE, JPEG-LS, JPEG 2000, big endian, implicit VR) must give the same voxels
MR_SMALL_VARIANTS = ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
                     "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                     "MR_small_padded.dcm")
#: DICOM objects without an image and the kind each message must name
NOT_IMAGES = {"rtstruct.dcm": "RT Structure Set", "rtplan.dcm": "RT Plan", "reportsi.dcm": "Basic Text SR",
              "test-SR.dcm": "Comprehensive SR", "waveform_ecg.dcm": "ECG Waveform",
              "ExplVR_LitEndNoMeta.dcm": "RT Ion Plan"}


def _alone(tmp_path: Path, name: str, source: Path = PYDICOM_FILES, as_name: str | None = None) -> Path:
    """``name`` copied into a folder of its own (a series is what shares a folder)."""
    folder = tmp_path / (as_name or name).replace(".", "_")
    folder.mkdir()
    return Path(shutil.copy(source / name, folder / (as_name or name)))


def _read_or_refuse(path: Path):
    """The volume, or the InputError; any other exception fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd VRs these files exist to test
        try:
            return read_volume(path)
        except InputError as exc:
            return exc


def _lps_from_header(ds) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
    return np.asarray([float(v) for v in ds.ImagePositionPatient]), iop, (column_spacing, row_spacing)


# ---------------------------------------------------------------------------------- DICOM
#: one file of each kind, read in pydicom's own folder (each read there scans all 90 files)
AS_SHIPPED = ("CT_small.dcm", "MR_small.dcm", "rtdose_1frame.dcm", "rtstruct.dcm", "reportsi.dcm", "liver_1frame.dcm",
              "JPEG2000.dcm", "examples_ybr_color.dcm", "SC_rgb_rle.dcm", "no_meta.dcm", "badVR.dcm", "UN_sequence.dcm")


@pytest.mark.parametrize("where", ["alone", "as shipped"])
def test_every_dicom_file_pydicom_ships_reads_or_is_refused_in_one_sentence(tmp_path, where):
    """Every file alone in a folder, and a dozen of them in pydicom's own folder of 90
    unrelated files (which holds an RT dose GDCM's series scanner fails on, taking every other
    file down with it before)."""
    files = sorted(PYDICOM_FILES.glob("*.dcm"))
    assert len(files) > 60
    if where == "as shipped":
        files = [PYDICOM_FILES / name for name in AS_SHIPPED]
    outcomes = {}
    for f in files:
        outcome = _read_or_refuse(_alone(tmp_path, f.name) if where == "alone" else f)
        if isinstance(outcome, InputError):
            message = str(outcome)
            assert "\n" not in message and "Traceback" not in message, (f.name, message)
            assert not re.search(r"\(0x[0-9a-fA-F]{6,}\)|\.(h|cxx):\d+", message), (f.name, message)  # no ITK internals
        outcomes[f.name] = outcome
    read = [name for name, o in outcomes.items() if isinstance(o, Volume)]
    if where == "alone":
        assert {"CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtdose.dcm", "liver_1frame.dcm"} <= set(read)
    else:
        assert {"CT_small.dcm", "liver_1frame.dcm"} <= set(read)  # MR_small's series holds a cut-off copy
        assert "cut off" in str(outcomes["MR_small.dcm"])


def test_real_ct_and_mr_slices_keep_the_geometry_and_values_of_their_headers(tmp_path):
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = pydicom.dcmread(PYDICOM_FILES / name)
        volume = read_volume(_alone(tmp_path, name))
        origin, iop, in_plane = _lps_from_header(ds)
        assert volume.shape == (1, int(ds.Rows), int(ds.Columns))
        np.testing.assert_allclose(volume.origin, origin, atol=1e-4)
        np.testing.assert_allclose(volume.spacing[:2], in_plane, atol=1e-6)
        np.testing.assert_allclose(volume.direction[:, 0], iop[:3], atol=1e-6)
        np.testing.assert_allclose(volume.direction[:, 1], iop[3:], atol=1e-6)
        expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        np.testing.assert_array_equal(volume.array[0], expected)
        # one slice: ITK would say 1 mm; the header's slice thickness is what the slice is
        assert volume.spacing[2] == pytest.approx(float(ds.get("SpacingBetweenSlices") or ds.SliceThickness))


def test_every_transfer_syntax_of_one_mr_slice_gives_the_same_voxels(tmp_path):
    reference = read_volume(_alone(tmp_path, MR_SMALL_VARIANTS[0]))
    for name in MR_SMALL_VARIANTS[1:]:
        volume = read_volume(_alone(tmp_path, name))
        assert volume.same_grid(reference, atol=1e-5), name
        np.testing.assert_array_equal(volume.array, reference.array, err_msg=name)


def test_a_file_gdcm_cannot_scan_does_not_hide_the_series_beside_it(tmp_path):
    """GDCM's folder scan throws on this single-frame RT dose; the series next to it is still
    read (by a file-by-file scan), and the RT dose itself gets one sentence."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("CT_small.dcm", "rtdose_1frame.dcm"):
        shutil.copy(PYDICOM_FILES / name, folder / name)
    alone = read_volume(_alone(tmp_path, "CT_small.dcm"))
    beside = read_volume(folder / "CT_small.dcm")
    assert beside.same_grid(alone) and np.array_equal(beside.array, alone.array)
    with pytest.raises(InputError, match=r"^rtdose_1frame.dcm: GDCM cannot read"):
        read_volume(folder / "rtdose_1frame.dcm")


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_dicom_objects_without_an_image_are_named(tmp_path, name):
    with pytest.raises(InputError, match=rf"^{name} is a DICOM .*{NOT_IMAGES[name]}.*holds no image"):
        read_volume(_alone(tmp_path, name))


def test_a_folder_of_reports_says_what_it_holds_and_a_disc_export_where_the_series_are(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    for name in ("reportsi.dcm", "rtplan.dcm", "rtstruct.dcm"):
        shutil.copy(PYDICOM_FILES / name, reports / name)
    with pytest.raises(InputError, match=r"no DICOM image series.*1 Basic Text SR, 1 RT Plan, 1 RT Structure Set"):
        read_volume(reports)
    # a disc export: PATIENT/STUDY/SERIES folders of files named without an extension
    disc = tmp_path / "disc"
    series = disc / "DICOM" / "P0001" / "S0001"
    series.mkdir(parents=True)
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", series / "IM000001")
    with pytest.raises(InputError, match=r"in its subfolders \(DICOM/P0001/S0001\)"):
        read_volume(disc)
    # ... and the file, named as scanners name them, reads like the .dcm it is
    direct = read_volume(series / "IM000001")
    assert np.array_equal(direct.array, read_volume(_alone(tmp_path, "CT_small.dcm")).array)


def test_a_siemens_mosaic_is_refused_not_read_as_one_huge_slice(tmp_path):
    """nibabel's 0.dcm: Siemens diffusion, 48 slices tiled into one 256 x 256 image."""
    with pytest.raises(InputError, match=r"Siemens mosaic \(48 slices tiled.*dcm2niix"):
        read_volume(_alone(tmp_path, "0.dcm", NIBABEL_FILES))


# ---------------------------------------------------------------------------------- NIfTI
def test_a_real_t1_brain_keeps_nibabels_geometry():
    image = nib.load(NIBABEL_FILES / "anatomical.nii")
    volume = read_volume(NIBABEL_FILES / "anatomical.nii")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    np.testing.assert_allclose(volume.index_to_lps(), lps, atol=1e-5)
    np.testing.assert_array_equal(volume.array, np.asarray(image.dataobj).transpose(2, 1, 0))


def test_nifti2_reads_like_nifti1_on_an_oblique_anisotropic_grid(tmp_path):
    reference = make_volume(np.float32, shape=(6, 9, 7))
    write_volume(reference, tmp_path / "one.nii.gz")
    one = read_volume(tmp_path / "one.nii.gz")
    two = nib.Nifti2Image(np.asarray(one.array).transpose(2, 1, 0),
                          np.diag([-1.0, -1.0, 1.0, 1.0]) @ one.index_to_lps())
    for name in ("two.nii", "two.nii.gz"):
        nib.save(two, tmp_path / name)
        volume = read_volume(tmp_path / name)
        assert volume.same_grid(reference, atol=1e-5)
        np.testing.assert_array_equal(volume.array, one.array)
    with pytest.raises(InputError, match="4D image with 2 time points"):
        read_volume(NIBABEL_FILES / "example_nifti2.nii.gz")
    cut = tmp_path / "cut.nii"
    cut.write_bytes((tmp_path / "two.nii").read_bytes()[:-100])
    with pytest.raises(InputError, match="cut off"):
        read_volume(cut)


# ---------------------------------------------------------------------------------- DICOM SEG
def _write_seg(tmp_path: Path, image_folder: Path, labels: np.ndarray, image: Volume, names=("RV", "MYO", "LV")) -> Path:
    """A DICOM SEG of ``labels`` (on ``image``'s grid) written by highdicom from the series' own
    files, as a PACS-side tool writes one: binary segments, only the frames that hold one."""
    segments = [{"name": n, "value": i + 1} for i, n in enumerate(names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom questions the series writer's one-word patient name
        return write_dicom_seg(image.with_array(labels), sorted(image_folder.iterdir()), tmp_path / "seg.dcm", segments)


def test_a_dicom_seg_reads_as_a_label_map_on_the_voxels_of_its_image(tmp_path):
    image_in = make_volume(shape=(9, 12, 10), modality="CT")
    folder = write_dicom_series(image_in, tmp_path / "ct")
    image = read_volume(folder)
    labels = np.zeros(image.shape, np.uint8)
    labels[3:6, 2:8, 3:7] = 1
    labels[4, 5:7, 4:6] = 2
    labels[5, 2:4, 2:3] = 3
    seg = read_volume(_write_seg(tmp_path, folder, labels, image))
    assert seg.shape == (3, 12, 10)  # the three slices that hold a segment
    assert seg.modality == "SEG" and [(s["value"], s["name"]) for s in seg.metadata["segments"]] == [(1, "RV"), (2, "MYO"), (3, "LV")]
    placed = place_on_grid(seg, image.grid)
    assert placed.same_grid(image) and np.array_equal(placed.array, labels)
    # the SEG filed in the series' folder (as a PACS export puts it): the folder still reads as its image
    shutil.copy(tmp_path / "seg.dcm", folder / "seg.dcm")
    again = read_volume(folder)
    assert again.same_grid(image) and np.array_equal(again.array, image.array)


def test_place_on_grid_takes_flipped_and_swapped_axes_and_refuses_other_voxels():
    grid_volume = make_volume(shape=(8, 9, 10), direction=OBLIQUE)
    labels = np.zeros(grid_volume.shape, np.uint8)
    labels[2:5, 3:7, 1:9] = np.arange(1, 4)[:, None, None]
    # the same voxels, stored as (x, y, z) reversed and with z flipped: origin moves to the last z slice
    block = labels[2:5, 3:7, 1:9]
    start = grid_volume.index_to_lps() @ np.array([1.0, 3.0, 4.0, 1.0])
    d = grid_volume.direction
    stored = Volume(np.ascontiguousarray(block[::-1].transpose(2, 1, 0)), spacing=grid_volume.spacing[::-1],
                    origin=tuple(start[:3]), direction=np.stack([-d[:, 2], d[:, 1], d[:, 0]], axis=1), modality="SEG")
    placed = place_on_grid(stored, grid_volume.grid)
    assert np.array_equal(placed.array, labels)
    shifted = Volume(block, spacing=grid_volume.spacing, origin=tuple(np.asarray(grid_volume.origin) + 0.3 * d[:, 0]), direction=d)
    with pytest.raises(InputError, match="not on the image's voxels"):
        place_on_grid(shifted, grid_volume.grid)
    outside = Volume(labels, spacing=grid_volume.spacing, origin=tuple(np.asarray(grid_volume.origin) - 2 * grid_volume.spacing[0] * d[:, 0]), direction=d)
    with pytest.raises(InputError, match="reaches outside the image"):
        place_on_grid(outside, grid_volume.grid)


def test_overlapping_dicom_seg_segments_are_refused(tmp_path):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    image = make_volume(shape=(3, 6, 5), modality="CT")
    folder = write_dicom_series(image, tmp_path / "ct")
    sources = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    masks = np.zeros((len(sources), 6, 5, 2), bool)
    masks[:, 1:4, 1:4, 0] = True
    masks[:, 2:5, 2:5, 1] = True  # overlaps the first segment
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i + 1, segment_label=f"s{i + 1}", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL) for i in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="t", manufacturer_model_name="t", software_versions="0", device_serial_number="0")
    seg.save_as(tmp_path / "overlap.dcm")
    with pytest.raises(InputError, match="overlapping segments"):
        read_volume(tmp_path / "overlap.dcm")


def test_a_real_dicom_seg_from_dcmqi_reads_with_its_frame_position(tmp_path):
    ds = pydicom.dcmread(PYDICOM_FILES / "liver_1frame.dcm")
    seg = read_volume(_alone(tmp_path, "liver_1frame.dcm"))
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    np.testing.assert_allclose(seg.origin, [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], atol=1e-4)
    assert seg.metadata["segments"][0]["name"] == "Liver"
    assert int((seg.array == 1).sum()) == int(ds.pixel_array.sum())


def test_correct_takes_a_dicom_seg_of_the_heart_slices_and_writes_on_the_image_grid(tmp_path, capsys):
    """A cardiac mask from another tool as a DICOM SEG (only the slices with a segment) and the
    oblique DICOM series it was drawn on: the correction runs on the image's grid, and a
    valid mask comes back unchanged, voxel for voxel."""
    case = cardiac_case(5, "ED", n_slices=8, size=(96, 96), spacing=(1.6, 1.6, 8.0), direction=OBLIQUE)
    mr = case.image.with_array(np.round(case.image.array * 1000).astype(np.int16), modality="MR")
    folder = write_dicom_series(mr, tmp_path / "mr")
    image = read_volume(folder)
    truth = np.zeros(image.shape, np.uint8)
    truth[:] = place_on_grid(case.labels, image.grid).array  # the phantom's own grid is the series'
    truth[0] = 0  # the basal slice holds no segment: the SEG leaves it out
    seg_path = _write_seg(tmp_path, folder, truth, image)
    assert read_volume(seg_path).shape[0] < image.shape[0]
    out = tmp_path / "fixed.nii.gz"
    rc = main(["correct", str(seg_path), "--image", str(folder), "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    fixed = read_volume(out)
    assert fixed.same_grid(image, atol=1e-4)
    assert np.array_equal(fixed.array, truth)


def test_segment_and_correct_write_a_dicom_seg_of_a_dicom_series_input(tmp_path, capsys):
    """`-o mask.dcm`: the result as a DICOM SEG of the input series (back to PACS), the same
    labels as the NIfTI written beside it; refused before any work for an input that is not a
    DICOM series."""
    case = cardiac_case(7, "ED", n_slices=6, size=(96, 96), spacing=(1.6, 1.6, 8.0), direction=OBLIQUE)
    mr = case.image.with_array(np.round(case.image.array * 1000).astype(np.int16), modality="MR")
    folder = write_dicom_series(mr, tmp_path / "mr")
    image = read_volume(folder)
    rc = main(["segment", str(folder), "-o", str(tmp_path / "mask.dcm"), "--raw-output", str(tmp_path / "raw.nii.gz"),
               "--no-correct"])
    assert rc == 0, capsys.readouterr().err
    seg = read_volume(tmp_path / "mask.dcm")
    assert [s["name"] for s in seg.metadata["segments"]] == ["RV", "MYO", "LV"]
    raw = read_volume(tmp_path / "raw.nii.gz")
    assert raw.array.any() and np.array_equal(place_on_grid(seg, image.grid).array, raw.array)
    # correct: the SEG in, a SEG out, on the same series
    rc = main(["correct", str(tmp_path / "mask.dcm"), "--image", str(folder), "-o", str(tmp_path / "fixed.dcm")])
    assert rc == 0, capsys.readouterr().err
    assert read_volume(tmp_path / "fixed.dcm").metadata["segments"][0]["name"] == "RV"
    # a NIfTI input has no series to reference: refused before the networks run, nothing written
    write_volume(mr, tmp_path / "mr.nii.gz")
    assert main(["segment", str(tmp_path / "mr.nii.gz"), "-o", str(tmp_path / "no.dcm"), "--no-correct"]) != 0
    assert "DICOM SEG of the image's DICOM series" in capsys.readouterr().err
    assert not (tmp_path / "no.dcm").exists()


def _enhanced_from_series(tmp_path: Path, volume: Volume, order=None, drop=None) -> Path:
    """An enhanced multi-frame MR (a Legacy Converted Enhanced MR Image, as PACS convert series
    and as Philips / Siemens XA scanners write enhanced files) of ``volume``'s slices, its
    frames in ``order`` (file order), frame ``drop`` left out."""
    import highdicom as hd

    folder = write_dicom_series(volume, tmp_path / "series")
    sources = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
            legacy_datasets=sources, series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(),
            instance_number=1)
    frames = list(range(len(sources))) if order is None else list(order)
    if drop is not None:
        frames.remove(drop)
    pixels = enhanced.pixel_array
    enhanced.PerFrameFunctionalGroupsSequence = pydicom.sequence.Sequence(
        [enhanced.PerFrameFunctionalGroupsSequence[i] for i in frames])
    enhanced.NumberOfFrames = len(frames)
    enhanced.PixelData = np.ascontiguousarray(pixels[frames]).tobytes()
    out = tmp_path / "enhanced" / "mr.dcm"
    out.parent.mkdir()
    enhanced.save_as(out)
    return out


@pytest.mark.parametrize("order", [None, [0, 2, 4, 1, 3, 5], [5, 4, 3, 2, 1, 0]], ids=["in order", "interleaved", "reversed"])
def test_an_enhanced_multiframe_image_keeps_its_geometry_whatever_its_frame_order(tmp_path, order):
    """ITK stacks an enhanced file's frames in file order with one spacing tag: interleaved
    frames came out as 1 mm slices in the wrong order. They are sorted by their own positions."""
    volume = make_volume(shape=(6, 9, 7), modality="MR")
    read = read_volume(_enhanced_from_series(tmp_path, volume, order))
    assert read.same_grid(volume, atol=1e-4)
    np.testing.assert_array_equal(read.array, volume.array)
    assert read.modality == "MR" and read.metadata["dicom"]["Modality"] == "MR"


def test_an_enhanced_multiframe_image_with_a_missing_frame_is_refused(tmp_path):
    volume = make_volume(shape=(6, 9, 7), modality="MR")
    with pytest.raises(InputError, match=r"^mr.dcm: its frames do not form one regular 3D volume"):
        read_volume(_enhanced_from_series(tmp_path, volume, drop=3))


@pytest.mark.parametrize("codes", [(1, 2), (2, 1), (0, 2), (1, 0), (1, 1), (2, 2), (1, 4)])
def test_nifti1_and_nifti2_take_the_same_of_two_geometries_and_say_when_monai_takes_the_other(tmp_path, codes):
    """A registered NIfTI keeps the scanner's qform and gets an aligned / MNI sform (FSL, ANTs).
    ITK and Slicer then read the qform, nibabel and MONAI's reader the sform: the file reads the
    same as NIfTI-1 (ITK) and NIfTI-2 (nibabel, ITK's rule), with a warning where MONAI differs."""
    qcode, scode = codes
    qform = np.diag([-1.0, -1.0, 1.0, 1.0]) @ make_volume(shape=(4, 5, 6)).index_to_lps()  # oblique, anisotropic, RAS
    sform = qform.copy()
    sform[:3, 3] += [4.0, -3.0, 2.5]  # moved by a registration
    data = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    read = {}
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        image = cls(data, None)
        image.set_qform(qform, qcode)
        image.set_sform(sform, scode)
        path = tmp_path / f"{cls.__name__}.nii.gz"
        image.to_filename(path)
        read[cls] = read_volume(path)
    one, two = read[nib.Nifti1Image], read[nib.Nifti2Image]
    assert one.same_grid(two, atol=1e-4) and np.array_equal(one.array, two.array)
    itk_takes_qform = bool(qcode) and not (scode == 1 or not scode)
    expected = qform if itk_takes_qform or not scode else sform
    np.testing.assert_allclose(one.index_to_lps(), np.diag([-1.0, -1.0, 1.0, 1.0]) @ expected, atol=1e-4)
    warned = [w for w in one.metadata.get("warnings", []) if "two geometries" in w]
    assert bool(warned) == (itk_takes_qform and bool(scode)), warned
    if warned:
        assert "read with the qform" in warned[0] and "MONAI" in warned[0] and "5.6 mm apart" in warned[0]


def test_a_folder_of_two_series_names_a_file_of_each_and_the_file_reads_its_series(tmp_path):
    """The command line's way to choose a series: the message names a file of each, and that
    file given instead of the folder reads its own series."""
    study = tmp_path / "study"
    study.mkdir()
    volumes = {"cine": make_volume(shape=(4, 6, 5), modality="MR"), "late": make_volume(shape=(3, 7, 6), modality="MR", seed=1)}
    for name, volume in volumes.items():
        folder = write_dicom_series(volume, tmp_path / name, series_description=name)
        for f in folder.iterdir():
            shutil.copy(f, study / f"{name}_{f.name}")
    with pytest.raises(InputError, match=r"holds 2 DICOM series; give one file .*'cine' \(MR, 4 files, e.g. cine_slice0000.dcm") as info:
        read_volume(study)
    assert "'late' (MR, 3 files, e.g. late_slice0000.dcm" in str(info.value)
    late = read_volume(study / "late_slice0001.dcm")
    assert late.same_grid(volumes["late"], atol=1e-4) and np.array_equal(late.array, volumes["late"].array)


def test_convert_takes_a_frame_of_real_4d_files_and_a_series_of_a_study(tmp_path, capsys):
    """`clinicalai convert`, the step the readers' refusals point to: a frame of nibabel's real
    oblique fMRI (NIfTI-1) and of its NIfTI-2 twin, a SEG with its segment names, a series of a
    study folder; what it cannot do is one line and no file."""
    for source in ("example4d.nii.gz", "example_nifti2.nii.gz"):
        image = nib.load(NIBABEL_FILES / source)
        with pytest.raises(InputError, match=r"4D image with 2 time points; choose one with --frame K \(K from 0 to 1.*clinicalai convert"):
            read_volume(NIBABEL_FILES / source)
        out = tmp_path / f"frame1_{source}"
        assert main(["convert", str(NIBABEL_FILES / source), "-o", str(out), "--frame", "1"]) == 0, capsys.readouterr().err
        frame = read_volume(out)
        np.testing.assert_array_equal(frame.array, np.asarray(image.dataobj)[..., 1].transpose(2, 1, 0))
        np.testing.assert_allclose(frame.index_to_lps(), np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine, atol=1e-4)
        assert main(["convert", str(NIBABEL_FILES / source), "-o", str(tmp_path / "no.nii.gz"), "--frame", "2"]) != 0
        assert "has no frame 2 (its frames are 0 to 1)" in capsys.readouterr().err
    assert main(["convert", str(NIBABEL_FILES / "anatomical.nii"), "-o", str(tmp_path / "no.nii.gz"), "--frame", "1"]) != 0
    assert "a 3D image: its only frame is 0" in capsys.readouterr().err
    assert main(["convert", str(NIBABEL_FILES / "anatomical.nii"), "-o", str(tmp_path / "no.dcm")]) != 0
    assert "convert writes NIfTI" in capsys.readouterr().err
    assert not (tmp_path / "no.nii.gz").exists() and not (tmp_path / "no.dcm").exists()
    # a DICOM SEG becomes a .seg.nrrd with its segment names
    seg = _alone(tmp_path, "liver_1frame.dcm")
    assert main(["convert", str(seg), "-o", str(tmp_path / "liver.seg.nrrd")]) == 0, capsys.readouterr().err
    assert [s["name"] for s in read_volume(tmp_path / "liver.seg.nrrd").metadata["segments"]] == ["Liver"]
    # one series of a study folder, by its uid
    study = tmp_path / "study"
    study.mkdir()
    for name, seed in (("a", 0), ("b", 1)):
        folder = write_dicom_series(make_volume(shape=(3, 5, 4), modality="CT", seed=seed), tmp_path / name, series_description=name)
        for f in folder.iterdir():
            shutil.copy(f, study / f"{name}_{f.name}")
    uid = str(pydicom.dcmread(study / "b_slice0000.dcm").SeriesInstanceUID)
    assert main(["convert", str(study), "-o", str(tmp_path / "b.nii.gz"), "--series-uid", uid]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(read_volume(tmp_path / "b.nii.gz").array, read_volume(study / "b_slice0000.dcm").array)
