"""What PetRecurrence's Grad-CAM overlay paints, before and after issue 16 item 9.

The fold Grad-CAMs are each scaled to their own peak, so the panels used to show a full-scale
map on every case and hid values below ``threshold x peak``. The panels now show
``PetResult.cam_evidence()`` (Grad-CAM x P(recurrence), brain only) with an absolute threshold.
This prints, per case kind of the held-out MNI-template PET phantoms (:mod:`clinicalai.phantoms.mni`,
no model trained on them), the mean volume painted at the default threshold inside the true
brain, outside it (scalp, background), and the share of the lesion painted.

Synthetic phantoms; demo models; not clinical. Usage::

    python scripts/pet_cam_display.py --n 16 --seed 0
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Dict, List

import numpy as np


def painted(mask: np.ndarray, brain: np.ndarray, lesion: np.ndarray, voxel_ml: float) -> Dict[str, float]:
    """Painted mL inside / outside ``brain`` and the painted share of ``lesion`` (NaN without one)."""
    return {"brain_ml": float((mask & brain).sum() * voxel_ml), "outside_ml": float((mask & ~brain).sum() * voxel_ml),
            "lesion": float(mask[lesion].mean()) if lesion.any() else float("nan")}


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="cases, alternately recurrence and not")
    parser.add_argument("--seed", type=int, default=0, help="first seed of the held-out family")
    args = parser.parse_args(argv)

    import torch

    from clinicalai.pet.calibration import CAM_EVIDENCE_THRESHOLD
    from clinicalai.pet.workflow import load_pet_models, predict_pet
    from clinicalai.phantoms.mni import mni_pet_case

    torch.set_num_threads(1)
    models = load_pet_models(device="cpu")
    rows: Dict[str, List[Dict[str, float]]] = defaultdict(list)
    for i in range(args.n):
        case = mni_pet_case(args.seed + i, recurrence=bool(i % 2))
        # the brain mask is computed, as in a panel run without one
        r = predict_pet(case.image, models, cam=True)
        brain, lesion = case.brain_mask.array > 0, (case.lesion.array > 0) & bool(case.label)
        voxel_ml = float(np.prod(case.image.spacing)) / 1000.0
        old = painted(r.cam.array >= CAM_EVIDENCE_THRESHOLD * r.cam.array.max(), brain, lesion, voxel_ml)
        new = painted(r.cam_evidence().array >= CAM_EVIDENCE_THRESHOLD, brain, lesion, voxel_ml)
        kind = "recurrence" if case.label else str(case.info.get("kind"))
        rows[kind].append({"p": r.probability, **{f"old_{k}": v for k, v in old.items()}, **{f"new_{k}": v for k, v in new.items()}})
        print(f"seed {args.seed + i}: {kind}, P {r.probability:.2f}, old {old}, new {new}", flush=True)

    print(f"\nthreshold {CAM_EVIDENCE_THRESHOLD}; cases {args.n} from seed {args.seed}\n")
    print("| kind | cases | mean P | 0.2 x peak: brain mL | outside mL | lesion painted | Grad-CAM x P: brain mL | outside mL | lesion painted |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, rs in sorted(rows.items()):
        m = {k: np.nanmean([r[k] for r in rs]) if any(np.isfinite(r[k]) for r in rs) else float("nan") for k in rs[0]}
        les = lambda v: "-" if not np.isfinite(v) else f"{v:.2f}"  # noqa: E731
        print(f"| {kind} | {len(rs)} | {m['p']:.2f} | {m['old_brain_ml']:.0f} | {m['old_outside_ml']:.0f} | {les(m['old_lesion'])} "
              f"| {m['new_brain_ml']:.0f} | {m['new_outside_ml']:.0f} | {les(m['new_lesion'])} |")


if __name__ == "__main__":
    main()
