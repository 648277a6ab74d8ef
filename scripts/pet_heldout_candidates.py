"""Held-out PET figures of candidate fold models, before they are bundled (issue 19).

``scripts/heldout_figures.py --pet-only`` measures the bundled folds; this script measures the
folds in each given folder (``pet-*-fold*.pt`` with their cards, e.g. the ``--out`` of
``python -m clinicalai.pet.train_demo``) on the same held-out MNI-template PET cases (seeds
``seed .. seed + n - 1``, alternately not recurrence / recurrence, the phantom's brain mask,
Grad-CAM on) with the same definitions (AUC, P < 0.5 on the non-recurrence cases, Grad-CAM
maximum in the lesion or within 10 mm), without the calibration fit. Usage::

    python scripts/pet_heldout_candidates.py --n 40 --seed 0 Resources/Models /tmp/pet-mix
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout_figures import CAM_TOLERANCE_MM, _auc, cam_max_distance_mm  # noqa: E402


def candidate_figures(folder: Path, cases: Sequence) -> Dict[str, object]:
    """The held-out PET figures of the fold models in ``folder`` on ``cases`` (``PetCase``)."""
    from clinicalai.pet.workflow import load_pet_models, predict_pet

    paths = sorted(folder.glob("pet-*-fold*.pt"))
    if not paths:
        raise SystemExit(f"no pet-*-fold*.pt in {folder}")
    models = load_pet_models(paths, device="cpu")
    labels: List[int] = []
    probs: List[float] = []
    dists: List[float] = []
    for i, case in enumerate(cases):
        res = predict_pet(case.image, models, brain_mask=case.brain_mask, cam=True)
        labels.append(case.label)
        probs.append(res.probability)
        line = f"  {folder.name} case {i}: {case.info['kind']:<11} P={res.probability:.3f}"
        if case.label == 1:
            dists.append(cam_max_distance_mm(res.cam.array, case.lesion.array, case.image.spacing))
            ml = float(case.lesion.array.sum() * np.prod(case.image.spacing) / 1000.0)
            line += f" cam-max {dists[-1]:.1f} mm from a {ml:.2f} mL lesion (TBR {case.tbr_true:.1f})"
        print(line, file=sys.stderr)
    neg = [p for p, y in zip(probs, labels) if y == 0]
    return {"models": str(folder), "n": len(cases), "auc": _auc(labels, probs), "neg_mean": float(np.mean(neg)),
            "neg_below_half": float(np.mean([p < 0.5 for p in neg])),
            "cam_within": float(np.mean([d <= CAM_TOLERANCE_MM for d in dists])),
            "cam_inside": float(np.mean([d == 0 for d in dists])), "cam_median_mm": float(np.median(dists))}


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="folders of fold models (pet-*-fold*.pt + .json)")
    ap.add_argument("--n", type=int, default=16, help="held-out cases (half recurrence)")
    ap.add_argument("--seed", type=int, default=0, help="first seed of the MNI family's held-out stream")
    args = ap.parse_args(argv)
    if args.n < 2:
        ap.error("--n must be at least 2 (one case of each class)")
    empty = [str(f) for f in args.folders if not sorted(f.glob("pet-*-fold*.pt"))]
    if empty:  # before minutes of phantoms
        ap.error(f"no pet-*-fold*.pt in {', '.join(empty)}")
    import torch

    from clinicalai.phantoms.mni import mni_pet_case

    torch.set_num_threads(1)  # small networks on a shared CPU
    cases = [mni_pet_case(args.seed + i, recurrence=bool(i % 2)) for i in range(args.n)]
    print(json.dumps([candidate_figures(f, cases) for f in args.folders], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
