"""The feature-space reference of the PET fold models (``clinicalai.models.ood``), for fold
models trained before ``train_folds`` wrote one into every card: rebuilds the training data
from the recipe the folds were trained with (the options of ``python -m
clinicalai.pet.train_demo``: give the same ones), the same folds, and stores each fold's
``ood`` as training now does (:func:`clinicalai.pet.train.fold_feature_reference`).

    python scripts/pet_ood.py [--family mix --mni-fraction 0.75 --n 160 --seed 7] [--write-card]

Prints each fold's reference and, for information, the distances (as a multiple of each fold's
threshold) of held-out MNI-template PET phantoms, a real T1 brain MR given as a PET (nibabel's
``anatomical.nii``, negative values clipped), a cube of noise and a PET of the training family
at another scale.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="mix", choices=("ellipsoid", "mix"))
    ap.add_argument("--mni-fraction", type=float, default=0.75)
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--heldout", type=int, default=16, help="held-out MNI-template PET phantoms (seeds 0..)")
    ap.add_argument("--write-card", action="store_true")
    args = ap.parse_args(argv)

    import nibabel as nib
    import torch

    from clinicalai.models.card import store_card_entry
    from clinicalai.models.ood import card_reference, reference_distance
    from clinicalai.pet.preprocess import preprocess_from_card
    from clinicalai.pet.train import fold_feature_reference, load_inputs, read_pet_csv, stratified_folds
    from clinicalai.pet.workflow import bundled_pet_models, load_pet_models
    from clinicalai.phantoms.mni import mni_pet_case
    from clinicalai.phantoms.pet import write_pet_dataset
    from clinicalai.phantoms.pet_mix import write_mixed_pet_dataset
    from clinicalai.volume import read_volume

    paths = bundled_pet_models()
    models = load_pet_models(paths, device="cpu")
    config = models[0].card.training["config"]
    with tempfile.TemporaryDirectory(prefix="pet-ood-") as tmp:
        if args.family == "mix":
            csv_path = write_mixed_pet_dataset(Path(tmp) / "data", n=args.n, seed=args.seed, mni_fraction=args.mni_fraction)
        else:
            csv_path = write_pet_dataset(Path(tmp) / "data", n=args.n, seed=args.seed, balanced=True)
        rows = read_pet_csv(csv_path)
        inputs = load_inputs(rows, tuple(config["spacing_mm"]), tuple(config["size_xyz"]))
    labels = np.array([r.label for r in rows])
    train_idx = np.array([i for i, r in enumerate(rows) if r.split != "test"])
    test_idx = np.array([i for i, r in enumerate(rows) if r.split == "test"])
    folds = stratified_folds(labels[train_idx], [rows[i].scanner for i in train_idx], config["folds"], config["seed"])
    if len(folds) != len(models):
        raise SystemExit(f"{len(models)} bundled fold models, {len(folds)} folds in the recipe: give the recipe they were trained with")
    command = "python scripts/pet_ood.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    references = []
    for f, (m, (tr, va)) in enumerate(zip(models, folds)):
        reference = fold_feature_reference(m.module, inputs, train_idx[tr], np.concatenate([train_idx[va], test_idx]), f)
        reference["command"] = command
        references.append(reference)
        v = reference["validation"]
        print(f"{m.card.name}: {reference['training']['items']} training inputs; inputs it never trained on "
              f"{v['min']:.2f}-{v['max']:.2f} (median {v['median']:.2f}); threshold {reference['threshold']:.2f}")

    def ratios(volume, **options):
        out = []
        for m, reference in zip(models, references):
            pp = preprocess_from_card(volume, m.card, **options)
            out.append(reference_distance(m.module, torch.from_numpy(pp.input[None].astype(np.float32)), reference)
                       / reference["threshold"])
        return out

    heldout = [mni_pet_case(i, recurrence=bool(i % 2)) for i in range(args.heldout)]
    t1 = read_volume(Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii")
    first = heldout[0].image
    others = {
        f"held-out MNI-template PET phantoms (seeds 0-{args.heldout - 1})": [ratios(c.image, brain_mask=c.brain_mask) for c in heldout],
        "real T1 brain MR given as a PET": [ratios(t1.with_array(np.clip(t1.array, 0, None).astype(np.float32)), units="suv")],
        "noise (|normal| x the PET's 99th percentile)": [ratios(first.with_array(
            (np.abs(np.random.default_rng(0).normal(size=first.shape)) * float(np.percentile(first.array, 99))).astype(np.float32)))],
        "a held-out PET at 1/1000 of its activity": [ratios(first.with_array(first.array / 1000.0), brain_mask=heldout[0].brain_mask)],
    }
    print("distance / threshold per fold (flagged when > 1 for most folds):")
    for what, rs in others.items():
        rs = np.asarray(rs)
        flagged = int(np.sum(np.sum(rs > 1, axis=1) * 2 > rs.shape[1]))
        print(f"  {what}: {rs.min():.2f}-{rs.max():.2f}, {flagged} of {len(rs)} flagged")
    if args.write_card:
        for path, m, reference in zip(paths, models, references):
            if card_reference(m.card) is not None:
                print(f"{m.card.name}: replacing its ood reference")
            print("card:", store_card_entry(Path(path).with_suffix(".json"), "ood", reference))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
