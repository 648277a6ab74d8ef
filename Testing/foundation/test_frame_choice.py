"""A 4D file read one time point at a time by the commands (``--frame K``): a cine short-axis
stack as ACDC ships it (``patientNNN_4d.nii.gz``: every cardiac phase in one file) is segmented
at its end-diastolic or end-systolic frame without a conversion step, on exactly the geometry
of that frame; a wrong or missing frame is one line and writes nothing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from clinicalai.cli import main
from clinicalai.phantoms.cardiac import cardiac_case
from clinicalai.volume import read_volume


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def cine(tmp_path_factory):
    """An oblique, anisotropic two-phase cine (ED, ES of one phantom heart) as one 4D NIfTI,
    written by nibabel as other tools write them (time as the fourth axis), and the two 3D
    frames written alone with the same affine."""
    import dataclasses

    d = tmp_path_factory.mktemp("cine")
    ed, es = cardiac_case(11, "ED"), cardiac_case(11, "ES")
    assert ed.image.shape == es.image.shape and ed.image.spacing[2] > 5 * ed.image.spacing[0]  # thick slices
    a, b = np.deg2rad(25), np.deg2rad(-35)  # a short-axis stack is oblique to the scanner's axes
    tilt = (np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
            @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]))
    affine = nib.load(_write_3d(dataclasses.replace(ed.image, direction=tilt), d / "ed.nii.gz")).affine
    _write_3d(dataclasses.replace(es.image, direction=tilt), d / "es.nii.gz")
    stack = np.stack([nib.load(d / "ed.nii.gz").get_fdata(), nib.load(d / "es.nii.gz").get_fdata()], axis=-1)
    img = nib.Nifti1Image(stack.astype(np.float32), affine)
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, d / "cine_4d.nii.gz")
    return d


def _write_3d(volume, path):
    from clinicalai.volume import write_volume

    write_volume(volume, path)
    return path


def test_segment_reads_the_chosen_frame_of_a_cine(cine, tmp_path, capsys):
    outs = {}
    for frame, name in ((0, "ed"), (1, "es")):
        out = tmp_path / f"{name}-frame.nii.gz"
        assert main(["segment", str(cine / "cine_4d.nii.gz"), "--frame", str(frame), "-o", str(out),
                     "--no-correct", "--device", "cpu"]) == 0
        alone = tmp_path / f"{name}-alone.nii.gz"
        assert main(["segment", str(cine / f"{name}.nii.gz"), "-o", str(alone), "--no-correct", "--device", "cpu"]) == 0
        a, b = read_volume(out), read_volume(alone)
        assert a.same_grid(b) and np.array_equal(a.array, b.array)  # the frame is that 3D image, voxel for voxel
        assert not np.allclose(a.direction, np.eye(3)) and a.same_grid(read_volume(cine / f"{name}.nii.gz"))
        outs[name] = a
    # the two phases are two segmentations: the LV cavity is larger at end-diastole
    lv = {k: int((v.array == 3).sum()) for k, v in outs.items()}
    assert lv["ed"] > 1.2 * lv["es"], lv
    capsys.readouterr()


@pytest.mark.parametrize("frame, message", [(None, "--frame K (K from 0 to 1"), ("2", "frame 2"), ("-1", "counts from 0")])
def test_a_missing_or_wrong_frame_is_one_line_and_writes_nothing(cine, tmp_path, capsys, frame, message):
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(cine / "cine_4d.nii.gz"), "-o", str(out), "--no-correct", "--device", "cpu"]
    code = main(argv + (["--frame", frame] if frame is not None else []))
    assert code not in (0, None)
    line = _one_line(capsys.readouterr().err)
    assert message in line
    assert not any(tmp_path.iterdir())


def test_a_frame_of_a_3d_image_is_frame_0_and_explain_and_anomaly_take_it(cine, tmp_path, capsys):
    # a 3D image is its own frame 0 (a script may pass --frame 0 to every file of a cohort)
    out = tmp_path / "m.nii.gz"
    assert main(["explain", str(cine / "ed.nii.gz"), "--frame", "0", "--model", "brain-lesion-classifier",
                 "--method", "gradient", "-o", str(out)]) == 0
    assert read_volume(out).same_grid(read_volume(cine / "ed.nii.gz"))
    assert main(["anomaly", str(cine / "cine_4d.nii.gz"), "--frame", "1", "-o", str(tmp_path / "a.nii.gz")]) == 0
    assert read_volume(tmp_path / "a.nii.gz").same_grid(read_volume(cine / "es.nii.gz"))
    capsys.readouterr()


def test_segment_reads_the_chosen_series_of_a_study_folder(cine, tmp_path, capsys):
    import shutil

    from clinicalai.volume import write_volume
    from clinicalai.volume.dicom_folders import list_dicom_series

    study = tmp_path / "study"
    study.mkdir()
    for name in ("ed", "es"):  # two series of one study, their files side by side as a PACS export leaves them
        write_volume(read_volume(cine / f"{name}.nii.gz"), tmp_path / name)
        for f in (tmp_path / name).iterdir():
            shutil.copy(f, study / f"{name}-{f.name}")
    series = list_dicom_series(study)
    assert len(series) == 2
    out = tmp_path / "out.nii.gz"
    assert main(["segment", str(study), "-o", str(out), "--no-correct", "--device", "cpu"]) != 0  # which one?
    assert "series" in _one_line(capsys.readouterr().err) and not out.exists()
    masks = []
    for s in series:
        assert main(["segment", str(study), "--series-uid", s["uid"], "-o", str(out), "--no-correct", "--device", "cpu"]) == 0
        masks.append(read_volume(out))
        alone = read_volume(study, series_uid=s["uid"])
        assert masks[-1].same_grid(alone)
    assert not np.array_equal(masks[0].array, masks[1].array)  # two phases, two masks
    capsys.readouterr()


def _slicer_sequence_file(frames, path):
    """``frames`` saved as Slicer saves a volume sequence: a sequence node of volume nodes written
    by slicer-core's own ``vtkMRMLVolumeSequenceStorageNode`` (a ``.seq.nrrd``, the frames a
    ``list`` axis)."""
    from clinicalai.mrml.headless import create_headless_context
    from clinicalai.mrml.volumes import add_volume_node

    scene = create_headless_context(install_stand_ins=False).scene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    for k, volume in enumerate(frames):
        node = add_volume_node(scene, volume, f"phase {k}", display=False)
        sequence.SetDataNodeAtValue(node, str(k))
        scene.RemoveNode(node)
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(path))
    assert storage.WriteData(sequence) == 1
    return path


def test_a_frame_of_a_volume_sequence_slicer_saved_is_read_and_segmented(cine, tmp_path, capsys):
    """A cine saved from Slicer's Sequences module (``.seq.nrrd``) was refused as "3 components per
    voxel", and a 4D NRRD was told to use --frame K, which then refused NRRD. Both now give the
    frame: the same voxels and oblique, anisotropic geometry as the phase written alone."""
    phases = [read_volume(cine / f"{name}.nii.gz") for name in ("ed", "es")]
    path = _slicer_sequence_file(phases, tmp_path / "cine.seq.nrrd")
    from clinicalai.errors import TimeSeriesError

    with pytest.raises(TimeSeriesError, match=r"cine.seq.nrrd is a volume sequence \(Slicer's .seq.nrrd\) with 2 time points"):
        read_volume(path)
    for k, phase in enumerate(phases):
        frame = read_volume(path, frame=k)
        assert frame.same_grid(phase, atol=1e-4) and not np.allclose(frame.direction, np.eye(3))
        np.testing.assert_allclose(frame.array, phase.array, rtol=1e-6)
    out = tmp_path / "es.nii.gz"
    assert main(["segment", str(path), "--frame", "1", "-o", str(out), "--no-correct", "--device", "cpu"]) == 0
    alone = tmp_path / "es-alone.nii.gz"
    assert main(["segment", str(cine / "es.nii.gz"), "-o", str(alone), "--no-correct", "--device", "cpu"]) == 0
    assert np.array_equal(read_volume(out).array, read_volume(alone).array)
    assert main(["segment", str(path), "--frame", "2", "-o", str(out), "--no-correct", "--device", "cpu"]) != 0
    assert "has no frame 2 (its frames are 0 to 1)" in _one_line(capsys.readouterr().err)


def test_a_frame_of_a_4d_nrrd_is_read(cine, tmp_path):
    """A 4D NRRD (time the fourth axis, as ITK writes a 4D image) is refused whole with "--frame
    K", and --frame K reads that time point on the file's 3D geometry."""
    import SimpleITK as sitk

    from clinicalai.errors import TimeSeriesError

    phases = [read_volume(cine / f"{name}.nii.gz") for name in ("ed", "es")]
    stacked = sitk.JoinSeries([p.to_sitk() for p in phases])  # 4D: the 3D direction, spacing and origin kept
    sitk.WriteImage(stacked, str(tmp_path / "cine_4d.nrrd"))
    with pytest.raises(TimeSeriesError, match="2 time points; choose one with --frame K"):
        read_volume(tmp_path / "cine_4d.nrrd")
    frame = read_volume(tmp_path / "cine_4d.nrrd", frame=1)
    assert frame.same_grid(phases[1], atol=1e-4)
    np.testing.assert_allclose(frame.array, phases[1].array, rtol=1e-6)
