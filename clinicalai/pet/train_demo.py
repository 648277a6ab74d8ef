"""Train the bundled PetRecurrence demo fold models on PET phantoms.

    python -m clinicalai.pet.train_demo            # -> Resources/Models/pet-cnn3d-fold{0,1,2}.pt/.json

Writes a labelled phantom data set (NIfTI in Bq/mL + CSV, :func:`write_pet_dataset`) into a
temporary folder, runs :func:`clinicalai.pet.train.train_folds` (3 folds of a narrow CNN3D at
8 mm, 32 x 32 x 21 voxels, without normalisation layers, augmentation or weight decay, lr 1e-3,
10 epochs, so that it trains in minutes on two CPU cores) and copies the fold
models with their cards into ``Resources/Models`` (the run's ``metrics.json`` is printed). The cards say: synthetic demo, not for clinical use.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from ..models import BUNDLED_MODELS_DIR
from ..progress import ConsoleProgress
from .preprocess import DEMO_SIZE_XYZ, DEMO_SPACING_MM

DEMO_ARCH_KWARGS = {"channels": [8, 16, 16, 16], "hidden": 32, "norm": "none", "dropout": 0.0}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..phantoms.pet import write_pet_dataset
    from .train import TrainConfig, train_folds

    ap = argparse.ArgumentParser(prog="python -m clinicalai.pet.train_demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=BUNDLED_MODELS_DIR)
    ap.add_argument("--n", type=int, default=60, help="number of phantoms (default 60, 20 %% held out as test)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    command = "python -m clinicalai.pet.train_demo " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="pet-demo-") as tmp:
        csv_path = write_pet_dataset(Path(tmp) / "data", n=args.n, seed=args.seed, balanced=True)
        cfg = TrainConfig(
            arch="cnn3d", arch_kwargs=dict(DEMO_ARCH_KWARGS), folds=args.folds, epochs=args.epochs, batch_size=4,
            lr=1e-3, weight_decay=0.0, augment=False, spacing_mm=DEMO_SPACING_MM, size_xyz=DEMO_SIZE_XYZ, seed=args.seed,
            device="cpu", name="pet-cnn3d", synthetic_demo=True, command=command.strip(),
        )
        result = train_folds(csv_path, Path(tmp) / "run", cfg, progress=ConsoleProgress(force=True))
        args.out.mkdir(parents=True, exist_ok=True)
        for old in args.out.glob("pet-cnn3d-fold*"):
            old.unlink()
        for p in result.model_paths:
            shutil.copy2(p, args.out / p.name)
            shutil.copy2(p.with_suffix(".json"), args.out / p.with_suffix(".json").name)
        print((Path(tmp) / "run" / "metrics.json").read_text())
    print(f"out-of-fold AUC {result.metrics['auc']}; test AUC {result.test_metrics['auc'] if result.test_metrics else None}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
