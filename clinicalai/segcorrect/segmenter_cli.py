"""``clinicalai train segmenter``: train a 2D cardiac segmenter on ACDC folders or phantoms.

Registered by ``clinicalai.segcorrect.commands`` through :func:`register_train_segmenter`;
``python -m clinicalai.segcorrect.segmenter_cli ...`` runs the same parser on its own.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from ..augment import PRESETS
from ..errors import ClinicalAIError, InputError
from ..models import check_model_output
from ..models.device import add_device_arg
from ..progress import ConsoleProgress
from . import ARCHITECTURES

# .segmenter is imported inside run_train_segmenter: the CLI registers this command at startup,
# and the segmenter module brings in scipy, MONAI transforms and the networks, which only
# training needs.

#: the second stage of the cardiac-unet recipe (both stages: the Makefile's models target and the
#: card's training.reproduce)
DEMO_COMMAND = (
    "clinicalai train segmenter --phantoms 48 --arch unet --channels 16,32,64,128,256 --epochs 80 "
    "--lr 0.002 --augmentation synth --keep-largest-component --threads 1 --init build/cardiac-unet-stage1.pt "
    "--seed 1 --average-from 41 --name cardiac-unet -o Resources/Models/cardiac-unet.pt"
)


def _channels(text: str) -> List[int]:
    try:
        ch = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--channels takes comma-separated integers, got {text!r}") from None
    if len(ch) < 2 or any(c < 1 for c in ch):
        raise argparse.ArgumentTypeError("--channels needs at least 2 positive integers, e.g. 16,32,64,128")
    return ch


def add_train_segmenter_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR", help="ACDC folder (patientNNN/Info.cfg, _frameXX.nii.gz and _gt)")
    src.add_argument("--phantoms", type=int, metavar="N", help="train on N synthetic cardiac phantoms (ED/ES alternating)")
    p.add_argument("--arch", choices=ARCHITECTURES, default="unet", help="MONAI network (default: unet)")
    p.add_argument("--epochs", type=int, default=100, help="maximum epochs (default: 100)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="model file to write (card beside it)")
    p.add_argument("--channels", type=_channels, default=None, help="features per level, e.g. 16,32,64,128")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of patients held out for validation")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time (best checkpoint kept)")
    p.add_argument("--no-augment", action="store_true", help="no MONAI augmentation")
    p.add_argument("--augmentation", choices=sorted(PRESETS), default="strong",
                   help="augmentation preset of clinicalai.augment (default: strong; synth: half the images drawn "
                        "from the label maps with random intensities, SynthSeg-like; parameters go in the card)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-largest-component", action="store_true",
                   help="the card asks segment to keep only the largest 3D component of each structure "
                        "(postprocessing.keep_largest_component; the card's validation uses it too)")
    p.add_argument("--name", default=None, help="model name in the card (default: cardiac-ARCH)")
    p.add_argument("--init", metavar="MODEL", default=None,
                   help="start from this segmenter's weights (same --arch / --channels): continue a run")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    p.add_argument("--average-from", type=int, default=None, metavar="EPOCH",
                   help="keep the average of the weights of epochs EPOCH..last (stochastic weight averaging, "
                        "batch-norm statistics recomputed) instead of the best validation epoch")
    add_device_arg(p, "cpu", "training device")


def run_train_segmenter(args: argparse.Namespace) -> int:
    from .segmenter import train_segmenter

    out = check_model_output(args.output)
    if args.epochs < 1:
        raise InputError("--epochs must be at least 1")
    if args.average_from is not None and not 1 <= args.average_from <= args.epochs:
        raise InputError(f"--average-from must be an epoch between 1 and --epochs ({args.epochs}), got {args.average_from}")
    if args.phantoms is not None and args.phantoms < 2:
        raise InputError("--phantoms needs at least 2 cases (one is held out for validation)")
    if args.data is not None and not Path(args.data).is_dir():
        raise InputError(f"{args.data}: no such folder")
    command = args.command_line
    result = train_segmenter(
        args.data if args.data is not None else args.phantoms,
        arch=args.arch,
        epochs=args.epochs,
        out_path=out,
        channels=args.channels,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        augment=not args.no_augment,
        augmentation=args.augmentation,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
        device=args.device,
        name=args.name,
        command=command,
        progress=ConsoleProgress(),
        keep_largest=args.keep_largest_component,
        threads=args.threads,
        init_from=args.init,
        average_from=args.average_from,
    )
    dice = result.card["validation"]["dice"]
    print(
        f"wrote {out} ({args.arch}, {len(result.history)} epochs in {result.seconds:.0f} s); "
        f"held-out Dice (segment_volume, input grid) RV {dice['RV']:.3f} MYO {dice['MYO']:.3f} "
        f"LV {dice['LV']:.3f} mean {dice['mean']:.3f}"
    )
    return 0


def register_train_segmenter(commands) -> argparse.ArgumentParser:
    """Add ``clinicalai train segmenter`` to ``commands.train``; returns its parser."""
    p = commands.train.add_parser(
        "segmenter",
        help="train a 2D cardiac segmenter (UNet, ResUNet, Attention UNet, SwinUNETR)",
        description="Train a MONAI 2D segmenter (RV / MYO / LV) on ACDC data or synthetic phantoms; "
        "Adam, Dice+CE loss, best checkpoint by validation Dice (or the average of the last epochs: --average-from). Example: " + DEMO_COMMAND,
    )
    add_train_segmenter_arguments(p)
    p.set_defaults(func=run_train_segmenter)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry (``python -m clinicalai.segcorrect.segmenter_cli``), errors as one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="clinicalai train segmenter")
    add_train_segmenter_arguments(parser)
    args = parser.parse_args(argv)
    args.command_line = "clinicalai train segmenter " + shlex.join(argv)
    try:
        return run_train_segmenter(args)
    except ClinicalAIError as exc:
        print(f"clinicalai: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
