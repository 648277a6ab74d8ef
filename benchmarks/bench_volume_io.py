"""Volume I/O overhead of ClinicalAI over plain SimpleITK, as ratios (same process, same data).

    .venv/bin/python benchmarks/bench_volume_io.py [--size 64 256 256] [--repeat 3]

For each format, ``read_volume`` / ``write_volume`` are timed against the bare SimpleITK call
that does the same I/O (``sitk.ReadImage``, ``sitk.WriteImage``, ``ImageSeriesReader``; for an
enhanced multi-frame file and a DICOM SEG, ``sitk.ReadImage`` of the file, which stacks its
frames in file order where ClinicalAI sorts them by position with highdicom). The
ratio is the price of the checks ClinicalAI adds (atomic writes, DICOM slice-position checks
with pydicom, segment metadata). Wall-clock numbers vary with the machine; ratios less so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from clinicalai.volume import Volume, read_volume, write_volume


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _enhanced_and_seg(vol: Volume, files, d: Path):
    import warnings

    import highdicom as hd
    import pydicom

    from clinicalai.volume.dicom_seg import write_dicom_seg

    sources = [pydicom.dcmread(f) for f in files]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's notes on the writer's optional attributes
        enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
            legacy_datasets=sources, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
            instance_number=1)
        (d / "enhanced").mkdir()
        enhanced.save_as(d / "enhanced" / "mr.dcm")
        labels = np.zeros(vol.shape, np.uint8)
        labels[vol.shape[0] // 4: 3 * vol.shape[0] // 4, 20:-20, 20:-20] = 1
        seg = write_dicom_seg(read_volume(d / "series").with_array(labels), files, d / "seg.dcm")
    return d / "enhanced" / "mr.dcm", seg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=3, default=(48, 192, 192), metavar=("Z", "Y", "X"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4000, size=tuple(args.size)).astype(np.int16)
    vol = Volume(arr, spacing=(0.8, 0.8, 3.0), origin=(10.0, -20.0, 5.0),
                 direction=Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix(), modality="MR")
    image = vol.to_sitk()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for name in ("v.nii", "v.nii.gz", "v.nrrd"):
            ours_w = best_of(lambda: write_volume(vol, d / name), args.repeat)
            ref_w = best_of(lambda: sitk.WriteImage(image, str(d / f"ref_{name}"), name != "v.nii"), args.repeat)
            ours_r = best_of(lambda: read_volume(d / name), args.repeat)
            ref_r = best_of(lambda: sitk.ReadImage(str(d / name)), args.repeat)
            rows += [(f"write {name}", ours_w, ref_w), (f"read {name}", ours_r, ref_r)]
        write_volume(vol, d / "series")
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d / "series"))

        def ref_series():
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            reader.Execute()

        rows.append(("read DICOM series", best_of(lambda: read_volume(d / "series"), args.repeat),
                     best_of(ref_series, args.repeat)))
        # the same slices as one enhanced multi-frame file, and a DICOM SEG of half of them:
        # ClinicalAI reads both with highdicom (frames sorted by position), SimpleITK stacks frames
        enhanced, seg = _enhanced_and_seg(vol, files, d)
        rows.append(("read enhanced file", best_of(lambda: read_volume(enhanced), args.repeat),
                     best_of(lambda: sitk.ReadImage(str(enhanced)), args.repeat)))
        rows.append(("read DICOM SEG", best_of(lambda: read_volume(seg), args.repeat),
                     best_of(lambda: sitk.ReadImage(str(seg)), args.repeat)))
    print(f"volume {tuple(args.size)} int16, best of {args.repeat}")
    print(f"{'operation':<22}{'ClinicalAI s':>14}{'SimpleITK s':>14}{'ratio':>8}")
    for op, ours, ref in rows:
        print(f"{op:<22}{ours:>14.4f}{ref:>14.4f}{ours / ref:>8.2f}")


if __name__ == "__main__":
    main()
