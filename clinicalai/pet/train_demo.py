"""Train the bundled PetRecurrence demo fold models on PET phantoms.

    python -m clinicalai.pet.train_demo            # -> Resources/Models/pet-cnn3d-fold{0,1,2}.pt/.json

Writes a labelled phantom data set (NIfTI in Bq/mL + CSV, :func:`write_pet_dataset`) into a
temporary folder, runs :func:`clinicalai.pet.train.train_folds` (3 folds of a small CNN3D at
8 mm, 32 x 32 x 21 voxels, lr 1e-3, no weight decay, 20 epochs with the study's augmentation,
about a minute or two on two CPU cores) and copies the fold models with their cards into
``Resources/Models`` (the run's ``metrics.json`` is printed). The cards say: synthetic demo,
not for clinical use, and what the data set was (``training.data`` / ``family``).

``--family mix`` trains on ellipsoid and MNI-template phantoms instead
(:func:`clinicalai.phantoms.pet_mix.write_mixed_pet_dataset`: template cases of the training
stream only, never a held-out case; the cards then carry the template licence), and
``--spacing-mm`` sets a finer network grid over the same field of view. The bundled folds:
``--family mix --mni-fraction 0.75 --n 160 --epochs 30`` (``make models``; candidates and
held-out figures in ``docs/heldout.md``).

The network (:data:`DEMO_ARCH_KWARGS`) is chosen so that its Grad-CAM points at the lesion,
not only so that it classifies:

- two conv blocks (16, 32 channels): the Grad-CAM layer (the last block, ``features.2``)
  works on a 16 x 16 x 11 grid of 16 mm cells, where a 20-36 mm lesion is one to three
  cells; four blocks leave 4 x 4 x 3 cells of 64 mm;
- batch norm: min-max normalisation makes a scan with a hot lesion *globally* dimmer (the
  lesion becomes the maximum: mean brain input about 0.3 against 0.45 without one), and a
  network without normalisation learns that brightness of the whole head, with a bias-driven
  Grad-CAM floor over the whole volume and its top in the background. The study's
  affine-free instance norm removes the overall level too, but standardises each channel
  over a box that is mostly background, so about half of all tissue stays positive: a
  Grad-CAM floor of ~5 % of its peak on brain *and* scalp, which put half of its energy
  outside the brain (0.49 on 20 held-out recurrence phantoms); batch norm, with its learnt
  shift, 0.56, the map's peak within 8 mm of the lesion on all 20 with either
  (``benchmarks/pet_cam_localisation.py``);
- global *max* pooling (``pool_grid`` 1 x 1 x 1, ``pool="max"``): the answer rests on the
  strongest local response, i.e. one focal hot lesion anywhere in the brain;
- augmentation (translation, rotation, mirror, intensity) so position is no cue.

The previous demo (four blocks 8-16-16-16, no normalisation, 4 x 4 x 2 average-pool head, no
augmentation, 10 epochs) classified well but put about a quarter of its Grad-CAM inside the
brain, with its peak outside the brain on 14 of those 20 phantoms.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from ..models import BUNDLED_MODELS_DIR
from ..phantoms.pet import write_pet_dataset
from ..phantoms.pet_mix import data_description, write_mixed_pet_dataset
from ..progress import ConsoleProgress
from .preprocess import DEMO_SIZE_XYZ, DEMO_SPACING_MM
from .train import TrainConfig, train_folds

#: the demo network: CNN3D with two blocks, batch norm and a global max-pool head (module docstring)
DEMO_ARCH_KWARGS = {"channels": [16, 32], "pool_grid": [1, 1, 1], "pool": "max", "hidden": 32, "norm": "batch",
                    "dropout": 0.0}
DEMO_EPOCHS = 20
#: training phantom families: the ellipsoid family alone, or mixed with MNI-template cases of the
#: "train" stream (:mod:`clinicalai.phantoms.pet_mix`)
FAMILIES = ("ellipsoid", "mix")


def demo_size_xyz(spacing_mm: float) -> Tuple[int, int, int]:
    """Network grid (x, y, z voxels) covering the demo's field of view (DEMO_SIZE_XYZ x
    DEMO_SPACING_MM: 256 x 256 x 168 mm) at ``spacing_mm``, rounded up."""
    return tuple(int(math.ceil(n * s / spacing_mm - 1e-6)) for n, s in zip(DEMO_SIZE_XYZ, DEMO_SPACING_MM))


def _data_entries(args: argparse.Namespace) -> Dict[str, Any]:
    """The card's ``training`` entries that say what the data set was (not its temporary path)."""
    if args.family == "mix":
        return data_description(args.n, args.seed, args.mni_fraction)
    return {"data": f"{args.n} balanced clinicalai.phantoms.pet phantoms (seed {args.seed})", "family": "ellipsoid"}


def _copy_card(src: Path, dst: Path, training: Dict[str, Any]) -> None:
    """Copy a fold's card with ``training`` merged into its ``training`` entry; the weights
    (and so the card's sha256) are untouched."""
    card = json.loads(src.read_text())
    card["training"] = {**card.get("training", {}), **training}
    dst.write_text(json.dumps(card, indent=2) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clinicalai.pet.train_demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=BUNDLED_MODELS_DIR)
    ap.add_argument("--n", type=int, default=60, help="number of phantoms (default 60, 20 %% held out as test)")
    ap.add_argument("--family", choices=FAMILIES, default="ellipsoid",
                    help="training phantoms: ellipsoid heads only, or mixed with MNI-template heads")
    ap.add_argument("--mni-fraction", type=float, default=0.5, help="with --family mix: share of MNI-template cases")
    ap.add_argument("--spacing-mm", type=float, default=DEMO_SPACING_MM[0],
                    help="isotropic network voxel (mm); the grid keeps the demo's field of view")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if not 2.0 <= args.spacing_mm <= 16.0:
        ap.error(f"--spacing-mm must lie in 2-16 mm, got {args.spacing_mm}")
    if not 0.0 <= args.mni_fraction <= 1.0:
        ap.error(f"--mni-fraction must lie in [0, 1], got {args.mni_fraction}")
    command = "python -m clinicalai.pet.train_demo " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="pet-demo-") as tmp:
        if args.family == "mix":
            csv_path = write_mixed_pet_dataset(Path(tmp) / "data", n=args.n, seed=args.seed,
                                               mni_fraction=args.mni_fraction)
        else:
            csv_path = write_pet_dataset(Path(tmp) / "data", n=args.n, seed=args.seed, balanced=True)
        cfg = TrainConfig(
            arch="cnn3d", arch_kwargs=dict(DEMO_ARCH_KWARGS), folds=args.folds, epochs=args.epochs, batch_size=4,
            lr=1e-3, weight_decay=0.0, augment=True, spacing_mm=(args.spacing_mm,) * 3,
            size_xyz=demo_size_xyz(args.spacing_mm), seed=args.seed,
            device="cpu", name="pet-cnn3d", synthetic_demo=True, command=command.strip(),
        )
        result = train_folds(csv_path, Path(tmp) / "run", cfg, progress=ConsoleProgress())
        args.out.mkdir(parents=True, exist_ok=True)
        for old in args.out.glob("pet-cnn3d-fold*"):
            old.unlink()
        for p in result.model_paths:
            shutil.copy2(p, args.out / p.name)
            _copy_card(p.with_suffix(".json"), args.out / p.with_suffix(".json").name, _data_entries(args))
        print((Path(tmp) / "run" / "metrics.json").read_text())
    print(f"out-of-fold AUC {result.metrics['auc']}; test AUC {result.test_metrics['auc'] if result.test_metrics else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
