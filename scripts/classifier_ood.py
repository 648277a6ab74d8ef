"""The feature-space reference of a slice classifier (``clinicalai.attribution.ood``): how far
an image may lie from its training slices before ``explain`` and the AttributionViewer say the
image is unlike them.

    python scripts/classifier_ood.py MODEL.pt [--phantoms 24] [--seed 0] [--family mix --mni N --t1-share S] [--write-card]

The training volumes are rebuilt from the recipe the model was trained with (the options of
``clinicalai train classifier``: give the same ones), at the training grid and at the phantom
generator's 2 mm; the validation volumes are brain-lesion phantoms of seeds 2000.. at both (no
trainer draws them). Prints the reference's figures and, for
information, the distances of held-out MNI-template phantoms, a real T1 brain (nibabel's
``anatomical.nii``), a cardiac MRI phantom and noise. ``--write-card`` stores the reference as
the card's ``ood`` (``make models`` does, after training the bundled classifier).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--phantoms", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--family", default="phantom", choices=("phantom", "mix"))
    ap.add_argument("--mni", type=int, default=0)
    ap.add_argument("--t1-share", type=float, default=0.5)
    ap.add_argument("--validation", type=int, default=16, help="validation phantoms (seeds 2000..)")
    ap.add_argument("--write-card", action="store_true")
    args = ap.parse_args(argv)

    import nibabel as nib
    import torch

    from clinicalai.attribution.constrained import card_grid_mm, make_cases, make_mni_cases
    from clinicalai.attribution.ood import feature_reference, volume_features
    from clinicalai.models.ood import median_distance
    from clinicalai.models import load_model
    from clinicalai.models.card import store_card_entry
    from clinicalai.phantoms.brain import brain_dataset
    from clinicalai.phantoms.cardiac import cardiac_case
    from clinicalai.phantoms.mni import mni_brain_case
    from clinicalai.volume import read_volume

    torch.manual_seed(0)
    model = load_model(args.model, device="cpu")
    grid = card_grid_mm(model.card)
    # the family at the classifier's grid (what it was trained on) and at the phantom generator's
    # own 2 mm geometry (what the demo, the browser's sample and `evaluate` give it): the network
    # reads slices at their own voxel size, so both are images it is meant to take
    half = max(args.phantoms // 2, 2)
    train = [c.image for c in make_cases(args.phantoms, args.seed, grid_mm=grid)]
    train += [c.image for c in brain_dataset(half, seed=args.seed)]
    data = (f"{args.phantoms} brain-lesion phantoms at the {grid:g} mm training grid and {half} at the generator's "
            f"2 mm (seed {args.seed})")
    if args.family == "mix":
        train += [c.image for c in make_mni_cases(args.mni, args.seed, grid, args.t1_share)]
        data += f" + {args.mni} MNI-template phantoms of the training stream (T1-like share {args.t1_share:g})"
    val = [c.image for c in make_cases(args.validation // 2, 2000, grid_mm=grid)]
    val += [c.image for c in brain_dataset(args.validation // 2, seed=2000)]
    reference = feature_reference(model, train, val, data=data)
    reference["command"] = "python scripts/classifier_ood.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    location, precision = np.asarray(reference["location"]), np.asarray(reference["precision"])
    v = reference["validation"]
    print(f"{model.card.name}: {reference['training']['items']} training slices; validation phantoms "
          f"{v['min']:.2f}-{v['max']:.2f} (median {v['median']:.2f}); threshold {reference['threshold']:.2f}")
    others = {
        "MNI-template FLAIR-like (seeds 100-107)": [mni_brain_case(100 + i, pathological=bool(i % 2), contrast="FLAIR", spacing=(4, 4, 4)).image for i in range(8)],
        "MNI-template T1-like (seeds 100-107)": [mni_brain_case(100 + i, pathological=bool(i % 2), contrast="T1", spacing=(4, 4, 4)).image for i in range(8)],
        "real T1 brain (nibabel anatomical.nii)": [read_volume(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii")],
        "cardiac MRI phantom": [cardiac_case(3).image],
    }
    others["noise"] = [others["cardiac MRI phantom"][0].with_array(np.random.default_rng(0).normal(size=others["cardiac MRI phantom"][0].shape).astype(np.float32))]
    for what, volumes in others.items():
        d = [median_distance(volume_features(model, vol), location, precision) for vol in volumes]
        flagged = sum(x > reference["threshold"] for x in d)
        print(f"  {what}: {min(d):.2f}-{max(d):.2f}, {flagged} of {len(d)} flagged")
    if args.write_card:
        print("card:", store_card_entry(Path(args.model).with_suffix(".json"), "ood", reference))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
