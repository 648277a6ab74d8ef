"""The static scan of a dynamic PET window against reading the whole 4D file (same process, same file).

    .venv/bin/python benchmarks/bench_dynamic_pet.py [--size 127 200 200] [--frames 26] [--repeat 3]

A dynamic BIDS-PET NIfTI (``.nii.gz``, float32, ``--frames`` frames of ``--size`` voxels z y x;
default a 60 min protocol: 6 x 30 s, 4 x 60 s, 4 x 120 s, 12 x 240 s) is written once, then:

- reference: the whole 4D array read as a reader without time-point support would
  (``np.asanyarray(nibabel.load(f).dataobj)``);
- ``static_from_dynamic(f, (10, 30))``: the frames of 10-30 min read as one slab, averaged,
  decay-corrected if needed, with its tags;
- ``read_volume(f, frame=K)``: one time point.

Time is the best of ``--repeat``; peak memory is the numpy allocations' peak (``tracemalloc``;
nibabel's arrays are numpy, so both sides are counted the same way). Ratios to the reference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

#: the default protocol: frame lengths (s), 60 min in all
PROTOCOL_S = [30.0] * 6 + [60.0] * 4 + [120.0] * 4 + [240.0] * 12


def measure(fn, repeat: int):
    best, peak = float("inf"), 0
    for _ in range(repeat):
        tracemalloc.start()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return best, peak / 2**20


def main(argv=None) -> int:
    import nibabel as nib

    from clinicalai.pet.dynamic import static_from_dynamic
    from clinicalai.volume import read_volume

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=3, default=[127, 200, 200], metavar=("Z", "Y", "X"))
    ap.add_argument("--frames", type=int, default=len(PROTOCOL_S))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    durations = (PROTOCOL_S * (args.frames // len(PROTOCOL_S) + 1))[: args.frames]
    starts = list(np.concatenate([[0.0], np.cumsum(durations)[:-1]]))
    z, y, x = args.size
    rng = np.random.default_rng(0)
    base = rng.uniform(1000.0, 5000.0, (x, y, z)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sub-01_pet.nii.gz"
        frames = np.stack([base * (0.2 + 0.8 * (1 - np.exp(-s / 600.0))) for s in starts], axis=-1)
        nib.save(nib.Nifti1Image(frames, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
        del frames
        path.with_name("sub-01_pet.json").write_text(json.dumps({
            "Units": "Bq/mL", "TracerRadionuclide": "F18", "InjectionStart": 0, "TimeZero": "09:00:00",
            "FrameTimesStart": starts, "FrameDuration": durations, "ImageDecayCorrected": True,
            "ImageDecayCorrectionTime": 0, "AttenuationCorrection": "CT-based"}))
        size_mb = path.stat().st_size / 2**20
        whole = measure(lambda: np.asanyarray(nib.load(str(path)).dataobj), args.repeat)
        static = measure(lambda: static_from_dynamic(path, (10, 30)), args.repeat)
        used = static_from_dynamic(path, (10, 30)).metadata["static_from_frames"]["frames"]
        one = measure(lambda: read_volume(path, frame=used[-1]), args.repeat)
    print(f"dynamic PET: {args.frames} frames of {z}x{y}x{x} float32 ({args.frames * z * y * x * 4 / 2**20:.0f} MiB of voxels, "
          f"{size_mb:.0f} MiB .nii.gz); window 10-30 min = frames {used[0]}-{used[-1]}")
    print(f"{'step':52s} {'seconds':>9s} {'x ref':>7s} {'peak MiB':>9s} {'x ref':>7s}")
    rows = [("whole 4D array (nibabel; the reference)", whole),
            ("static_from_dynamic(f, (10, 30))", static),
            (f"read_volume(f, frame={used[-1]})", one)]
    for label, (sec, mib) in rows:
        print(f"{label:52s} {sec:9.2f} {sec / whole[0]:7.2f} {mib:9.0f} {mib / whole[1]:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
