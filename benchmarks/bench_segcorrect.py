"""SegCorrect speed and memory: correct_mask and the whole pipeline vs a plain MONAI loop.

A synthetic short-axis volume of 10 slices of 256 x 256 goes through

- ``baseline``: a plain inference loop of the same segmenter network (MONAI UNet from the
  bundled card), 128 x 128 slices, batch 16, ``torch.inference_mode`` (no preprocessing, no
  mapping back: the reference cost of the network alone);
- ``segment``: :func:`~clinicalai.segcorrect.segmenter.segment_volume` (two passes, exact inverse);
- ``correct``: :func:`~clinicalai.segcorrect.pipeline.correct_mask` on the segmenter's mask;
- ``pipeline``: :func:`~clinicalai.segcorrect.pipeline.run_segcorrect` (segment + correct);
- ``correct, evidence``: ``correct_mask(strategy="evidence")`` with the segmenter's probabilities
  on a held-out-family stack whose mask is the segmenter's output with synthetic corruptions
  on every slice (all kinds of :mod:`clinicalai.segcorrect.corruptions`: the domain-randomised
  segmenter leaves this stack valid, and a valid slice never builds candidates; most slices
  invalid is the worst case for the candidate search; the count is printed), without the latent-space search (:mod:`clinicalai.segcorrect.latent`), with its
  posterior draws only (``latent_steps=0``), and with the draws and the optimisation of the
  codes (the default);
- ``correct, evidence, mask only`` / ``+ image``: the same stack's mask without the segmenter's
  probabilities (a mask from another tool), judged by agreement and neighbours alone, then with
  the image as evidence (intensity model, candidates refined on the image).

Timings are medians of ``--repeat`` runs, reported as ratios to the baseline measured in the
same process; peak memory is the Python-heap peak (``tracemalloc``) plus, on CUDA, the peak
allocated GPU memory. Run: ``python benchmarks/bench_segcorrect.py [--device cpu|cuda] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from typing import Callable, Dict, Tuple



def _measure(fn: Callable[[], object], repeat: int, device: str) -> Tuple[float, float, float]:
    import torch

    fn()  # warm-up (allocations, lazy imports, cuDNN autotuning)
    times = []
    tracemalloc.start()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gpu = torch.cuda.max_memory_allocated() / 2 ** 20 if device.startswith("cuda") else 0.0
    return statistics.median(times), peak / 2 ** 20, gpu


def main(argv=None) -> Dict[str, Dict[str, float]]:
    import torch

    from clinicalai.models import bundled_model, load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.pipeline import correct_mask, run_segcorrect
    from clinicalai.segcorrect.segmenter import segment_volume

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--corrector", default=None, help="corrector (default: bundled cardiac-nvae)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    case = cardiac_case(7, "ED", n_slices=10, size=(256, 256))
    image = case.image
    segmenter = load_model(bundled_model("cardiac-unet"), device=args.device)
    corrector = load_model(args.corrector or bundled_model("cardiac-nvae"), device=args.device)
    mask = segment_volume(image, segmenter).labels
    from clinicalai.phantoms.cardiac_heldout import heldout_cardiac_case

    from clinicalai.segcorrect.corruptions import CORRUPTION_SETS, corrupt_volume
    from clinicalai.segcorrect.validity import check_slice

    hard_image = heldout_cardiac_case(0, n_slices=10).image
    hard = segment_volume(hard_image, segmenter)
    hard_labels = hard.labels.with_array(
        corrupt_volume(hard.labels.array, 0, CORRUPTION_SETS["all"], probability=1.0)[0].astype(hard.labels.array.dtype))
    invalid = sum(not check_slice(z).valid for z in hard_labels.array if z.any())

    net = segmenter.module
    x = torch.rand(image.shape[0], 1, 128, 128, device=args.device)

    def baseline():
        with torch.inference_mode():
            for s in range(0, x.shape[0], 16):
                net(x[s:s + 16]).softmax(1).cpu()

    rows = {
        "baseline (MONAI UNet loop)": baseline,
        "segment": lambda: segment_volume(image, segmenter),
        "correct": lambda: correct_mask(mask, corrector),
        "pipeline (segment + correct)": lambda: run_segcorrect(image, segmenter, corrector),
        "correct, evidence, no latent": lambda: correct_mask(hard_labels, corrector, strategy="evidence",
                                                             probabilities=hard.probabilities, latent_decodes=0,
                                                             latent_steps=0),
        "correct, evidence + latent draws": lambda: correct_mask(hard_labels, corrector, strategy="evidence",
                                                                 probabilities=hard.probabilities, latent_steps=0),
        "correct, evidence + latent": lambda: correct_mask(hard_labels, corrector, strategy="evidence",
                                                           probabilities=hard.probabilities),
        "correct, evidence, mask only": lambda: correct_mask(hard_labels, corrector, strategy="evidence"),
        "correct, evidence + image": lambda: correct_mask(hard_labels, corrector, image=hard_image,
                                                          strategy="evidence"),
    }
    results: Dict[str, Dict[str, float]] = {}
    for name, fn in rows.items():
        t, mem, gpu = _measure(fn, args.repeat, args.device)
        results[name] = {"seconds": t, "peak_mib": mem, "gpu_peak_mib": gpu}
    base = results["baseline (MONAI UNet loop)"]["seconds"]
    print(f"SegCorrect, 10 slices of 256 x 256, device {args.device}, {args.threads} threads, median of {args.repeat}; "
          f"evidence rows: {invalid} of {hard_labels.shape[0]} slices invalid")
    print(f"{'step':<34} {'s/volume':>9} {'x baseline':>11} {'peak MiB':>9} {'GPU MiB':>8}")
    for name, r in results.items():
        print(f"{name:<34} {r['seconds']:9.3f} {r['seconds'] / base:11.1f} {r['peak_mib']:9.1f} {r['gpu_peak_mib']:8.1f}")
        r["ratio_to_baseline"] = r["seconds"] / base
    latent = results["correct, evidence + latent"]["seconds"] / results["correct, evidence, no latent"]["seconds"]
    draws = results["correct, evidence + latent draws"]["seconds"] / results["correct, evidence, no latent"]["seconds"]
    print(f"latent-space search (draws + optimisation): evidence correction x {latent:.2f} of the same without it "
          f"(draws only: x {draws:.2f})")
    with_image = results["correct, evidence + image"]["seconds"] / results["correct, evidence, mask only"]["seconds"]
    print(f"image as evidence (no probabilities): x {with_image:.2f} of the mask alone")
    return results


if __name__ == "__main__":
    main()
