"""A dynamic (4D) BIDS-PET, as OpenNeuro ships them, made static over a window of its frames
(``clinicalai.pet.dynamic``, ``clinicalai pet --static-window``).

The dynamic files are written here by nibabel, with a sidecar as BIDS-PET writes it, from a
held-out template PET (real anatomy, MNI152) whose lesion and healthy brain follow different
time-activity curves. The expected static image is integrated numerically from those curves
(fine time steps, not the module's formula), decay-corrected or not, on an oblique,
anisotropic grid."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn")

from clinicalai.cli import main  # noqa: E402
from clinicalai.errors import InputError  # noqa: E402
from clinicalai.pet.dynamic import static_from_dynamic  # noqa: E402
from clinicalai.pet.suv import to_suv  # noqa: E402
from clinicalai.phantoms.mni import mni_pet_case  # noqa: E402
from clinicalai.volume import Volume, read_volume, write_volume  # noqa: E402

F18_S = 6586.2
#: a common dynamic protocol: short frames first, 60 min in all (s after the injection)
DURATIONS = [60.0] * 5 + [150.0] * 2 + [300.0] * 8 + [600.0] * 1
STARTS = list(np.concatenate([[0.0], np.cumsum(DURATIONS)[:-1]]))
INJECTION_S = -30.0  # InjectionStart: the injection 30 s before TimeZero (the scan start)


def healthy_curve(t):
    """Healthy brain: a slow rise to a plateau (activity, decay removed)."""
    return 1.0 - np.exp(-t / 400.0)


def lesion_curve(t):
    """Recurrence: an early peak and a wash-out."""
    return 3.0 * (t / 600.0) * np.exp(1.0 - t / 600.0)


def frame_means(curve, decayed: bool) -> np.ndarray:
    """Mean over each frame of ``curve`` (x the physical decay when ``decayed``), integrated
    on a fine grid."""
    out = []
    for s, d in zip(STARTS, DURATIONS):
        t = np.linspace(s, s + d, 4001)
        y = curve(t) * (2.0 ** (-t / F18_S) if decayed else 1.0)
        out.append(np.trapezoid(y, t) / d)
    return np.asarray(out)


@pytest.fixture(scope="module")
def case():
    c = mni_pet_case(1, recurrence=True)
    image = c.image.array[::2, ::2, ::2].astype(np.float64)
    lesion = c.lesion.array[::2, ::2, ::2] > 0
    return image * ~lesion, image * lesion


#: an oblique, anisotropic RAS affine: 20 degrees about x then 15 about z, voxels 4.8 x 4.8 x 5.0 mm
def _affine() -> np.ndarray:
    a, b = math.radians(20), math.radians(15)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([4.8, 4.8, 5.0])
    affine[:3, 3] = [-90.0, -110.0, -60.0]
    return affine


def _sidecar(decay_corrected: bool, **changes):
    data = {
        "Modality": "PT", "Manufacturer": "Siemens", "TracerName": "FDOPA", "TracerRadionuclide": "F18",
        "InjectedRadioactivity": 185.0, "InjectedRadioactivityUnits": "MBq", "BodyWeight": 70.0, "BodyWeightUnits": "kg",
        "Units": "Bq/mL", "ScanDate": "2024-05-06", "TimeZero": "09:00:00", "InjectionStart": INJECTION_S, "ScanStart": 0,
        "FrameDuration": DURATIONS,
        "ImageDecayCorrected": decay_corrected, "AttenuationCorrection": "CT-based",
    }
    # frame times are from TimeZero: the injection is at INJECTION_S, so a frame starting s after
    # the injection starts at s + INJECTION_S
    data["FrameTimesStart"] = [s + INJECTION_S for s in STARTS]
    if decay_corrected:
        data["ImageDecayCorrectionTime"] = INJECTION_S  # to the injection
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def _write_dynamic(folder, case, decay_corrected: bool, **sidecar_changes):
    healthy, lesion = case
    h = frame_means(healthy_curve, decayed=not decay_corrected)
    l_ = frame_means(lesion_curve, decayed=not decay_corrected)
    frames = np.stack([healthy * hi + lesion * li for hi, li in zip(h, l_)], axis=-1)  # (z, y, x, t)
    data = frames.transpose(2, 1, 0, 3).astype(np.float32)  # NIfTI voxel order i, j, k
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sub-01_pet.nii.gz"
    nib.save(nib.Nifti1Image(data, _affine()), str(path))
    (folder / "sub-01_pet.json").write_text(json.dumps(_sidecar(decay_corrected, **sidecar_changes)))
    return path


def _expected_mean(case, start_s, end_s) -> np.ndarray:
    """Activity averaged over [start_s, end_s] after the injection, decay removed (to the injection)."""
    healthy, lesion = case
    t = np.linspace(start_s, end_s, 40001)
    return healthy * np.trapezoid(healthy_curve(t), t) / (end_s - start_s) + lesion * np.trapezoid(lesion_curve(t), t) / (end_s - start_s)


def test_decay_corrected_frames_average_to_the_window_s_mean_on_the_file_s_grid(tmp_path, case):
    path = _write_dynamic(tmp_path / "dc", case, decay_corrected=True)
    static = static_from_dynamic(path, (10, 30))
    made = static.metadata["static_from_frames"]
    assert made["frames"] == [7, 8, 9, 10] and made["averaged_min"] == [10.0, 30.0]
    expected = _expected_mean(case, 600.0, 1800.0)
    np.testing.assert_allclose(static.array, expected, rtol=2e-5, atol=1e-3 * expected.max())
    # the file's geometry, as a single frame read by read_volume has it: oblique, anisotropic
    frame0 = read_volume(path, frame=0)
    assert static.spacing == pytest.approx(frame0.spacing) and static.spacing == pytest.approx((4.8, 4.8, 5.0))
    np.testing.assert_allclose(static.origin, frame0.origin)
    np.testing.assert_allclose(static.direction, frame0.direction)
    assert abs(static.direction[1, 2]) > 0.3  # oblique indeed
    assert static.modality == "PT" and static.units == "BQML"
    assert any("frames 7-10" in w for w in static.metadata["warnings"])


def test_frames_that_are_not_decay_corrected_give_the_same_suv(tmp_path, case):
    # the same scan stored without decay correction: each frame is corrected to the window's
    # start, the image is tagged as corrected to that time, and SUV comes out the same
    corrected = static_from_dynamic(_write_dynamic(tmp_path / "dc", case, decay_corrected=True), (10, 30))
    raw = static_from_dynamic(_write_dynamic(tmp_path / "nodc", case, decay_corrected=False), (10, 30))
    assert "window's start" in raw.metadata["static_from_frames"]["decay"]
    # decay-corrected to 10 min after the injection, not to the injection; the per-frame correction
    # takes the activity as constant within a frame (as scanners' per-frame factors do): 0.05 %
    # off where the lesion's curve peaks inside a 5 min frame
    np.testing.assert_allclose(raw.array, corrected.array * 2.0 ** (-600.0 / F18_S), rtol=1e-3,
                               atol=1e-4 * corrected.array.max())
    suv_c, conv_c = to_suv(corrected)
    suv_r, conv_r = to_suv(raw)
    assert conv_c.details["decay_correction"] == "ADMIN" and conv_r.details["elapsed_s"] == pytest.approx(600.0)
    np.testing.assert_allclose(suv_r.array, suv_c.array, rtol=1e-3, atol=1e-4 * float(suv_c.array.max()))
    assert float(suv_c.array.max()) > 0.5  # SUV of a real scale, not all zeros


def test_a_window_between_frame_edges_uses_whole_frames_and_says_which(tmp_path, case):
    path = _write_dynamic(tmp_path / "dc", case, decay_corrected=True)
    static = static_from_dynamic(path, (12, 31))  # frames start at 10, 15, 20, 25, 30 min
    assert static.metadata["static_from_frames"]["frames"] == [8, 9, 10]
    assert static.metadata["static_from_frames"]["averaged_min"] == [15.0, 30.0]
    np.testing.assert_allclose(static.array, _expected_mean(case, 900.0, 1800.0), rtol=2e-5,
                               atol=1e-3 * float(static.array.max()))


@pytest.mark.parametrize("changes, window, message", [
    ({"FrameDuration": None}, (10, 30), "no FrameDuration"),
    ({"FrameDuration": DURATIONS[:-1]}, (10, 30), "the image has 16 frames"),
    ({"InjectionStart": None}, (10, 30), "InjectionStart"),
    ({"ImageDecayCorrected": None, "ImageDecayCorrectionTime": None}, (10, 30), "ImageDecayCorrected"),
    ({}, (11, 14), "no whole frame lies in 11-14 min"),
    ({}, (30, 10), "not a window"),
])
def test_bad_frame_timing_is_one_clear_error(tmp_path, case, changes, window, message):
    path = _write_dynamic(tmp_path / "dc", case, decay_corrected=True, **changes)
    with pytest.raises(InputError, match=message):
        static_from_dynamic(path, window)


def test_uncorrected_frames_need_a_known_radionuclide(tmp_path, case):
    path = _write_dynamic(tmp_path / "nodc", case, decay_corrected=False, TracerRadionuclide="Xx99")
    with pytest.raises(InputError, match="no known half-life"):
        static_from_dynamic(path, (10, 30))


def test_the_command_line_classifies_the_window_as_it_classifies_that_static_scan(tmp_path, case, capsys):
    path = _write_dynamic(tmp_path / "dyn", case, decay_corrected=True)
    out = tmp_path / "dyn.json"
    assert main(["pet", str(path), "--static-window", "10", "30", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frames 7-10 (10.0-30.0 min after injection" in printed
    result = json.loads(out.read_text())
    assert result["static_from_frames"]["frames"] == [7, 8, 9, 10]
    # the static scan of that window, written as a 3D BIDS-PET by itself
    frame0 = read_volume(path, frame=0)
    static_dir = tmp_path / "static"
    static_dir.mkdir()
    static_path = static_dir / "sub-01_pet.nii.gz"
    write_volume(Volume(_expected_mean(case, 600.0, 1800.0).astype(np.float32), spacing=frame0.spacing,
                        origin=frame0.origin, direction=frame0.direction), static_path)
    sidecar = _sidecar(True, FrameTimesStart=[600.0 + INJECTION_S], FrameDuration=[1200.0])
    (static_dir / "sub-01_pet.json").write_text(json.dumps(sidecar))
    reference = tmp_path / "static.json"
    assert main(["pet", str(static_path), "--json", str(reference)]) == 0
    expected = json.loads(reference.read_text())
    assert result["fold_probabilities"] == pytest.approx(expected["fold_probabilities"], abs=2e-4)
    for key in ("SUVmax", "TBRmax", "TBRmean"):
        assert result["static"][key] == pytest.approx(expected["static"][key], rel=1e-4)
    assert result["static"]["TBRmax"] > 2.0  # the lesion is found in both


def test_a_dynamic_pet_without_a_window_is_refused_with_what_to_give(tmp_path, case, capsys):
    path = _write_dynamic(tmp_path / "dyn", case, decay_corrected=True)
    out = tmp_path / "r.json"
    assert main(["pet", str(path), "--json", str(out)]) != 0
    err = capsys.readouterr().err
    assert "dynamic PET with 16 frames" in err and "--static-window START END" in err and "Traceback" not in err
    assert not out.exists()


# ------------------------------------------------------------------ a dynamic PET DICOM series
INJECTION = __import__("datetime").datetime(2024, 5, 6, 9, 0, 0)


def _write_dicom(folder, case, geometry, decay: str):
    """The same scan as one dynamic DICOM series, as a scanner exports it: decay-corrected to
    the series start (START; the scan starts at the injection) or not corrected (NONE)."""
    from clinicalai.phantoms.pet import pet_tags, write_dynamic_pet_dicom

    healthy, lesion = case
    h = frame_means(healthy_curve, decayed=decay == "NONE")
    l_ = frame_means(lesion_curve, decayed=decay == "NONE")
    frames = [geometry.with_array((healthy * hi + lesion * li).astype(np.float32), metadata={}) for hi, li in zip(h, l_)]
    tags = pet_tags(70.0, 185e6, INJECTION, INJECTION, decay_correction=decay)
    if decay == "NONE":
        tags["CorrectedImage"] = ["ATTN", "SCAT", "RAN", "NORM"]
    return write_dynamic_pet_dicom(frames, STARTS, DURATIONS, tags, folder)


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory, case):
    base = tmp_path_factory.mktemp("dicom-dynamic")
    geometry = read_volume(_write_dynamic(base / "nifti", case, decay_corrected=True), frame=0)
    return {decay: _write_dicom(base / decay, case, geometry, decay) for decay in ("START", "NONE")}, geometry


def test_a_dynamic_dicom_series_is_split_into_frames_in_time_order(dicom_series):
    from clinicalai.errors import TimeSeriesError

    series, geometry = dicom_series
    with pytest.raises(TimeSeriesError, match="dynamic PET series with 16 time points; choose one with --frame K"):
        read_volume(series["START"])
    frame = read_volume(series["START"], frame=8)
    assert frame.same_grid(geometry)  # oblique, anisotropic: the geometry each frame was written on
    assert frame.metadata["pet"]["AcquisitionTime"].startswith("091500")  # the 9th frame starts 15 min in


def test_a_dynamic_dicom_series_gives_the_same_static_suv_decay_corrected_or_not(tmp_path, case, dicom_series):
    series, geometry = dicom_series
    corrected, raw = (static_from_dynamic(series[d], (10, 30)) for d in ("START", "NONE"))
    assert corrected.metadata["static_from_frames"]["frames"] == [7, 8, 9, 10] and corrected.same_grid(geometry)
    expected = _expected_mean(case, 600.0, 1800.0)  # decay removed to the injection = the series start
    peak = float(expected.max())
    np.testing.assert_allclose(corrected.array, expected, atol=2e-4 * peak)  # int16 storage per frame
    suv_c, conv_c = to_suv(corrected)
    suv_r, conv_r = to_suv(raw)
    assert conv_c.details["elapsed_s"] == pytest.approx(0.0) and conv_r.details["elapsed_s"] == pytest.approx(600.0)
    np.testing.assert_allclose(suv_r.array, suv_c.array, rtol=1e-3, atol=3e-4 * float(suv_c.array.max()))
    # and the same as the BIDS NIfTI of that scan
    bids = static_from_dynamic(_write_dynamic(tmp_path / "bids", case, decay_corrected=True), (10, 30))
    np.testing.assert_allclose(suv_c.array, to_suv(bids)[0].array, atol=3e-4 * float(suv_c.array.max()))


def test_frames_decay_corrected_to_their_own_times_are_brought_to_the_series_reference(tmp_path, case, dicom_series):
    """A scanner may correct each frame to its own start and say so per image
    (DecayCorrectionDateTime, 0018,9701) under DecayCorrection START. Averaged as if all were
    corrected to the series start, the window 10-30 min would come out 7-10 % low; brought to
    the series reference first, it is the START series' static scan."""
    from clinicalai.phantoms.pet import pet_tags, write_dynamic_pet_dicom

    series, geometry = dicom_series
    healthy, lesion = case
    half_life = 6586.2  # F-18, as pet_tags writes it
    own = np.exp2(-np.asarray(STARTS) / half_life)  # values at each frame's start (the series starts at the injection)
    frames = [geometry.with_array(((healthy * hi + lesion * li) * k).astype(np.float32), metadata={})
              for hi, li, k in zip(frame_means(healthy_curve, decayed=False), frame_means(lesion_curve, decayed=False), own)]
    tags = pet_tags(70.0, 185e6, INJECTION, INJECTION, decay_correction="START")
    assert float(tags["RadionuclideHalfLife"]) == pytest.approx(half_life)
    folder = write_dynamic_pet_dicom(frames, STARTS, DURATIONS, tags, tmp_path / "own", decay_references_s=STARTS)
    reference = static_from_dynamic(series["START"], (10, 30))
    made = static_from_dynamic(folder, (10, 30))
    peak = float(reference.array.max())
    np.testing.assert_allclose(made.array, reference.array, atol=4e-4 * peak)
    assert "DecayCorrectionDateTime" in made.metadata["static_from_frames"]["decay"]
    # what was fixed: the same frames read as corrected to the series start
    unsaid = static_from_dynamic(write_dynamic_pet_dicom(frames, STARTS, DURATIONS, tags, tmp_path / "unsaid"), (10, 30))
    assert float(np.abs(unsaid.array - reference.array).max()) > 0.05 * peak
    del tags["RadionuclideHalfLife"]
    no_half_life = write_dynamic_pet_dicom(frames, STARTS, DURATIONS, tags, tmp_path / "no-half-life",
                                           decay_references_s=STARTS)
    with pytest.raises(InputError, match="decay-corrected to different times and RadionuclideHalfLife is missing"):
        static_from_dynamic(no_half_life, (10, 30))


