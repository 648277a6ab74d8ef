"""Time the evidence correction of fully corrupted cardiac phantoms and save what it decided, so
that two checkouts can be compared (a speed-up must not change a single pixel or score).

For each seed, ``cardiac_case(seed, "ED")``'s mask gets a corruption on every slice
(:func:`clinicalai.segcorrect.corruptions.corrupt_volume`, ``probability=1``) and is corrected
with the bundled ``cardiac-nvae``, the image as evidence, ``strategy="evidence"`` (no
probabilities: the candidate pool's largest path). One torch thread.

    python benchmarks/correction_snapshot.py OUT.npz            # in each checkout
    python benchmarks/correction_snapshot.py --compare A.npz B.npz

``OUT.npz`` holds the final masks, ``OUT.npz.json`` the per-slice reports (decision, source,
score, ranked candidates); ``--compare`` says whether both are identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

SEEDS = (1000, 1001, 3000, 3001)


def snapshot(out: str) -> float:
    import torch

    from clinicalai.models import load_model
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.segcorrect.corruptions import corrupt_volume
    from clinicalai.segcorrect.pipeline import correct_mask

    torch.set_num_threads(1)
    corrector = load_model("cardiac-nvae", device="cpu")
    finals, reports, seconds = {}, {}, 0.0
    for seed in SEEDS:
        case = cardiac_case(seed, "ED")
        bad, _ = corrupt_volume(np.asarray(case.labels.array), seed=seed, probability=1.0)
        start = time.perf_counter()
        result = correct_mask(case.labels.with_array(bad.astype(np.uint8)), corrector, image=case.image, strategy="evidence")
        seconds += time.perf_counter() - start
        finals[str(seed)] = np.asarray(result.final.array)
        reports[str(seed)] = [{k: v for k, v in s.__dict__.items() if k != "ranking"} for s in result.slices]
    np.savez(out, **finals)
    with open(out + ".json", "w") as f:
        json.dump(reports, f, default=str, sort_keys=True)
    return seconds


def same(a: str, b: str) -> bool:
    ma, mb = np.load(a), np.load(b)
    masks = sorted(ma.files) == sorted(mb.files) and all(np.array_equal(ma[k], mb[k]) for k in ma.files)
    with open(a + ".json") as fa, open(b + ".json") as fb:
        reports = json.load(fa) == json.load(fb)
    print(f"final masks identical: {masks}; per-slice reports identical: {reports}")
    return masks and reports


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="where to save the snapshot (.npz)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two snapshots to compare")
    args = parser.parse_args(argv)
    if args.compare:
        return 0 if same(*args.compare) else 1
    if not args.out:
        parser.error("give OUT.npz or --compare A B")
    print(f"evidence correction of {len(SEEDS)} corrupted phantoms: {snapshot(args.out):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
