"""Time and memory of ``segment_volume`` against a plain MONAI inference loop, same network.

Volume: a cardiac phantom of 10 short-axis slices of 256 x 256. The reference is what a
MONAI user would write by hand for the same network: percentile normalisation, MONAI
``Resize`` of every slice to 128 x 128, one forward pass over the slices, softmax, ``Resize``
back. ``segment_volume`` does more (a coarse pass to find the heart, a crop, a second pass,
the exact inverse mapping, per-slice confidence), so a ratio near 2 is expected.

Run:  .venv/bin/python benchmarks/bench_segment.py [--repeats 5] [--device cpu] [--threads 2]
Prints a table; ratios are to the plain loop in the same process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plain_monai_loop(image: np.ndarray, module, device: str) -> np.ndarray:
    """The reference: resize slices to 128, one forward pass, softmax, resize back (labels)."""
    import torch
    from monai.transforms import Resize, ScaleIntensityRangePercentiles

    z, y, x = image.shape
    norm = ScaleIntensityRangePercentiles(lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True)(torch.from_numpy(image))
    small = Resize((128, 128), mode="bilinear")(norm)  # (z, 128, 128): z is the channel axis here
    with torch.inference_mode():
        probs = torch.softmax(module(torch.as_tensor(small)[:, None].to(device)), 1)
    c = probs.shape[1]
    big = Resize((y, x), mode="bilinear")(probs.cpu().reshape(z * c, 128, 128))  # slices x classes as channels
    return torch.as_tensor(big).reshape(z, c, y, x).argmax(1).numpy().astype(np.uint8)


def measure(fn, repeats: int):
    """Median seconds, and the tracemalloc peak (numpy and Python buffers; not torch's)."""
    times = []
    fn()  # warm-up (lazy imports, allocator)
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak / 2**20


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024
    raise KeyError(key)


def peak_rss_delta(fn) -> float:
    """Peak resident memory (MB) above the current level while ``fn`` runs, counting torch's
    buffers too (tracemalloc does not see them). Linux: resets the high-water mark through
    ``/proc/self/clear_refs``; NaN elsewhere."""
    try:
        before = _status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        fn()
        return _status_mb("VmHWM") - before
    except (OSError, KeyError):
        return float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="segmenter .pt (default: bundled cardiac-unet)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from clinicalai.models import bundled_model, load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.segmenter import segment_volume

    model = load_model(args.model or bundled_model("cardiac-unet"), device=args.device)
    case = cardiac_case(20260, "ED", size=(256, 256), n_slices=10)
    image = case.image.array

    def dice(pred):
        return float(np.mean([2 * ((pred == k) & (case.labels.array == k)).sum()
                              / max(1, (pred == k).sum() + (case.labels.array == k).sum()) for k in (1, 2, 3)]))

    rows = []
    ref_t, ref_m = measure(lambda: plain_monai_loop(image, model.module, model.device), args.repeats)
    rows.append(("plain MONAI loop (1 pass, no crop)", ref_t, ref_m, dice(plain_monai_loop(image, model.module, model.device))))
    seg_t, seg_m = measure(lambda: segment_volume(case.image, model), args.repeats)
    out = segment_volume(case.image, model)
    rows.append(("segment_volume (coarse + crop + fine)", seg_t, seg_m, dice(out.labels.array)))
    one_t, one_m = measure(lambda: segment_volume(case.image, model, two_pass=False), args.repeats)
    rows.append(("segment_volume two_pass=False", one_t, one_m, dice(segment_volume(case.image, model, two_pass=False).labels.array)))

    rss = [peak_rss_delta(lambda: plain_monai_loop(image, model.module, model.device)),
           peak_rss_delta(lambda: segment_volume(case.image, model)),
           peak_rss_delta(lambda: segment_volume(case.image, model, two_pass=False))]
    print(f"volume {image.shape} (z, y, x), device {model.device}, torch threads {args.threads}, "
          f"median of {args.repeats}")
    print(f"{'method':40s} {'s/volume':>9s} {'x plain':>8s} {'+RSS MB':>8s} {'x plain':>8s} {'py MB':>7s} {'Dice':>6s}")
    for (name, t, m, d), r in zip(rows, rss):
        print(f"{name:40s} {t:9.3f} {t / ref_t:8.2f} {r:8.1f} {r / max(rss[0], 1e-6):8.2f} {m:7.1f} {d:6.3f}")
    print(f"+RSS: peak resident memory above the level before the call (process max RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB); "
          "py MB: tracemalloc peak (numpy/Python buffers only)")
    print("segment_volume timings:", {k: round(v, 4) for k, v in out.timings.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
