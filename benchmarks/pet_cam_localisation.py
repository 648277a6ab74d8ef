"""Where do the PET fold models' Grad-CAM maps point? Recurrence phantoms not used in training.

    .venv/bin/python benchmarks/pet_cam_localisation.py [--model M ...] [--n 20]

For the demo case (seed 4242, scanner A, brain mask computed from the PET as in
``clinicalai demo``) and ``n - 1`` more recurrence phantoms (seeds 9100..., scanners A and B
alternating, their true brain masks given), :func:`clinicalai.pet.workflow.predict_pet` with
``cam=True`` gives the fold-mean Grad-CAM on the PET grid; it is scored against the phantom's
lesion with :func:`clinicalai.attribution.metrics.score_map` (inside the true brain mask):

- ``peak_in_lesion``: the map's maximum over the whole volume lies in the lesion;
- ``peak_mm``: distance (mm) from that maximum to the nearest lesion voxel;
- ``auroc``: AUROC of the map for lesion vs other brain voxels;
- ``above5``: share of the volume where the map is above 5 % of its peak;
- ``inside_true`` / ``inside_engine``: share of the map's energy inside the true brain mask /
  the engine's ``cam_inside_brain_fraction`` (its own mask);
- ``p``: P(recurrence).

Seeds: the demo's training set (``train_demo --family mix --n 160``, seed 7) is phantom seeds 700021-700180.
Prints one line per case and the means (``docs/pet.md`` quotes them).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main(argv=None) -> int:
    from scipy import ndimage

    from clinicalai.attribution.metrics import score_map
    from clinicalai.pet.workflow import load_pet_models, predict_pet
    from clinicalai.phantoms.pet import pet_case

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="fold model (default: the bundled demo models)")
    ap.add_argument("--n", type=int, default=20)
    args = ap.parse_args(argv)
    models = load_pet_models(args.model, device="cpu")
    rows = []
    for k, seed in enumerate([4242] + [9100 + i for i in range(args.n - 1)]):
        demo = seed == 4242
        case = pet_case(seed, recurrence=True, scanner="A" if demo else "AB"[k % 2])
        r = predict_pet(case.image, models, brain_mask=None if demo else case.brain_mask, cam=True)
        cam = r.cam.array.astype(np.float64)
        brain, lesion = case.brain_mask.array > 0, case.lesion.array > 0
        dist = ndimage.distance_transform_edt(~lesion, sampling=np.asarray(case.image.spacing)[::-1])
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        scored = score_map(cam, lesion, mask=brain)
        rows.append({
            "seed": seed, "scanner": case.scanner, "p": round(r.probability, 3),
            "peak_in_lesion": bool(lesion[peak]), "peak_mm": round(float(dist[peak]), 1),
            "auroc": round(scored["auroc"], 3), "above5": round(float((cam > 0.05 * cam.max()).mean()), 3),
            "inside_true": round(float(cam[brain].sum() / cam.sum()), 3),
            "inside_engine": round(r.cam_inside_brain_fraction, 3),
        })
        print(json.dumps(rows[-1]), flush=True)
    keys = ("p", "peak_in_lesion", "peak_mm", "auroc", "above5", "inside_true", "inside_engine")
    print("mean", json.dumps({k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys}))
    print("max peak_mm", max(r["peak_mm"] for r in rows), "; classified recurrence", sum(r["p"] >= 0.5 for r in rows),
          "of", len(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
