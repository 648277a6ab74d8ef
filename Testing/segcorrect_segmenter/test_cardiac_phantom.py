"""The cardiac short-axis phantom: anatomy, ED/ES, determinism, ACDC layout."""

import numpy as np
from scipy import ndimage

from clinicalai.phantoms.cardiac import CARDIAC_LABELS, cardiac_case, cardiac_dataset, write_cardiac_dataset
from clinicalai.volume import read_volume


def test_labels_are_one_fact():
    assert [(lab["name"], lab["value"]) for lab in CARDIAC_LABELS] == [("RV", 1), ("MYO", 2), ("LV", 3)]
    assert all(len(lab["color"]) == 3 and all(0 <= c <= 1 for c in lab["color"]) for lab in CARDIAC_LABELS)


def test_case_geometry_and_ranges():
    for seed in range(6):
        c = cardiac_case(seed)
        nz, ny, nx = c.image.shape
        assert 8 <= nz <= 14 and 160 <= ny <= 256 and 160 <= nx <= 256
        sx, sy, sz = c.image.spacing
        assert 1.2 <= sx <= 1.8 and sx == sy and 5 <= sz <= 10
        assert c.image.array.dtype == np.float32 and c.labels.array.dtype == np.uint8
        assert c.labels.same_grid(c.image)
        assert set(np.unique(c.labels.array)) <= {0, 1, 2, 3}
        assert c.labels.metadata["segments"][0]["name"] == "RV"


def test_anatomy_lv_inside_myo_rv_touches_myo():
    c = cardiac_case(3, "ED")
    lab = c.labels.array
    for k in range(lab.shape[0]):
        s = lab[k]
        if (s == 3).any():
            # the LV is enclosed: no LV voxel touches background or RV
            ring = ndimage.binary_dilation(s == 3) & (s != 3)
            assert set(np.unique(s[ring])) == {2}
        if (s == 1).any() and (s == 2).any():
            assert (ndimage.binary_dilation(s == 1) & (s == 2)).any()


def test_ed_es_same_patient_and_apex_smaller():
    ed, es = cardiac_case(7, "ED"), cardiac_case(7, "ES")
    assert ed.image.shape == es.image.shape
    assert (es.labels.array == 3).sum() < 0.7 * (ed.labels.array == 3).sum()
    # thicker wall at ES: MYO/LV ratio grows
    assert (es.labels.array == 2).sum() / (es.labels.array == 3).sum() > (ed.labels.array == 2).sum() / (ed.labels.array == 3).sum()
    lv_per_slice = (ed.labels.array == 3).sum(axis=(1, 2))
    nz = len(lv_per_slice)
    assert lv_per_slice[: nz // 3].mean() > lv_per_slice[-3:].mean()
    # the RV stops before the apex: the last slice holds no RV
    assert not (ed.labels.array[-1] == 1).any()
    # determinism
    again = cardiac_case(7, "ED")
    np.testing.assert_array_equal(again.image.array, ed.image.array)
    other = cardiac_case(8, "ED")
    assert other.labels.shape != ed.labels.shape or not np.array_equal(other.labels.array, ed.labels.array)


def test_dataset_alternates_phases():
    cases = cardiac_dataset(4, seed=2, size=(96, 96), n_slices=8)
    assert [c.phase for c in cases] == ["ED", "ES", "ED", "ES"]
    assert all(c.image.shape == (8, 96, 96) for c in cases)


def test_write_acdc_layout(tmp_path):
    folders = write_cardiac_dataset(tmp_path, 2, seed=1, size=(64, 64), n_slices=8)
    assert [f.name for f in folders] == ["patient001", "patient002"]
    info = dict(line.split(": ") for line in (folders[0] / "Info.cfg").read_text().splitlines())
    assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}
    ed, es = int(info["ED"]), int(info["ES"])
    img = read_volume(folders[0] / f"patient001_frame{ed:02d}.nii.gz")
    gt = read_volume(folders[0] / f"patient001_frame{es:02d}_gt.nii.gz")
    assert img.shape == gt.shape == (8, 64, 64)
    assert set(np.unique(gt.array)) <= {0, 1, 2, 3} and (gt.array == 3).any()
    assert not list(tmp_path.glob(".*partial*"))