def test_an_incomplete_dynamic_series_is_one_clear_error(tmp_path, dicom_series):
    import shutil

    series, _ = dicom_series
    cut = tmp_path / "cut"
    shutil.copytree(series["START"], cut)
    sorted(cut.glob("pt009_*.dcm"))[3].unlink()
    with pytest.raises(InputError, match="frame 9 of the dynamic PET series has 41 of its 42 images"):
        static_from_dynamic(cut, (10, 30))


def test_the_command_line_takes_a_dynamic_dicom_series(tmp_path, dicom_series, capsys):
    series, _ = dicom_series
    out = tmp_path / "r.json"
    assert main(["pet", str(series["NONE"]), "--static-window", "10", "30", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["static_from_frames"]["decay"] == "each frame decay-corrected to the window's start"
    assert result["suv_conversion"]["quantity"] == "SUVbw"


def test_a_csv_row_gives_its_static_window_to_evaluation_and_training(tmp_path, case):
    # 'evaluate pet' / 'train pet' rows of dynamic PETs: a static_window column START-END
    from clinicalai.pet.commands import evaluate_csv
    from clinicalai.pet.train import load_inputs, read_pet_csv

    for subject in ("01", "02"):
        folder = tmp_path / f"sub-{subject}"
        path = _write_dynamic(folder, case, decay_corrected=True)
        path.rename(tmp_path / f"sub-{subject}_pet.nii.gz")
        (folder / "sub-01_pet.json").rename(tmp_path / f"sub-{subject}_pet.json")
    csv_path = tmp_path / "cases.csv"
    csv_path.write_text("path,label,static_window\nsub-01_pet.nii.gz,1,10-30\nsub-02_pet.nii.gz,0,0-5\n")
    rows = read_pet_csv(csv_path)
    assert [r.static_window for r in rows] == [(10.0, 30.0), (0.0, 5.0)]
    _, probs, _ = evaluate_csv(csv_path, split="all", device="cpu", n_boot=10)
    for subject, window, p in zip(("01", "02"), (("10", "30"), ("0", "5")), probs):
        ref = tmp_path / f"ref{subject}.json"
        assert main(["pet", str(tmp_path / f"sub-{subject}_pet.nii.gz"), "--static-window", *window, "--json", str(ref)]) == 0
        assert p == pytest.approx(json.loads(ref.read_text())["probability_recurrence"], abs=1e-4)
    inputs = load_inputs(rows, (8.0, 8.0, 8.0), (32, 32, 21))
    assert inputs.shape[0] == 2 and not np.allclose(inputs[0], inputs[1])  # two windows, two scans
    csv_path.write_text("path,label,static_window\nsub-01_pet.nii.gz,1,10 to 30\n")
    with pytest.raises(InputError, match="cases.csv line 2: the static window is minutes after the injection"):
        read_pet_csv(csv_path)
    csv_path.write_text("path,label\nsub-01_pet.nii.gz,1\n")
    with pytest.raises(InputError, match="a static_window column START-END in a CSV"):
        evaluate_csv(csv_path, split="all", device="cpu", n_boot=10)


def test_the_voxel_budget_holds_per_time_point_for_what_reads_frames(tmp_path, case, monkeypatch):
    # 16 frames of 42 x 52 x 46 float32 (0.4 MB each, 6.4 MB in all) under a 2 MB budget: the
    # whole file is refused, a time point and the static window (4 frames read) are not
    from clinicalai.volume.integrity import MAX_VOXEL_BYTES_ENV

    path = _write_dynamic(tmp_path / "dc", case, decay_corrected=True)
    monkeypatch.setenv(MAX_VOXEL_BYTES_ENV, str(2 * 2**20))
    with pytest.raises(InputError, match="over the 2.0 MiB one image may use"):
        read_volume(path)
    assert read_volume(path, frame=3).shape == (42, 52, 46)
    assert static_from_dynamic(path, (10, 30)).metadata["static_from_frames"]["frames"] == [7, 8, 9, 10]
    monkeypatch.setenv(MAX_VOXEL_BYTES_ENV, str(2**18))
    with pytest.raises(InputError, match="voxels per time point"):
        read_volume(path, frame=3)


def test_a_cut_off_dynamic_file_is_refused_before_frames_are_averaged(tmp_path, case):
    # the frame count comes from the header alone; the reader of the frames still checks the
    # whole stream (SimpleITK and nibabel would fill or fail late on a cut-off .nii.gz)
    path = _write_dynamic(tmp_path / "dc", case, decay_corrected=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="cut off"):
        static_from_dynamic(path, (10, 30))
