"""How much Dice a correction of the invalid slices can add at most, on the held-out family.

SegCorrect keeps every valid raw slice as it is and changes only invalid ones (issue #14), so
its gain on a segmenter's output is bounded by what the invalid slices lose. This script
segments held-out phantoms (``clinicalai.phantoms.cardiac_heldout``) as ``clinicalai evaluate
segmenter`` does and reports, per structure, the mean volume Dice of

- the raw mask,
- the evidence strategy's result,
- the raw mask with every invalid slice replaced by the truth (the ceiling of any correction
  that leaves valid slices alone),
- the truth on the valid slices and the raw mask on the invalid ones (what is lost where
  the correction may not act),
- each invalid slice replaced by the valid candidate of the evidence strategy's pool with the
  fewest wrong pixels (:func:`wrong_pixels`; what choosing better among the candidates it has
  can reach).

It scores against the truth, so run it to bound a target, never to choose settings.

    python scripts/segcorrect_ceiling.py --phantoms 10 --seed 0
"""

from __future__ import annotations

import argparse
from typing import Dict, List

import numpy as np


def wrong_pixels(labels: np.ndarray, truth: np.ndarray) -> int:
    """Pixels of a slice in the symmetric difference of ``labels`` and ``truth``, summed over the
    heart's structures: additive over slices, so the candidate with the fewest is the best
    choice for the volume Dice (the mean slice Dice is not: it overrates small structures)."""
    return int(sum(np.count_nonzero((labels == v) != (truth == v)) for v in (1, 2, 3)))


def ceiling_rows(n: int, seed: int):
    """``({mask name: {structure: mean volume Dice}}, mean share of invalid raw slices)`` over
    held-out phantoms ``seed .. seed + n - 1`` (the rows of the module docstring)."""
    import torch

    import clinicalai.segcorrect.pipeline as pipeline
    from clinicalai.models import load_model
    from clinicalai.segcorrect.evaluate import volume_metrics
    from clinicalai.segcorrect.evaluate_segmenter import family_case
    from clinicalai.segcorrect.labels import CARDIAC_NAMES
    from clinicalai.segcorrect.pipeline import keep_largest_for_run, run_segcorrect
    from clinicalai.segcorrect.validity import check_slice

    torch.set_num_threads(1)
    segmenter, corrector = load_model("cardiac-unet", device="cpu"), load_model("cardiac-nvae", device="cpu")
    keep = keep_largest_for_run(segmenter.card, None, "evidence", True)
    rows: Dict[str, List[Dict[str, float]]] = {
        k: [] for k in ("raw", "evidence", "invalid -> truth", "valid -> truth", "invalid -> best candidate")}
    invalid_share = []
    seen = []
    original = pipeline.candidates_for_slice

    def recording(raw, *rest, **kw):  # observe the real run's candidates, change nothing
        ranking = original(raw, *rest, **kw)
        seen.append((np.array(raw), ranking))
        return ranking

    pipeline.candidates_for_slice = recording
    try:
        for case_seed in range(seed, seed + n):
            case = family_case("heldout", case_seed)
            seen.clear()
            res = run_segcorrect(case.image, segmenter, corrector, strategy="evidence", keep_largest=keep)
            raw, truth = res.raw.array.astype(np.int64), case.labels.array.astype(np.int64)
            heart = [z for z in range(raw.shape[0]) if raw[z].any() or truth[z].any()]
            invalid = [z for z in heart if not check_slice(raw[z]).valid]
            invalid_share.append(len(invalid) / max(len(heart), 1))
            ceiling, lost, best = raw.copy(), truth.copy(), raw.copy()
            ceiling[invalid] = truth[invalid]
            lost[invalid] = raw[invalid]
            if len(seen) != len(invalid) or any(not np.array_equal(shown, raw[z]) for z, (shown, _) in zip(invalid, seen)):
                raise SystemExit(f"seed {case_seed}: the correction's candidates are not those of the raw mask's "
                                 "invalid slices, in order (no per-slice oracle)")
            for z, (_, ranking) in zip(invalid, seen):
                pool = [c.labels.astype(np.int64) for c in ranking if c.validity.valid]
                if pool:
                    best[z] = min(pool, key=lambda lab: wrong_pixels(lab, truth[z]))
            for name, mask in (("raw", raw), ("evidence", res.final.array.astype(np.int64)),
                               ("invalid -> truth", ceiling), ("valid -> truth", lost),
                               ("invalid -> best candidate", best)):
                rows[name].append(volume_metrics(mask, truth, case.labels.spacing)["dice"])
    finally:
        pipeline.candidates_for_slice = original
    means = {name: {k: float(np.mean([d[k] for d in dice])) for k in CARDIAC_NAMES} for name, dice in rows.items()}
    return means, float(np.mean(invalid_share))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantoms", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    means, invalid = ceiling_rows(args.phantoms, args.seed)
    names = list(next(iter(means.values())))
    print(f"held-out family, seeds {args.seed}-{args.seed + args.phantoms - 1}; "
          f"invalid raw slices {100 * invalid:.1f} % (mean per case)")
    print("| mask | " + " | ".join(names) + " | mean |")
    print("|" + " --- |" * (len(names) + 2))
    for name, per in means.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in per.values()) + f" | {np.mean(list(per.values())):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
